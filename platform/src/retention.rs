//! Retention: rows that have outlived their use are deleted, a bounded chunk at a time, by one
//! instance at a time.
//!
//! What each table keeps, and the SQL that deletes from it, lives with the service that owns the
//! table (`command-service::retention`: published outbox rows and idempotency keys;
//! `projection-service::retention`: `processed_events`). This module holds what they share: the
//! retention periods (which `replay-tool status` reads too), the leader election, the chunk
//! loop and the metrics.
//!
//! * **One sweeper at a time.** An [`Elected`] sweeper works only while it holds a PostgreSQL
//!   session advisory lock, taken on a connection of its own that it also does all its deleting
//!   on: losing the connection loses the lock and stops the work with it, and the lock is free
//!   for the next instance at once. The instances that do not hold it ask again every interval.
//!   Each service's sweeper has its own key (documented where it is defined, and in the README).
//! * **Bounded statements.** A sweep never runs one large `delete`: each statement deletes at
//!   most [`CHUNK_ROWS`] rows, picked by `ctid` through an ordered, limited subselect, and the
//!   sweep goes on until a statement deletes fewer than that. Every statement is its own
//!   transaction, so locks and the WAL of one stay small, and a shutdown stops between two.
//! * **The database's clock.** The cutoff is `now() - retention` taken from PostgreSQL, the clock
//!   that wrote the timestamps being compared, never the service's own.
//!
//! Metrics, each labelled `table`: `retention_rows_deleted_total`, `retention_sweep_seconds`
//! (a histogram, one sample per table per sweep) and `retention_oldest_age_seconds` (the age of
//! the oldest row that retention governs, after the sweep; 0 for none); and
//! `retention_sweep_failures_total{sweeper}`: sweeps that failed (the sweeper then gives up the
//! lock and stands for election again).

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio_util::sync::CancellationToken;

/// The most rows one delete statement removes.
pub const CHUNK_ROWS: i64 = 5_000;

/// How long rows are kept: the periods of the tables command-service sweeps. (`processed_events`
/// is kept for the stream's max age, [`crate::nats::StreamSettings::max_age`]: no longer could
/// the stream redeliver one of its events.) `replay-tool status` reads the same settings.
#[derive(Debug, Clone, clap::Args)]
pub struct RetentionPeriods {
    /// How long a published outbox row (`status = 'processed'`) is kept after its publication,
    /// e.g. `7d`, `36h`. Pending and failed rows are never deleted.
    #[arg(long, env = "OUTBOX_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub outbox_retention: Duration,
    /// How long an `Idempotency-Key` is remembered: a retry within it gets the first answer; after
    /// it, the key is forgotten and the request runs again. E.g. `24h`.
    #[arg(long, env = "IDEMPOTENCY_TTL", default_value = "24h", value_parser = parse_duration)]
    pub idempotency_ttl: Duration,
}

impl Default for RetentionPeriods {
    fn default() -> Self {
        crate::defaults::defaults()
    }
}

/// A duration as a person writes it (`7d`, `24h`, `90s`, `1h 30m`, `200ms`); zero is refused.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(raw.trim()).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(duration)
}

/// A duration the way [`parse_duration`] reads it (`7days`, `1h 30m`).
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// What one sweep did to one table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Swept {
    /// The table swept: the `table` label of its metrics.
    pub table: &'static str,
    /// Rows deleted.
    pub deleted: u64,
    /// Delete statements run (the last one deleted fewer than the chunk size).
    pub statements: u32,
    /// The age of the oldest row retention governs, after the sweep (0: none).
    pub oldest_age_seconds: f64,
}

/// The work of a sweeper's turn, done on the connection that holds the lock.
pub trait Sweep: Send + Sync {
    /// Deletes what is past its retention on `conn` (the connection that holds the lock), a
    /// bounded chunk per statement, stopping between statements once `shutdown` is cancelled;
    /// what it did, table by table.
    fn sweep(
        &self,
        conn: &mut PgConnection,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = anyhow::Result<Vec<Swept>>> + Send;
}

/// A [`Sweep`] run every `interval` by whichever instance holds advisory lock `lock`.
pub struct Elected<S> {
    /// For the logs: which sweeper this is.
    pub name: &'static str,
    /// The pool one connection is taken from, and detached, to hold the lock and do every
    /// delete: the services give their cross-tenant pool.
    pub pool: PgPool,
    /// The key of the session advisory lock that keeps this sweeper to one instance at a time;
    /// each service's sweeper has its own.
    pub lock: i64,
    /// The pause between two sweeps, and between two asks for the lock.
    pub interval: Duration,
    /// The work of each turn.
    pub sweep: S,
}

impl<S: Sweep> Elected<S> {
    /// Sweeps while elected, until `shutdown`; a failure (a lost connection, a failed statement)
    /// gives the lock up and the sweeper stands for election again after a pause.
    pub async fn run(self, shutdown: CancellationToken) {
        let name = self.name;
        crate::shutdown::retry_until_stopped(
            &shutdown,
            self.interval.max(Duration::from_secs(5)),
            || self.lead(&shutdown),
            |e| {
                metrics::counter!("retention_sweep_failures_total", "sweeper" => name).increment(1);
                tracing::warn!(sweeper = name, error = %e, "retention sweep failed; standing for election again");
            },
        )
        .await;
    }

