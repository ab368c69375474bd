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

/// A snapshot stored in the clear, as a release before sealing wrote it (what
/// `replay-tool encrypt-history` seals).
#[derive(Debug)]
pub struct PlainSnapshot {
    /// The snapshot row's id.
    pub id: Uuid,
    /// The aggregate it is a state of.
    pub aggregate_id: Uuid,
    /// The state, in the clear.
    pub snapshot_data: Value,
    /// The last event folded into it.
    pub last_sequence_number: i64,
    /// The tenant it belongs to.
    pub tenant_id: String,
}

impl EventStore {
    /// How many snapshots are still stored in the clear.
    pub async fn plain_snapshots_left(executor: impl PgExecutor<'_>) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar!(
            r#"select count(*) as "count!" from contact_snapshots where not (snapshot_data ? 'sealed')"#,
        )
        .fetch_one(executor)
        .await?)
    }

    /// Up to `limit` snapshots stored in the clear.
    pub async fn plain_snapshots(
        executor: impl PgExecutor<'_>,
        limit: i64,
    ) -> Result<Vec<PlainSnapshot>, StoreError> {
        Ok(sqlx::query_as!(
            PlainSnapshot,
            r#"select id, aggregate_id, snapshot_data, last_sequence_number, tenant_id::text as "tenant_id!"
                 from contact_snapshots where not (snapshot_data ? 'sealed') limit $1"#,
            limit,
        )
        .fetch_all(executor)
        .await?)
    }

    /// Replaces a snapshot's stored state (sealing one stored in the clear; the tests, the other
    /// way round, to make a store as an earlier release left it).
    pub async fn replace_snapshot(
        executor: impl PgExecutor<'_>,
        id: Uuid,
        data: Value,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "update contact_snapshots set snapshot_data = $2 where id = $1",
            id,
            data,
        )
        .execute(executor)
        .await?;
        Ok(())
    }

    /// Deletes one snapshot: a load folds from the one before it, or from the start.
    pub async fn delete_snapshot(
        executor: impl PgExecutor<'_>,
        id: Uuid,
    ) -> Result<(), StoreError> {
        sqlx::query!("delete from contact_snapshots where id = $1", id)
            .execute(executor)
            .await?;
        Ok(())
    }

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

    /// The newest snapshot of an aggregate of this tenant at or below `version`.
    pub async fn snapshot_at_or_below(
        &self,
        executor: impl PgExecutor<'_>,
        tenant_id: &str,
        aggregate_id: Uuid,
        version: i64,
    ) -> Result<Option<SnapshotRow>, StoreError> {
        Ok(sqlx::query_as!(
            SnapshotRow,
            "select snapshot_data, last_sequence_number from contact_snapshots \
              where aggregate_id = $1 and tenant_id = $2 and last_sequence_number <= $3 \
              order by last_sequence_number desc limit 1",
            aggregate_id,
            tenant_id,
            version,
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
