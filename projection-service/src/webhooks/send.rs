//! The sender: claims due deliveries in batches, POSTs each (signed, personal fields opened:
//! [`super::http`]), and records what came of them in batches.
//!
//! A round costs three statements whatever its size: one claims (and leases) up to the free
//! slots' worth of deliveries, one reads their events from the store and one their contacts'
//! keys, so an event going to fifty subscriptions is read and opened once. The attempts run
//! side by side; a recorder writes their outcomes, and the subscriptions' counts with them, in
//! one statement per flush. While it writes, the next outcomes gather: the busier the sender,
//! the larger its flushes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use platform::event_store::EventStore;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::http::{post, Outcome};
use super::{Dispatcher, Settings, IN_FLIGHT, PER_SUBSCRIPTION};

/// A round claims once at least this many slots are free (or none is taken): one claim for a
/// handful of slots would cost as much as one for many.
const CLAIM_AT_LEAST: usize = IN_FLIGHT / 8;
/// How long the sender waits when nothing is due.
const IDLE: Duration = Duration::from_millis(100);
/// The most outcomes one flush writes.
const FLUSH_AT_MOST: usize = 2_000;
/// How long a stopping sender waits for the attempts in flight to be recorded; what is not is
/// attempted again once its lease runs out.
const DRAIN: Duration = Duration::from_secs(5);

/// A claimed delivery, with where it goes.
#[derive(sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    subscription_id: Uuid,
    event_id: Uuid,
    attempts: i32,
    url: String,
    secret: Option<String>,
}

/// What an attempt came to, as the recorder writes it.
struct Done {
    id: Uuid,
    subscription_id: Uuid,
    /// `delivered`, `failed` (out of attempts), or `pending` (to be tried again).
    status: &'static str,
    answered: Option<i32>,
    error: Option<String>,
    /// The wait before the next attempt (`pending` only).
    wait: Duration,
}

impl Done {
    fn of(settings: &Settings, delivery: &Claimed, outcome: Outcome) -> Self {
        let (status, answered, error) = match outcome {
            Outcome::Delivered(status) => ("delivered", Some(status), None),
            Outcome::Failed(status, error) if delivery.attempts >= settings.max_attempts => {
                ("failed", status, Some(error))
            }
            Outcome::Failed(status, error) => ("pending", status, Some(error)),
        };
        Self {
            id: delivery.id,
            subscription_id: delivery.subscription_id,
            status,
            answered: answered.map(i32::from),
            error,
            wait: if status == "pending" {
                settings.backoff(delivery.attempts)
            } else {
                Duration::ZERO
            },
        }
    }
}

/// Attempts in flight, per subscription.
#[derive(Clone, Default)]
struct Busy(Arc<Mutex<HashMap<Uuid, i32>>>);

impl Busy {
    fn take(&self, subscription: Uuid) {
        *self
            .0
            .lock()
            .expect("the in-flight counts")
            .entry(subscription)
            .or_default() += 1;
    }

    fn release(&self, subscription: Uuid) {
        let mut busy = self.0.lock().expect("the in-flight counts");
        if let Some(n) = busy.get_mut(&subscription) {
            *n -= 1;
            if *n <= 0 {
                busy.remove(&subscription);
            }
        }
    }

    fn snapshot(&self) -> (Vec<Uuid>, Vec<i32>) {
        self.0
            .lock()
            .expect("the in-flight counts")
            .iter()
            .map(|(id, n)| (*id, *n))
            .unzip()
    }
}

pub(super) async fn run(
    dispatcher: Arc<Dispatcher>,
    client: reqwest::Client,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let busy = Busy::default();
    // Each attempt in flight holds a sender: the recorder ends once the last is recorded.
    let (done, outcomes) = mpsc::unbounded_channel();
    let recorded = Arc::new(Notify::new());
    let recorder = tokio::spawn(record(dispatcher.clone(), outcomes, recorded.clone()));
    while !stop.is_cancelled() {
        let free = slots.available_permits();
        let claimed = if free >= CLAIM_AT_LEAST || free == IN_FLIGHT {
            claim(&dispatcher, free, &busy).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "claiming webhook deliveries failed");
                Vec::new()
            })
        } else {
            Vec::new()
        };
        if claimed.is_empty() {
            // A flush frees slots and may free the next delivery of a contact.
            tokio::select! {
                () = stop.cancelled() => {}
                () = recorded.notified() => {}
                () = tokio::time::sleep(IDLE) => {}
            }
            continue;
        }
        let bodies = match bodies(&dispatcher, &claimed).await {
            Ok(bodies) => bodies,
            Err(e) => {
                // The leases run out and the deliveries are claimed again.
                tracing::warn!(error = %e, "reading the events of webhook deliveries failed");
                continue;
            }
        };
        for delivery in claimed {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            busy.take(delivery.subscription_id);
            let body = bodies
                .get(&delivery.event_id)
                .cloned()
                .unwrap_or_else(|| Err(format!("event {} is not in the store", delivery.event_id)));
            let (dispatcher, client, busy, done) = (
                dispatcher.clone(),
                client.clone(),
                busy.clone(),
                done.clone(),
            );
            tokio::spawn(async move {
                let outcome = match (body, secret(&dispatcher, &delivery)) {
                    (Ok(body), Ok(secret)) => {
                        post(
                            &client,
                            &dispatcher.settings,
                            &delivery.url,
                            &secret,
                            delivery.event_id,
                            &body,
                        )
                        .await
                    }
                    (Err(error), _) | (_, Err(error)) => Outcome::Failed(None, error),
                };
                busy.release(delivery.subscription_id);
                let _ = done.send(Done::of(&dispatcher.settings, &delivery, outcome));
                drop(permit);
            });
        }
    }
    drop(done);
    if tokio::time::timeout(DRAIN, recorder).await.is_err() {
        tracing::info!(
            "stopped with webhook attempts unrecorded; they are attempted again after their lease"
        );
    }
}

