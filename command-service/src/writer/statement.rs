//! The common group in one statement: events of one tenant and nothing else to store go in one
//! autocommit statement ([`EventStore::append_in_tenant`]) instead of a transaction.

use std::collections::HashSet;

use platform::event_store::{EventStore, NewEvent, StoreError};
use sqlx::PgPool;
use uuid::Uuid;

use super::Write;

/// Writes that can be stored in one autocommit statement ([`EventStore::append_in_tenant`]): one
/// round trip where a transaction takes three or four. They are the common case: events of one
/// tenant, nothing but the streams they read to check, and nothing else to store (no new data
/// key, snapshot, erasure or idempotency record, which go in a transaction).
pub(super) struct OneStatement<'a> {
    tenant_id: &'a str,
    events: Vec<&'a NewEvent>,
    read_only: Vec<(Uuid, i64)>,
}

impl<'a> OneStatement<'a> {
    pub(super) fn of(writes: &[&'a Write]) -> Option<Self> {
        let tenant_id = writes.first()?.tenant_id.as_str();
        let simple = writes.iter().all(|w| {
            w.tenant_id == tenant_id
                && w.new_key.is_none()
                && w.snapshots.is_empty()
                && !w.forget
                && w.idempotency.is_none()
        });
        let read_only: Vec<(Uuid, i64)> = writes
            .iter()
            .flat_map(|w| w.read_only.iter().copied())
            .collect();
        // The statement checks the streams read as they were before it: one that a write of the
        // group appends to must be checked after that append, in a transaction.
        let appended: HashSet<Uuid> = writes
            .iter()
            .flat_map(|w| w.events.iter().map(|e| e.aggregate_id))
            .collect();
        if !simple || read_only.iter().any(|(id, _)| appended.contains(id)) {
            return None;
        }
        let events = writes.iter().flat_map(|w| &w.events).collect();
        Some(Self {
            tenant_id,
            events,
            read_only,
        })
    }

    pub(super) async fn store(self, pool: &PgPool) -> Result<(), StoreError> {
        let mut conn = pool.acquire().await?;
        EventStore::append_in_tenant(&mut conn, self.tenant_id, &self.events, &self.read_only)
            .await?;
        metrics::counter!("command_group_commits_total", "way" => "statement").increment(1);
        Ok(())
    }
}

/// Whether a statement that failed certainly took no effect: the server answered an error, or it
/// was never sent. A connection lost while it ran leaves its outcome unknown.
pub(super) fn took_no_effect(error: &StoreError) -> bool {
    match error {
        StoreError::Database(e) => matches!(
            e,
            sqlx::Error::Database(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
        ),
        _ => true,
    }
}
