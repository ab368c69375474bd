//! `replay-tool status`: where every consumer and projection stands, and what the retention
//! sweepers hold of the tables they prune.

use std::time::Duration;

use platform::event_store::EventStore;
use platform::nats::StreamSettings;
use platform::retention::{format_duration, RetentionPeriods};
use projection_service::projections::{covers_sql, Projection};
use serde::Serialize;
use sqlx::PgPool;

/// A partition consumer as the broker reports it (`projection_service::pipeline`, the same the
/// console shows), and the events parked for it.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerStatus {
    #[serde(flatten)]
    pub broker: projection_service::pipeline::ConsumerStatus,
    /// Events parked in dead_letter_events.
    pub parked: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    pub projection: &'static str,
    pub rows: i64,
    /// Events this projection has taken care of, as `processed_events` still holds them (rows
    /// older than the stream's max age are pruned).
    pub processed: i64,
    /// Events stored within the stream's max age that it has not taken care of yet. (Older ones
    /// may have had their `processed_events` rows pruned; the stream no longer holds them.)
    pub behind: i64,
}

/// A table the retention sweepers prune, as it stands.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionStatus {
    pub table: &'static str,
    /// What the rows are kept by (`outbox_events`: published rows only).
    pub kept_by: &'static str,
    /// How long they are kept (the setting this status assumes), in seconds...
    pub retention_seconds: f64,
    /// ...and as the setting is written (`7days`).
    pub retention: String,
    /// Rows held (all of them, whatever their age or status).
    pub rows: i64,
    /// The age of the oldest row retention governs (0: none).
    pub oldest_seconds: f64,
    /// Rows past their retention: what the next sweep deletes.
    pub past_retention: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub events_in_store: i64,
    pub outbox_pending: i64,
    pub outbox_oldest_pending_seconds: f64,
    pub consumers: Vec<ConsumerStatus>,
    pub projections: Vec<ProjectionStatus>,
    pub retention: Vec<RetentionStatus>,
}

/// `outbox_events` and `idempotency_keys` kept for what `periods` say, `processed_events` for the
/// stream's max age. (The sweepers' own SQL is in `command_service::retention` and
/// `projection_service::retention`.)
pub async fn retention(
    pool: &PgPool,
    stream: &StreamSettings,
    periods: &RetentionPeriods,
) -> anyhow::Result<Vec<RetentionStatus>> {
    // Table, the timestamp retention goes by, the rows it may delete, and for how long it keeps them.
    let retained: [(&str, &str, &str, &str, Duration); 3] = [
        (
            "outbox_events",
            "processed_at",
            "status = 'processed'",
            "processed_at of published rows",
            periods.outbox_retention,
        ),
        (
            "idempotency_keys",
            "created_at",
            "true",
            "created_at",
            periods.idempotency_ttl,
        ),
        (
            "processed_events",
            "processed_at",
            "true",
            "processed_at",
            stream.max_age,
        ),
    ];
    let mut tables = Vec::new();
    for (table, column, governed, kept_by, kept) in retained {
        let (rows, oldest, past): (i64, Option<f64>, i64) = sqlx::query_as(&format!(
            "select count(*), \
                    extract(epoch from (now() at time zone 'utc') - min({column}) filter (where {governed}))::float8, \
                    count(*) filter (where {governed} and {column} < (now() at time zone 'utc') - make_interval(secs => $1)) \
               from {table}"
        ))
        .bind(kept.as_secs_f64())
        .fetch_one(pool)
        .await?;
        tables.push(RetentionStatus {
            table,
            kept_by,
            retention_seconds: kept.as_secs_f64(),
            retention: format_duration(kept),
            rows,
            oldest_seconds: oldest.unwrap_or(0.0).max(0.0),
            past_retention: past,
        });
    }
    Ok(tables)
}

pub async fn status(
    pool: &PgPool,
    nats: &async_nats::Client,
    stream: &StreamSettings,
    periods: &RetentionPeriods,
) -> anyhow::Result<Status> {
    let events_in_store = EventStore::count_upto(pool, None, None).await?;
    let (outbox_pending, outbox_oldest_pending_seconds) =
        platform::event_store::outbox_backlog(pool).await?;
    let parked = projection_service::dead_letters::counts(pool).await?;
    let consumers = projection_service::pipeline::consumers(nats, stream)
        .await?
        .into_iter()
        .map(|broker| ConsumerStatus {
            parked: parked
                .iter()
                .find(|(c, _)| *c == broker.consumer)
                .map_or(0, |(_, n)| *n),
            broker,
        })
        .collect();
    let mut projections = Vec::new();
    for p in Projection::ALL {
        let rows: i64 = sqlx::query_scalar(&format!("select count(*) from {}", p.table()))
            .fetch_one(pool)
            .await?;
        let processed: i64 = sqlx::query_scalar(&format!(
            "select count(*) from processed_events p where {}",
            covers_sql("p", "$1::text")
        ))
        .bind(p.name())
        .fetch_one(pool)
        .await?;
        let behind: i64 = sqlx::query_scalar(&format!(
            "select count(*) from contact_event_store e \
              where e.created_at >= (now() at time zone 'utc') - make_interval(secs => $2) \
                and not exists (select 1 from processed_events p where p.event_id = e.id and {})",
            covers_sql("p", "$1::text")
        ))
        .bind(p.name())
        .bind(stream.max_age.as_secs_f64())
        .fetch_one(pool)
        .await?;
        projections.push(ProjectionStatus {
            projection: p.name(),
            rows,
            processed,
            behind,
        });
    }
    Ok(Status {
        events_in_store,
        outbox_pending,
        outbox_oldest_pending_seconds,
        consumers,
        projections,
        retention: retention(pool, stream, periods).await?,
    })
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "events in the store: {}", self.events_in_store)?;
        writeln!(
            f,
            "outbox: {} pending, oldest {:.1}s",
            self.outbox_pending, self.outbox_oldest_pending_seconds
        )?;
        writeln!(
            f,
            "\n{:<18} {:>14} {:>9} {:>8} {:>11} {:>7}",
            "consumer", "acked through", "pending", "unacked", "redelivered", "parked"
        )?;
        for c in &self.consumers {
            writeln!(
                f,
                "{:<18} {:>14} {:>9} {:>8} {:>11} {:>7}",
                c.broker.consumer,
                c.broker.acked_through,
                c.broker.pending,
                c.broker.unacked,
                c.broker.redelivered,
                c.parked
            )?;
        }
        writeln!(
            f,
            "\n{:<18} {:>10} {:>10} {:>8}",
            "projection", "rows", "processed", "behind"
        )?;
        for p in &self.projections {
            writeln!(
                f,
                "{:<18} {:>10} {:>10} {:>8}",
                p.projection, p.rows, p.processed, p.behind
            )?;
        }
        writeln!(
            f,
            "\n{:<18} {:>10} {:>10} {:>12} {:>14}",
            "retention", "kept for", "rows", "oldest", "past retention"
        )?;
        for r in &self.retention {
            writeln!(
                f,
                "{:<18} {:>10} {:>10} {:>12} {:>14}",
                r.table,
                r.retention,
                r.rows,
                format!("{:.1}s", r.oldest_seconds),
                r.past_retention
            )?;
        }
        Ok(())
    }
}
