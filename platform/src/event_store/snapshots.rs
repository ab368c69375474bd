//! `contact_snapshots`: every SQL statement on it.

use serde_json::Value;
use sqlx::{PgExecutor, Postgres, Transaction};
use uuid::Uuid;

use super::{EventStore, StoreError};

/// The latest snapshot of an aggregate.
#[derive(Debug)]
pub struct SnapshotRow {
    /// The aggregate's state: sealed with its contact's key, or in the clear where
    /// `encrypt-history` has not sealed it yet (see [`crate::personal::StoredSnapshot`]).
    pub snapshot_data: Value,
    /// The last event folded into it: a load reads its stream's events after this one.
    pub last_sequence_number: i64,
}

impl EventStore {
    /// The latest snapshot of an aggregate in this tenant, if any.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant_id, aggregate_id = %aggregate_id), err(level = "debug"))]
    pub async fn latest_snapshot(
        &self,
        executor: impl PgExecutor<'_>,
        tenant_id: &str,
        aggregate_id: Uuid,
    ) -> Result<Option<SnapshotRow>, StoreError> {
        Ok(sqlx::query_as!(
            SnapshotRow,
            "select snapshot_data, last_sequence_number from contact_snapshots \
              where aggregate_id = $1 and tenant_id = $2 \
              order by last_sequence_number desc limit 1",
            aggregate_id,
            tenant_id,
        )
        .fetch_optional(executor)
        .await?)
    }

    /// Deletes the snapshots of a contact and of its sessions (forgetting it: sealed with a key
    /// that is being destroyed, they could never be read again).
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant_id, contact_id = %contact_id), err(level = "debug"))]
    pub async fn delete_contact_snapshots(
        tx: &mut Transaction<'_, Postgres>,
        tenant_id: &str,
        contact_id: Uuid,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "delete from contact_snapshots s \
              where s.tenant_id = $1 \
                and (s.aggregate_id = $2 \
                     or s.aggregate_id in (select e.aggregate_id from contact_event_store e \
                                            where e.tenant_id = $1 and e.aggregate_type = 'session' \
                                              and e.metadata->>'contact_id' = $2::text))",
            tenant_id,
            contact_id,
        )
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Writes a snapshot of an aggregate at `last_sequence_number` (idempotent).
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant_id, aggregate_id = %aggregate_id), err(level = "debug"))]
    pub async fn save_snapshot(
        tx: &mut Transaction<'_, Postgres>,
        tenant_id: &str,
        aggregate_id: Uuid,
        last_sequence_number: i64,
        data: Value,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "insert into contact_snapshots (aggregate_id, snapshot_data, last_sequence_number, tenant_id) \
             values ($1, $2, $3, $4) on conflict (aggregate_id, last_sequence_number) do nothing",
            aggregate_id,
            data,
            last_sequence_number,
            tenant_id,
        )
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
