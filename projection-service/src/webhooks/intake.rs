//! The intake: the store's events, in commit order from the checkpoint, become the deliveries of
//! the subscriptions that match them. One instance at a time ([`super::INTAKE_LOCK`]).

use std::time::Duration;

use event_model::EventEnvelope;
use platform::event_store::{Checkpoint, EventStore, Horizon};
use sqlx::{Acquire, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Events read per batch.
const BATCH: i64 = 500;
/// How long the leader waits when the store has nothing new, and a standby between tries for
/// the lock.
const IDLE: Duration = Duration::from_millis(100);
const STANDBY: Duration = Duration::from_millis(500);
/// How often the leader reports the per-subscription gauges.
const REPORT_EVERY: Duration = Duration::from_secs(5);

struct Subscription {
    id: Uuid,
    project_id: Option<Uuid>,
    events: Option<Vec<String>>,
    created_at: Option<chrono::NaiveDateTime>,
}

/// Leads while it holds the lock; stands by otherwise.
pub(super) async fn run(pool: PgPool, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let led = async {
            let mut conn = pool.acquire().await?;
            if !platform::db::try_advisory_lock(&mut conn, super::INTAKE_LOCK).await? {
                return Ok::<bool, anyhow::Error>(false);
            }
            tracing::info!("webhook intake: leading");
            let result = lead(&mut conn, &stop).await;
            // The lock goes with the connection if it broke; else release it for the next one.
            let _ = platform::db::advisory_unlock(&mut conn, super::INTAKE_LOCK).await;
            result.map(|()| true)
        }
        .await;
        let wait = match led {
            Ok(true) => Duration::ZERO,
            Ok(false) => STANDBY,
            Err(e) => {
                tracing::warn!(error = %e, "webhook intake failed; trying again");
                STANDBY
            }
        };
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn lead(conn: &mut PgConnection, stop: &CancellationToken) -> anyhow::Result<()> {
    let mut gauges = Gauges::default();
    while !stop.is_cancelled() {
        gauges.report_every(conn, REPORT_EVERY).await?;
        if take_in(conn).await? == 0 {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(IDLE) => {}
            }
        }
    }
    Ok(())
}

/// Takes in one batch: its deliveries and the checkpoint after it, in one transaction. Answers
/// how many events it read.
async fn take_in(conn: &mut PgConnection) -> anyhow::Result<usize> {
    let mut tx = conn.begin().await?;
    let (transaction_id, position): (i64, i64) = sqlx::query_as(
        "select transaction_id, position from webhook_intake where id = 1 for update",
    )
    .fetch_one(&mut *tx)
    .await?;
    let after = Checkpoint {
        transaction_id,
        position,
    };
    let subscriptions: Vec<Subscription> = sqlx::query_as!(
        Subscription,
        "select id, project_id, events, created_at from webhook_subscriptions \
          where deleted_at is null"
    )
    .fetch_all(&mut *tx)
    .await?;
    if subscriptions.is_empty() {
        // No one listens: nothing to read, only to move past (a subscription hears of the
        // events that come after it).
        let end = EventStore::finished_checkpoint(&mut *tx, None).await?;
        if end > after {
            save(&mut tx, end).await?;
            tx.commit().await?;
        }
        return Ok(0);
    }
    let events = EventStore::read_after(&mut *tx, after, BATCH, None, Horizon::Finished).await?;
    let Some(last) = events.last().map(|e| e.checkpoint()) else {
        return Ok(0);
    };
    let read = events.len();
    let mut columns = Deliveries::default();
    for ordered in events {
        let e = ordered.event.into_envelope()?;
        for s in &subscriptions {
            let patterns = s.events.as_deref().unwrap_or_default();
            // A subscription hears of the events stored after it was made (the intake may be
            // behind); a paused one takes them in too, and its sender holds them.
            let after_it = s
                .created_at
                .is_none_or(|made| e.recorded_at.naive_utc() >= made);
            if s.project_id == Some(e.project_id)
                && after_it
                && platform::webhooks::matches(patterns, &e.event_type)
            {
                columns.push(s.id, &e);
            }
        }
    }
    let made = columns.ids.len();
    if made > 0 {
        sqlx::query(
            "insert into webhook_deliveries
                    (id, subscription_id, tenant_id, event_id, event_type, position, partition_key)
             select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[],
                                  $6::int8[], $7::uuid[])
             on conflict (subscription_id, event_id) do nothing",
        )
        .bind(&columns.ids)
        .bind(&columns.subscriptions)
        .bind(&columns.tenants)
        .bind(&columns.events)
        .bind(&columns.types)
        .bind(&columns.positions)
        .bind(&columns.keys)
        .execute(&mut *tx)
        .await?;
    }
    save(&mut tx, last).await?;
    tx.commit().await?;
    metrics::counter!("webhook_deliveries_taken_in_total").increment(made as u64);
    Ok(read)
}

/// The per-subscription gauges (`webhook_pending`, `webhook_oldest_pending_seconds`), reported
/// by the leader; a subscription with nothing pending any more is reported at zero once.
#[derive(Default)]
struct Gauges {
    reported: std::collections::HashSet<Uuid>,
    last: Option<std::time::Instant>,
}

impl Gauges {
    async fn report_every(
        &mut self,
        conn: &mut PgConnection,
        every: Duration,
    ) -> Result<(), sqlx::Error> {
        if self.last.is_some_and(|at| at.elapsed() < every) {
            return Ok(());
        }
        self.last = Some(std::time::Instant::now());
        let rows: Vec<(Uuid, i64, f64)> = sqlx::query_as(
            "select subscription_id, count(*),
                    extract(epoch from (now() at time zone 'utc' - min(created_at)))::float8
               from webhook_deliveries where status = 'pending' group by subscription_id",
        )
        .fetch_all(&mut *conn)
        .await?;
        let now: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.0).collect();
        for gone in self.reported.difference(&now) {
            let label = gone.to_string();
            metrics::gauge!("webhook_pending", "subscription" => label.clone()).set(0.0);
            metrics::gauge!("webhook_oldest_pending_seconds", "subscription" => label).set(0.0);
        }
        for (subscription, pending, oldest) in rows {
            let label = subscription.to_string();
            metrics::gauge!("webhook_pending", "subscription" => label.clone()).set(pending as f64);
            metrics::gauge!("webhook_oldest_pending_seconds", "subscription" => label).set(oldest);
        }
        self.reported = now;
        Ok(())
    }
}

/// Moves the checkpoint.
async fn save(conn: &mut PgConnection, at: Checkpoint) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update webhook_intake set transaction_id = $1, position = $2,
                updated_at = now() at time zone 'utc' where id = 1",
    )
    .bind(at.transaction_id)
    .bind(at.position)
    .execute(conn)
    .await?;
    Ok(())
}

/// The deliveries of a batch, one array per column.
#[derive(Default)]
struct Deliveries {
    ids: Vec<Uuid>,
    subscriptions: Vec<Uuid>,
    tenants: Vec<String>,
    events: Vec<Uuid>,
    types: Vec<String>,
    positions: Vec<i64>,
    keys: Vec<Uuid>,
}

impl Deliveries {
    fn push(&mut self, subscription: Uuid, envelope: &EventEnvelope) {
        self.ids.push(Uuid::now_v7());
        self.subscriptions.push(subscription);
        self.tenants.push(envelope.tenant_id.clone());
        self.events.push(envelope.event_id);
        self.types.push(envelope.event_type.clone());
        self.positions.push(envelope.position);
        // One contact's deliveries go in order (a session's events carry their contact's id;
        // a project's, the project's).
        self.keys.push(envelope.contact_id);
    }
}
