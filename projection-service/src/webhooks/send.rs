//! The sender: claims due deliveries, POSTs each (signed, personal fields opened: [`super::http`]),
//! and records what came of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_model::EventEnvelope;
use platform::event_store::EventStore;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::http::{post, Outcome};
use super::{Dispatcher, PER_SUBSCRIPTION};

/// Attempts in flight at once, per instance.
const IN_FLIGHT: usize = 32;
/// How long the sender waits when nothing is due.
const IDLE: Duration = Duration::from_millis(100);

/// A claimed delivery.
#[derive(sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    subscription_id: Uuid,
    event_id: Uuid,
    attempts: i32,
}

pub(super) async fn run(
    dispatcher: Arc<Dispatcher>,
    client: reqwest::Client,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let busy: Arc<Mutex<HashMap<Uuid, usize>>> = Arc::default();
    while !stop.is_cancelled() {
        let full: Vec<Uuid> = busy
            .lock()
            .expect("the in-flight counts")
            .iter()
            .filter(|(_, n)| **n >= PER_SUBSCRIPTION)
            .map(|(id, _)| *id)
            .collect();
        let free = slots.available_permits() as i64;
        let claimed = if free == 0 {
            Ok(Vec::new())
        } else {
            claim(&dispatcher, free, &full).await
        };
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "claiming webhook deliveries failed");
                Vec::new()
            }
        };
        if claimed.is_empty() {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(IDLE) => {}
            }
            continue;
        }
        for delivery in claimed {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            *busy
                .lock()
                .expect("the in-flight counts")
                .entry(delivery.subscription_id)
                .or_default() += 1;
            let (dispatcher, client, busy) = (dispatcher.clone(), client.clone(), busy.clone());
            tokio::spawn(async move {
                let subscription = delivery.subscription_id;
                if let Err(e) = attempt(&dispatcher, &client, delivery).await {
                    // The lease runs out and the delivery is claimed again.
                    tracing::warn!(error = %e, "a webhook attempt could not be recorded");
                }
                let mut busy = busy.lock().expect("the in-flight counts");
                if let Some(n) = busy.get_mut(&subscription) {
                    *n -= 1;
                    if *n == 0 {
                        busy.remove(&subscription);
                    }
                }
                drop(permit);
            });
        }
    }
}

/// Claims up to `limit` due deliveries of active subscriptions, none of a subscription in
/// `full` and at most
/// [`PER_SUBSCRIPTION`] of any other, each only when no earlier delivery of its subscription and
/// contact is pending; leases each for the attempt's time (plus a margin), after which another
/// instance may claim it again.
async fn claim(
    dispatcher: &Dispatcher,
    limit: i64,
    full: &[Uuid],
) -> Result<Vec<Claimed>, sqlx::Error> {
    let lease_ms = (dispatcher.settings.timeout + Duration::from_secs(10)).as_millis() as f64;
    sqlx::query_as(
        "with heads as (
             select d.id,
                    row_number() over (partition by d.subscription_id
                                       order by d.next_attempt_at, d.position) as nth
               from webhook_deliveries d
               join webhook_subscriptions s
                 on s.id = d.subscription_id and coalesce(s.active, true) and s.deleted_at is null
              where d.status = 'pending' and d.next_attempt_at <= now() at time zone 'utc'
                and d.subscription_id <> all($2)
                and not exists (
                    select 1 from webhook_deliveries e
                     where e.subscription_id = d.subscription_id
                       and e.partition_key = d.partition_key
                       and e.status = 'pending' and e.position < d.position)),
         due as (
             select d.id from webhook_deliveries d join heads h on h.id = d.id
              where h.nth <= $4 and d.status = 'pending'
                and d.next_attempt_at <= now() at time zone 'utc'
              order by d.next_attempt_at, d.position
              limit $1
              for update of d skip locked)
         update webhook_deliveries d
            set attempts = d.attempts + 1,
                next_attempt_at = now() at time zone 'utc' + $3 * interval '1 millisecond'
           from due where d.id = due.id
         returning d.id, d.subscription_id, d.event_id, d.attempts",
    )
    .bind(limit)
    .bind(full)
    .bind(lease_ms)
    .bind(PER_SUBSCRIPTION as i64)
    .fetch_all(&dispatcher.pool)
    .await
}

#[derive(sqlx::FromRow)]
struct Target {
    url: String,
    secret: Option<String>,
    active: Option<bool>,
    deleted: bool,
}

