//! `replay-tool status`: where every consumer and projection stands.

use platform::nats::StreamSettings;
use projection_service::projections::{covers_sql, Projection};
use serde::Serialize;
use sqlx::PgPool;

#[derive(Debug, Clone, Serialize)]
pub struct ConsumerStatus {
    pub consumer: String,
    /// The stream sequence below which every message is acknowledged.
    pub acked_through: u64,
    /// Messages not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub unacked: usize,
    pub redelivered: usize,
    /// Events parked in dead_letter_events.
    pub parked: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    pub projection: &'static str,
    pub rows: i64,
    /// Events this projection has taken care of (`processed_events`).
    pub processed: i64,
    /// Events in the store it has not taken care of yet.
    pub behind: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub events_in_store: i64,
    pub outbox_pending: i64,
    pub outbox_oldest_pending_seconds: f64,
    pub consumers: Vec<ConsumerStatus>,
    pub projections: Vec<ProjectionStatus>,
}

pub async fn status(
    pool: &PgPool,
    nats: &async_nats::Client,
    stream: &StreamSettings,
) -> anyhow::Result<Status> {
    let events_in_store: i64 = sqlx::query_scalar("select count(*) from contact_event_store")
        .fetch_one(pool)
        .await?;
    let (outbox_pending, outbox_oldest_pending_seconds): (i64, f64) = sqlx::query_as(
        "select count(*), coalesce(extract(epoch from (now() at time zone 'utc') - min(created_at)), 0)::float8 \
           from outbox_events where status in ('pending', 'processing')",
    )
    .fetch_one(pool)
    .await?;
    let parked = projection_service::dead_letters::counts(pool).await?;
    let js = async_nats::jetstream::new(nats.clone());
    let jet = js.get_stream(&stream.name).await?;
    let mut consumers = Vec::new();
    for partition in 0..stream.partitions {
        let name = format!("projections-p{partition}");
        let parked = parked
            .iter()
            .find(|(c, _)| *c == name)
            .map_or(0, |(_, n)| *n);
        match jet.consumer_info(&name).await {
            Ok(info) => consumers.push(ConsumerStatus {
                consumer: name,
                acked_through: info.ack_floor.stream_sequence,
                pending: info.num_pending,
                unacked: info.num_ack_pending,
                redelivered: info.num_redelivered,
                parked,
            }),
            // Not created yet (projection-service never ran): everything is pending.
            Err(_) => consumers.push(ConsumerStatus {
                consumer: name,
                acked_through: 0,
                pending: 0,
                unacked: 0,
                redelivered: 0,
                parked,
            }),
        }
    }
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
        projections.push(ProjectionStatus {
            projection: p.name(),
            rows,
            processed,
            behind: events_in_store - processed,
        });
    }
    Ok(Status {
        events_in_store,
        outbox_pending,
        outbox_oldest_pending_seconds,
        consumers,
        projections,
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
                c.consumer, c.acked_through, c.pending, c.unacked, c.redelivered, c.parked
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
        Ok(())
    }
}