    async fn lead(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        // Detached: the lock lives and dies with this connection, never handed to another task.
        let mut conn = self.pool.acquire().await?.detach();
        let result = self.lead_on(&mut conn, shutdown).await;
        // Closing the connection releases the lock for the next instance.
        let _ = conn.close().await;
        result
    }

    async fn lead_on(
        &self,
        conn: &mut PgConnection,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            let leader = crate::db::try_advisory_lock(&mut *conn, self.lock).await?;
            if leader {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
        tracing::info!(sweeper = self.name, "retention sweeper elected");
        loop {
            for swept in self.sweep.sweep(conn, shutdown).await? {
                if swept.deleted > 0 {
                    tracing::info!(
                        sweeper = self.name,
                        table = swept.table,
                        deleted = swept.deleted,
                        statements = swept.statements,
                        "deleted rows past their retention"
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }
}

/// `now() - retention` on the database's clock, as the UTC `timestamp` the tables hold.
pub async fn cutoff(conn: &mut PgConnection, retention: Duration) -> sqlx::Result<NaiveDateTime> {
    sqlx::query_scalar!(
        r#"select (now() at time zone 'utc') - make_interval(secs => $1) as "cutoff!""#,
        retention.as_secs_f64(),
    )
    .fetch_one(conn)
    .await
}

/// One table's sweep, begun at `started` (its cutoff, and whatever bound the statements need,
/// taken since): runs `chunk` (a delete of at most `chunk_rows` rows) until it deletes fewer
/// than that or `shutdown` is cancelled, then reads the oldest remaining age with `oldest` (a
/// statement answering one nullable `float8`: seconds). Records the table's metrics.
pub async fn sweep_table<'q>(
    conn: &mut PgConnection,
    table: &'static str,
    started: Instant,
    chunk_rows: i64,
    shutdown: &CancellationToken,
    chunk: impl Fn() -> Query<'q, Postgres, PgArguments>,
    oldest: impl AsyncFnOnce(&mut PgConnection) -> sqlx::Result<Option<f64>>,
) -> sqlx::Result<Swept> {
    let swept = delete_in_chunks(conn, table, chunk_rows, shutdown, chunk, oldest).await?;
    metrics::histogram!("retention_sweep_seconds", "table" => table)
        .record(started.elapsed().as_secs_f64());
    metrics::gauge!("retention_oldest_age_seconds", "table" => table).set(swept.oldest_age_seconds);
    Ok(swept)
}

async fn delete_in_chunks<'q>(
    conn: &mut PgConnection,
    table: &'static str,
    chunk_rows: i64,
    shutdown: &CancellationToken,
    chunk: impl Fn() -> Query<'q, Postgres, PgArguments>,
    oldest: impl AsyncFnOnce(&mut PgConnection) -> sqlx::Result<Option<f64>>,
) -> sqlx::Result<Swept> {
    let (mut deleted, mut statements) = (0, 0);
    loop {
        let n = chunk().execute(&mut *conn).await?.rows_affected();
        statements += 1;
        deleted += n;
        metrics::counter!("retention_rows_deleted_total", "table" => table).increment(n);
        if n < chunk_rows as u64 || shutdown.is_cancelled() {
            break;
        }
    }
    let oldest_age_seconds = oldest(&mut *conn).await?;
    Ok(Swept {
        table,
        deleted,
        statements,
        oldest_age_seconds: oldest_age_seconds.unwrap_or(0.0).max(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        periods: RetentionPeriods,
    }

    #[test]
    fn periods_read_as_a_person_writes_them_and_default_to_a_week_and_a_day() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(
            (cli.periods.outbox_retention, cli.periods.idempotency_ttl),
            (
                RetentionPeriods::default().outbox_retention,
                RetentionPeriods::default().idempotency_ttl
            )
        );
        assert_eq!(
            (
                RetentionPeriods::default().outbox_retention,
                RetentionPeriods::default().idempotency_ttl
            ),
            (Duration::from_secs(604_800), Duration::from_secs(86_400))
        );
        let cli = Cli::try_parse_from([
            "x",
            "--outbox-retention",
            "90s",
            "--idempotency-ttl",
            "1h 30m",
        ])
        .unwrap();
        assert_eq!(cli.periods.outbox_retention, Duration::from_secs(90));
        assert_eq!(cli.periods.idempotency_ttl, Duration::from_secs(5_400));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("seven days").is_err());
        assert!(Cli::try_parse_from(["x", "--outbox-retention", "7"]).is_err());
        assert_eq!(
            parse_duration(&format_duration(Duration::from_secs(604_800))),
            Ok(Duration::from_secs(604_800))
        );
    }
}