/// Claims up to `limit` due deliveries of active subscriptions, at most [`PER_SUBSCRIPTION`] in
/// flight per subscription (counting `busy`), each only when no earlier delivery of its
/// subscription and contact is pending; the subscriptions take turns (each one's first, then
/// each one's second...). Leases each for the attempt's time (plus a margin), after which
/// another instance may claim it again.
///
/// "No earlier one pending" is asked as "the first pending one of its contact": a `min` the
/// planner can only answer from the order index's two leading columns, where a `not exists`
/// was planned, on a table not analyzed since it filled, as a scan of the subscription's whole
/// backlog per candidate.
async fn claim(
    dispatcher: &Dispatcher,
    limit: usize,
    busy: &Busy,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let lease_ms = (dispatcher.settings.timeout + Duration::from_secs(10)).as_millis() as f64;
    let (busy_ids, busy_counts) = busy.snapshot();
    sqlx::query_as(
        "with room as (
             select s.id, s.url, s.secret, $4::int4 - coalesce(b.n, 0) as room
               from webhook_subscriptions s
               left join unnest($2::uuid[], $3::int4[]) as b(id, n) on b.id = s.id
              where coalesce(s.active, true) and s.deleted_at is null),
         heads as (
             select h.id, h.subscription_id, h.next_attempt_at, h.position, r.url, r.secret
               from room r
              cross join lateral (
                    select d.id, d.subscription_id, d.next_attempt_at, d.position
                      from webhook_deliveries d
                     where d.subscription_id = r.id and d.status = 'pending'
                       and d.next_attempt_at <= now() at time zone 'utc'
                       and d.position = (
                           select min(e.position) from webhook_deliveries e
                            where e.subscription_id = d.subscription_id
                              and e.partition_key = d.partition_key
                              and e.status = 'pending')
                     order by d.next_attempt_at, d.position
                     limit r.room
                       for update of d skip locked) h
              where r.room > 0),
         chosen as (
             select id, url, secret
               from (select h.*, row_number() over (partition by h.subscription_id
                                                    order by h.next_attempt_at, h.position) as nth
                       from heads h) ranked
              order by nth, next_attempt_at, position
              limit $1)
         update webhook_deliveries d
            set attempts = d.attempts + 1,
                next_attempt_at = now() at time zone 'utc' + $5 * interval '1 millisecond'
           from chosen c where d.id = c.id
         returning d.id, d.subscription_id, d.event_id, d.attempts, c.url, c.secret",
    )
    .bind(limit as i64)
    .bind(&busy_ids)
    .bind(&busy_counts)
    .bind(PER_SUBSCRIPTION as i32)
    .bind(lease_ms)
    .fetch_all(&dispatcher.pool)
    .await
}

/// The subscription's signing secret, opened with the KEK that sealed it (a KEK this process
/// was not given fails the attempt, which is tried again: the operator's to fix).
fn secret(dispatcher: &Dispatcher, delivery: &Claimed) -> Result<Zeroizing<String>, String> {
    let stored = delivery.secret.as_deref().unwrap_or_default();
    platform::webhooks::open_secret(dispatcher.keys.keyring(), delivery.subscription_id, stored)
        .map_err(|e| format!("the signing secret cannot be opened: {e}"))
}