/// One attempt of a claimed delivery, and its record.
async fn attempt(
    dispatcher: &Dispatcher,
    client: &reqwest::Client,
    delivery: Claimed,
) -> anyhow::Result<()> {
    let target: Option<Target> = sqlx::query_as(
        "select url, secret, active, deleted_at is not null as deleted
           from webhook_subscriptions where id = $1",
    )
    .bind(delivery.subscription_id)
    .fetch_optional(&dispatcher.pool)
    .await?;
    let Some(target) = target.filter(|t| !t.deleted) else {
        return finish(
            dispatcher,
            &delivery,
            "failed",
            None,
            Some("the subscription was deleted"),
        )
        .await;
    };
    if !target.active.unwrap_or(true) {
        // Paused since it was claimed: the attempt does not count (a paused subscription's
        // deliveries are not claimed; they wait).
        sqlx::query(
            "update webhook_deliveries set attempts = attempts - 1,
                    next_attempt_at = now() at time zone 'utc' + interval '30 seconds'
              where id = $1",
        )
        .bind(delivery.id)
        .execute(&dispatcher.pool)
        .await?;
        return Ok(());
    }
    let body = body(dispatcher, delivery.event_id).await?;
    let outcome = post(
        client,
        &dispatcher.settings,
        &target.url,
        target.secret.as_deref().unwrap_or_default(),
        delivery.event_id,
        &body,
    )
    .await;
    let subscription = delivery.subscription_id.to_string();
    match outcome {
        Outcome::Delivered(status) => {
            metrics::counter!("webhook_deliveries_total", "subscription" => subscription, "outcome" => "delivered")
                .increment(1);
            finish(dispatcher, &delivery, "delivered", Some(status), None).await
        }
        Outcome::Failed(status, error) => {
            let last = delivery.attempts >= dispatcher.settings.max_attempts;
            let outcome = if last { "failed" } else { "retrying" };
            metrics::counter!("webhook_deliveries_total", "subscription" => subscription, "outcome" => outcome)
                .increment(1);
            if last {
                finish(dispatcher, &delivery, "failed", status, Some(&error)).await
            } else {
                let wait = dispatcher.settings.backoff(delivery.attempts);
                sqlx::query(
                    "update webhook_deliveries
                        set last_status = $2, last_error = $3,
                            next_attempt_at = now() at time zone 'utc' + $4 * interval '1 millisecond'
                      where id = $1 and status = 'pending'",
                )
                .bind(delivery.id)
                .bind(status.map(i32::from))
                .bind(&error)
                .bind(wait.as_millis() as f64)
                .execute(&dispatcher.pool)
                .await?;
                count_failure(dispatcher, delivery.subscription_id).await
            }
        }
    }
}

/// Records a delivery's end: delivered, or failed for good.
async fn finish(
    dispatcher: &Dispatcher,
    delivery: &Claimed,
    status: &str,
    answered: Option<u16>,
    error: Option<&str>,
) -> anyhow::Result<()> {
    sqlx::query(
        "update webhook_deliveries
            set status = $2, last_status = coalesce($3, last_status), last_error = $4,
                delivered_at = case when $2 = 'delivered' then now() at time zone 'utc' end
          where id = $1 and status = 'pending'",
    )
    .bind(delivery.id)
    .bind(status)
    .bind(answered.map(i32::from))
    .bind(error)
    .execute(&dispatcher.pool)
    .await?;
    if status == "delivered" {
        sqlx::query(
            "update webhook_subscriptions
                set success_count = coalesce(success_count, 0) + 1,
                    last_success_at = now() at time zone 'utc',
                    last_triggered_at = now() at time zone 'utc'
              where id = $1",
        )
        .bind(delivery.subscription_id)
        .execute(&dispatcher.pool)
        .await?;
        Ok(())
    } else {
        count_failure(dispatcher, delivery.subscription_id).await
    }
}

async fn count_failure(dispatcher: &Dispatcher, subscription: Uuid) -> anyhow::Result<()> {
    sqlx::query(
        "update webhook_subscriptions
            set failure_count = coalesce(failure_count, 0) + 1,
                last_failure_at = now() at time zone 'utc',
                last_triggered_at = now() at time zone 'utc'
          where id = $1",
    )
    .bind(subscription)
    .execute(&dispatcher.pool)
    .await?;
    Ok(())
}

/// The delivery's body: `{id, type, occurred_at, project_id, aggregate_type, aggregate_id,
/// version, data}`, read from the store (never from the broker), the personal fields opened
/// with the contact's key as it is now (`null` once the contact is forgotten).
async fn body(dispatcher: &Dispatcher, event_id: Uuid) -> anyhow::Result<Vec<u8>> {
    let mut conn = dispatcher.pool.acquire().await?;
    let envelope: EventEnvelope = EventStore::read_by_ids(&mut *conn, &[event_id])
        .await?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("event {event_id} is not in the store"))?;
    let keys = dispatcher.keys.load_for(&mut conn, [&envelope]).await?;
    let payload = keys.open_payload(
        envelope.event_id,
        Some(envelope.contact_id),
        envelope.payload()?,
    )?;
    let body = platform::webhooks::event_body(&envelope, &payload);
    Ok(serde_json::to_vec(&body)?)
}
