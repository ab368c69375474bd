//! Retention of `processed_events`: a row is deleted once its `processed_at` is older than the
//! stream's max age (`platform::Settings::stream`, 7 d). The row exists to make a redelivery of its
//! event change nothing, and the stream no longer holds, so can no longer redeliver, an event
//! published before then (it was published before it was processed). Without this the table
//! would grow with every event ever applied.
//!
//! A rebuild (`replay-tool rebuild`) gives every event of the store a row again, with a fresh
//! `processed_at`; those rows are pruned once they are as old. Counting `processed_events` against
//! the store (`replay-tool status`, the tests' end checks) therefore holds for the events of the
//! last max age only.
//!
//! One projection-service instance sweeps at a time: the holder of advisory lock
//! [`RETENTION_LOCK`] (see `platform::retention` for the election, the chunking and the metrics),
//! on the cross-tenant pool. It deletes by `processed_at`, through its index.

use std::time::{Duration, Instant};

use platform::retention::{cutoff, sweep_table, Elected, Sweep, Swept, CHUNK_ROWS};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::ProjectionConfig;

/// The advisory lock of projection-service's retention sweeper ("retproj" in ASCII); the other
/// keys in use are listed at `command_service::retention::RETENTION_LOCK`.
pub const RETENTION_LOCK: i64 = 0x0072_6574_7072_6f6a;

/// The sweep of `processed_events` rows older than `retention`.
#[derive(Debug, Clone)]
pub struct RetentionSweep {
    /// The stream's max age.
    pub retention: Duration,
    /// Rows per delete statement ([`CHUNK_ROWS`]).
    pub chunk_rows: i64,
}

impl RetentionSweep {
    pub async fn sweep_processed_events(
        &self,
        conn: &mut PgConnection,
        shutdown: &CancellationToken,
    ) -> sqlx::Result<Swept> {
        let started = Instant::now();
        let cutoff = cutoff(conn, self.retention).await?;
        sweep_table(
            conn,
            "processed_events",
            started,
            self.chunk_rows,
            shutdown,
            || {
                sqlx::query!(
                    "delete from processed_events where ctid = any(array(\
                       select ctid from processed_events where processed_at < $1 order by processed_at limit $2))",
                    cutoff,
                    self.chunk_rows,
                )
            },
            async |conn| {
                sqlx::query_scalar!(
                    "select extract(epoch from (now() at time zone 'utc') - min(processed_at))::float8 \
                       from processed_events"
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
        Ok(vec![self.sweep_processed_events(conn, shutdown).await?])
    }
}

/// The sweeper as `config` sets it, on the cross-tenant pool.
pub fn elected(config: &ProjectionConfig, system_pool: PgPool) -> Elected<RetentionSweep> {
    Elected {
        name: "projection-service",
        pool: system_pool,
        lock: RETENTION_LOCK,
        interval: config.retention_interval,
        sweep: RetentionSweep {
            retention: config.platform.stream().max_age,
            chunk_rows: CHUNK_ROWS,
        },
    }
}