/// A body per event of the claimed deliveries: `{id, type, occurred_at, project_id,
/// aggregate_type, aggregate_id, version, data}`, read from the store (never from the broker),
/// the personal fields opened with the contact's key as it is now (`null` once the contact is
/// forgotten). An event that cannot be made into a body says why instead.
async fn bodies(
    dispatcher: &Dispatcher,
    claimed: &[Claimed],
) -> anyhow::Result<HashMap<Uuid, Result<Arc<Vec<u8>>, String>>> {
    let mut ids: Vec<Uuid> = claimed.iter().map(|d| d.event_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut conn = dispatcher.pool.acquire().await?;
    let envelopes = EventStore::read_by_ids(&mut *conn, &ids).await?;
    let keys = dispatcher
        .keys
        .load_for(&mut conn, envelopes.iter())
        .await?;
    Ok(envelopes
        .iter()
        .map(|e| {
            let body = (|| {
                let payload = keys.open_payload(e.event_id, Some(e.contact_id), e.payload()?)?;
                let body = platform::webhooks::event_body(e, &payload);
                anyhow::Ok(Arc::new(serde_json::to_vec(&body)?))
            })();
            (
                e.event_id,
                body.map_err(|error| format!("the event cannot be sent: {error}")),
            )
        })
        .collect())
}

/// Writes the outcomes as they come, a flush at a time, and tells the sender after each.
async fn record(
    dispatcher: Arc<Dispatcher>,
    mut outcomes: mpsc::UnboundedReceiver<Done>,
    recorded: Arc<Notify>,
) {
    let mut batch = Vec::new();
    while outcomes.recv_many(&mut batch, FLUSH_AT_MOST).await > 0 {
        // A failed flush is tried again (a deadlock with another instance's flush, a
        // connection lost); the deliveries stay leased meanwhile.
        let mut wait = Duration::from_millis(50);
        loop {
            match flush(&dispatcher, &batch).await {
                Ok(()) => break,
                Err(e) if wait < Duration::from_secs(5) => {
                    tracing::warn!(error = %e, "recording webhook attempts failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => {
                    tracing::warn!(error = %e, count = batch.len(), "webhook attempts not recorded; they are attempted again after their lease");
                    break;
                }
            }
        }
        count(&batch);
        batch.clear();
        recorded.notify_one();
    }
}

/// One statement: the deliveries' outcomes (each only while it is still pending), and the
/// counts of their subscriptions.
async fn flush(dispatcher: &Dispatcher, batch: &[Done]) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = batch.iter().map(|d| d.id).collect();
    let statuses: Vec<&str> = batch.iter().map(|d| d.status).collect();
    let answered: Vec<Option<i32>> = batch.iter().map(|d| d.answered).collect();
    let errors: Vec<Option<&str>> = batch.iter().map(|d| d.error.as_deref()).collect();
    let waits: Vec<f64> = batch.iter().map(|d| d.wait.as_millis() as f64).collect();
    sqlx::query(
        "with outcome as (
             select * from unnest($1::uuid[], $2::text[], $3::int4[], $4::text[], $5::float8[])
                 as o(id, status, answered, error, wait_ms)),
         recorded as (
             update webhook_deliveries d
                set status = o.status,
                    last_status = case when o.status = 'pending' then o.answered
                                       else coalesce(o.answered, d.last_status) end,
                    last_error = o.error,
                    delivered_at = case when o.status = 'delivered'
                                        then now() at time zone 'utc' end,
                    next_attempt_at = case when o.status = 'pending'
                                           then now() at time zone 'utc'
                                                + o.wait_ms * interval '1 millisecond'
                                           else d.next_attempt_at end
               from outcome o
              where d.id = o.id and d.status = 'pending'
          returning d.subscription_id, o.status),
         counted as (
             select subscription_id,
                    count(*) filter (where status = 'delivered') as delivered,
                    count(*) filter (where status <> 'delivered') as failed
               from recorded group by subscription_id)
         update webhook_subscriptions s
            set success_count = coalesce(s.success_count, 0) + c.delivered,
                failure_count = coalesce(s.failure_count, 0) + c.failed,
                last_success_at = case when c.delivered > 0 then now() at time zone 'utc'
                                       else s.last_success_at end,
                last_failure_at = case when c.failed > 0 then now() at time zone 'utc'
                                       else s.last_failure_at end,
                last_triggered_at = now() at time zone 'utc'
           from counted c where s.id = c.subscription_id",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&answered)
    .bind(&errors)
    .bind(&waits)
    .execute(&dispatcher.pool)
    .await?;
    Ok(())
}

/// `webhook_deliveries_total`, a counter per subscription and outcome, moved once per flush.
fn count(batch: &[Done]) {
    let mut counts: HashMap<(Uuid, &'static str), u64> = HashMap::new();
    for d in batch {
        let outcome = match d.status {
            "pending" => "retrying",
            other => other,
        };
        *counts.entry((d.subscription_id, outcome)).or_default() += 1;
    }
    for ((subscription, outcome), n) in counts {
        metrics::counter!("webhook_deliveries_total", "subscription" => subscription.to_string(), "outcome" => outcome)
            .increment(n);
    }
}
