//! Retention of command-service's own tables: published outbox rows older than
//! `OUTBOX_RETENTION` (7 d) and idempotency keys older than `IDEMPOTENCY_TTL` (24 h) are deleted.
//! The outbox is a queue, not a history (the event store is that); an idempotency key is a
//! promise about retries, and keeps the request's answer, so it must not outlive the promise.
//! The relay deletes the rows it publishes; the published rows this sweep finds are those an
//! earlier release marked `processed` instead, left for it to take in bounded statements rather
//! than in one migration.
//!
//! One command-service instance sweeps at a time: the holder of advisory lock
//! [`RETENTION_LOCK`] (see `platform::retention` for the election, the chunking and the
//! metrics). The sweep runs as the cross-tenant role (`DATABASE_SYSTEM_ROLE`): both tables are
//! under row-level security, which would show the request paths' role no row without a tenant.
//!
//! * `outbox_events`: only rows with `status = 'processed'` whose `processed_at` is past the
//!   cutoff. Pending and failed rows are never deleted, however old. The table has no index on
//!   `processed_at` (one more index for the relay's `UPDATE` to maintain on every publication),
//!   so the sweep walks `seq`, the insertion order, which the relay publishes in: it stops at the
//!   first row created after the cutoff (`created_at <= processed_at`, so nothing from there on
//!   is old enough, give or take rows of transactions that inserted late; those go in a later
//!   sweep). A sweep thus reads the old rows and little else.
//! * `idempotency_keys`: by `created_at`, through its index (migration 0005).

use std::time::{Duration, Instant};

use platform::retention::{cutoff, sweep_table, Elected, Sweep, Swept, CHUNK_ROWS};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::CommandConfig;

/// The advisory lock of command-service's retention sweeper ("retcmd" in ASCII). Other keys in
/// use: the outbox relay's "outbox" and "outidle" (`relay`), projection-service's retention
/// "retproj", and the partition leases (two-key locks, a space of their own).
pub const RETENTION_LOCK: i64 = 0x7265_7463_6d64;

/// The sweep of published outbox rows and expired idempotency keys.
#[derive(Debug, Clone)]
pub struct RetentionSweep {
    pub outbox_retention: Duration,
    pub idempotency_ttl: Duration,
    /// Rows per delete statement ([`CHUNK_ROWS`]).
    pub chunk_rows: i64,
}

impl RetentionSweep {
    /// Deletes the published outbox rows past their retention.
    pub async fn sweep_outbox(
        &self,
        conn: &mut PgConnection,
        shutdown: &CancellationToken,
    ) -> sqlx::Result<Swept> {
        let started = Instant::now();
        let cutoff = cutoff(conn, self.outbox_retention).await?;
        // The first outbox row, in insertion order, created at or after the cutoff: nothing from
        // it on was published before the cutoff.
        let young_from = sqlx::query_scalar!(
            "select seq from outbox_events where created_at >= $1 order by seq limit 1",
            cutoff,
        )
        .fetch_optional(&mut *conn)
        .await?;
        let young_from = young_from.unwrap_or(i64::MAX);
        sweep_table(
            conn,
            "outbox_events",
            started,
            self.chunk_rows,
            shutdown,
            // At most a chunk of rows published before the cutoff, below `young_from`, oldest
            // first.
            || {
                sqlx::query!(
                    "delete from outbox_events where ctid = any(array(\
                       select ctid from outbox_events \
                        where seq < $3 and status = 'processed' and processed_at < $1 \
                        order by seq limit $2))",
                    cutoff,
                    self.chunk_rows,
                    young_from,
                )
            },
            // The age of the oldest published row (the first in insertion order: the relay
            // publishes in it); null when there is none (a scalar subquery: one row either way).
            async |conn| {
                sqlx::query_scalar!(
                    "select (select extract(epoch from (now() at time zone 'utc') - processed_at)::float8 \
                               from outbox_events where status = 'processed' order by seq limit 1)"
                )
                .fetch_one(conn)
                .await
            },
        )
        .await
    }

    /// Deletes the idempotency keys past their time to live.
    pub async fn sweep_idempotency_keys(
        &self,
        conn: &mut PgConnection,
        shutdown: &CancellationToken,
    ) -> sqlx::Result<Swept> {
        let started = Instant::now();
        let cutoff = cutoff(conn, self.idempotency_ttl).await?;
        sweep_table(
            conn,
            "idempotency_keys",
            started,
            self.chunk_rows,
            shutdown,
            || {
                sqlx::query!(
                    "delete from idempotency_keys where ctid = any(array(\
                       select ctid from idempotency_keys where created_at < $1 order by created_at limit $2))",
                    cutoff,
                    self.chunk_rows,
                )
            },
            async |conn| {
                sqlx::query_scalar!(
                    "select extract(epoch from (now() at time zone 'utc') - min(created_at))::float8 \
                       from idempotency_keys"
                )
                .fetch_one(conn)
                .await
            },
        )
        .await
    }
}

impl Sweep for RetentionSweep {
    async fn sweep(
        &self,
        conn: &mut PgConnection,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Vec<Swept>> {
        let outbox = self.sweep_outbox(conn, shutdown).await?;
        let idempotency = self.sweep_idempotency_keys(conn, shutdown).await?;
        Ok(vec![outbox, idempotency])
    }
}

/// The sweeper as `config` sets it, on the cross-tenant pool.
pub fn elected(config: &CommandConfig, system_pool: PgPool) -> Elected<RetentionSweep> {
    Elected {
        name: "command-service",
        pool: system_pool,
        lock: RETENTION_LOCK,
        interval: config.retention_interval,
        sweep: RetentionSweep {
            outbox_retention: config.retention.outbox_retention,
            idempotency_ttl: config.retention.idempotency_ttl,
            chunk_rows: CHUNK_ROWS,
        },
    }
}
