//! A worker's batch: applied (two round trips when it can, a transaction when it must), then
//! acked, at once or once its WAL is on disk.

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use chrono::Utc;
use event_model::EventEnvelope;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, Postgres};
use tracing::Instrument;

use super::combine::Combined;
use super::settle::{ack, Unsettled, SETTLE_POLL};
use super::truth::against_the_store;
use super::{event_span, Leased, PartitionWorker};
use crate::dead_letters;
use crate::projections::{
    self, apply_batch, BatchReport, Commit, Projection, ProjectionError, Wal,
};

impl PartitionWorker {
    /// Acks what PostgreSQL now says is on disk.
    pub(super) async fn settle(&self, unsettled: &mut Unsettled) {
        // Nothing else may flush the WAL soon (PostgreSQL's WAL writer takes up to 200 ms): a
        // batch that waited this long has it flushed, once, for every batch waiting.
        let force = unsettled.waited() >= FORCE_FLUSH_AFTER;
        let settled = match self.held().await {
            Ok(mut conn) => settle_on(&mut conn, unsettled, force).await,
            Err(e) => Err(e),
        };
        match settled {
            Ok(messages) => ack(&messages).await,
            Err(e) => {
                tracing::warn!(partition = self.partition, error = %e, "reading the WAL's position failed; acking later")
            }
        }
    }

    /// On the way out, acks what is on disk within a moment (a batch that waited
    /// [`FORCE_FLUSH_AFTER`] has the WAL flushed); what is left is delivered again, and skipped.
    pub(super) async fn settle_before_leaving(&self, unsettled: &mut Unsettled) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while !unsettled.is_empty() && Instant::now() < deadline {
            self.settle(unsettled).await;
            if !unsettled.is_empty() {
                tokio::time::sleep(SETTLE_POLL).await;
            }
        }
    }

    pub(super) async fn handle(
        &self,
        messages: Vec<jetstream::Message>,
        unsettled: &mut Unsettled,
    ) {
        let consumer = self.consumer_name();
        // Nothing waits behind the batch: the partition is keeping up with live traffic.
        let live = messages
            .last()
            .and_then(|m| m.info().ok())
            .is_some_and(|info| info.pending == 0);
        let mut envelopes = Vec::with_capacity(messages.len());
        let mut acceptable = Vec::with_capacity(messages.len());
        // One span per event, a child of the command's trace (the `traceparent` header); it lives
        // from receipt to ack, the time the event took to take effect.
        let mut spans = Vec::with_capacity(messages.len());
        for message in messages {
            if message.info().is_ok_and(|info| info.delivered > 1) {
                metrics::counter!("projection_redeliveries_total", "consumer" => consumer.clone())
                    .increment(1);
            }
            match serde_json::from_slice::<EventEnvelope>(&message.payload) {
                Ok(envelope) => {
                    spans.push(event_span(&consumer, &envelope, &message));
                    envelopes.push(envelope);
                    acceptable.push(message);
                }
                Err(e) => {
                    // Not an event at all: nothing to apply, now or later.
                    tracing::error!(partition = self.partition, subject = %message.subject, error = %e, "dropping a message that is not an event");
                    let _ = message.ack_with(AckKind::Term).await;
                }
            }
        }
        if envelopes.is_empty() {
            return;
        }
        let started = Instant::now();
        metrics::histogram!("projection_batch_size", "consumer" => consumer.clone())
            .record(envelopes.len() as f64);
        let batch_span =
            tracing::info_span!("projection.batch", consumer = %consumer, events = envelopes.len());
        // The ack wait is short, so that a dead instance's unacked messages come back within
        // seconds; a batch that takes longer (a lock wait, a slow disk) tells the broker it is
        // still at work on them instead of having them redelivered.
        let apply = self.apply(&envelopes, live).instrument(batch_span);
        tokio::pin!(apply);
        let mut progress = tokio::time::interval(self.ack_wait / 3);
        progress.tick().await;
        let result = loop {
            tokio::select! {
                result = &mut apply => break result,
                // The earlier batches still waiting for their WAL flush wait on this one too
                // (it tells where the WAL is once its read returns): they are kept alive alike.
                _ = progress.tick() => {
                    for message in acceptable.iter().chain(unsettled.messages()) {
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                }
            }
        };
        match result {
            Ok(Applied {
                report,
                parked,
                wal,
                commit,
            }) => {
                if parked > 0 {
                    metrics::counter!("projection_events_parked_total", "consumer" => consumer.clone())
                        .increment(parked as u64);
                }
                metrics::counter!("projection_events_applied_total", "consumer" => consumer.clone())
                    .increment(report.applied as u64);
                metrics::counter!("projection_events_duplicate_total", "consumer" => consumer.clone())
                    .increment(report.duplicates as u64);
                metrics::histogram!("projection_batch_seconds", "consumer" => consumer.clone())
                    .record(started.elapsed().as_secs_f64());
                if let Some(newest) = envelopes.iter().map(|e| e.recorded_at).max() {
                    let lag = (Utc::now() - newest).num_milliseconds().max(0) as f64 / 1000.0;
                    metrics::gauge!("projection_consumer_lag_seconds", "consumer" => consumer.clone()).set(lag);
                }
                if let Some(wal) = wal {
                    ack(&unsettled.settle(wal)).await;
                }
                match commit {
                    // Its commit flushed the WAL, the earlier batches' with it.
                    Commit::Durable => {
                        ack(&unsettled.all()).await;
                        ack(&acceptable).await;
                    }
                    Commit::Deferred => unsettled.push(acceptable),
                }
                self.health.advanced(self.partition);
                drop(spans);
            }
            Err(e) => {
                tracing::error!(partition = self.partition, error = %e, "batch failed; redelivering later");
                metrics::counter!("projection_batch_failures_total", "consumer" => consumer)
                    .increment(1);
                for message in &acceptable {
                    let _ = message
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    /// Applies a batch: live, with the other partitions' live batches (see [`super::combine`]);
    /// else, or when that declines, in two round trips of its own when it can
    /// ([`projections::apply_unlocked`]), else in one transaction. An event that cannot be
    /// applied (poison) is parked, with the events of its contact behind it in the batch, and the
    /// rest is applied: the partition keeps flowing where ordering allows. Returns the report and how many were parked.
    ///
    /// The store is the truth: what is applied is each message's event as
    /// `contact_event_store` holds it, never the message itself. A message whose event the store
    /// does not have, or holds otherwise, was not published by the relay (a forgery, or a copy
    /// from before `encrypt-history` rewrote it): it is counted
    /// (`projection_rejected_messages_total{reason}`) and parked for an operator; the stored
    /// event, where there is one, is applied all the same.
    async fn apply(&self, envelopes: &[EventEnvelope], live: bool) -> anyhow::Result<Applied> {
        let consumer = self.consumer_name();
        if let (true, Some(combiner)) = (live, &self.combiner) {
            // Declined, it is applied below on its own, as if it had never been handed over.
            if let Combined::Applied { report, wal } = combiner.apply(envelopes).await {
                return Ok(Applied {
                    report,
                    parked: 0,
                    wal: Some(wal),
                    commit: Commit::Deferred,
                });
            }
        }
        let mut parked: Vec<(EventEnvelope, String)> = Vec::new();
        let mut conn = self.held().await?;
        let ids: Vec<_> = envelopes.iter().map(|e| e.event_id).collect();
        // First in two round trips and no transaction (the lease keeps every other worker off
        // these rows); a batch that needs a transaction, or whose rows moved meanwhile, is
        // applied again below in one that locks them.
        let unlocked = projections::read_unlocked(&mut conn, &self.keys, &ids).await?;
        let wal = Some(unlocked.wal);
        let (mut remaining, rejected) = against_the_store(envelopes, &unlocked.stored);
        // Live traffic commits without waiting for the disk and is acked once the WAL is there
        // (`Unsettled`): a batch's flush was a third of its time, and the commands' commits,
        // which must wait, queued behind it. A batch with more waiting behind it (catching up)
        // waits for its flush: nothing else may flush the WAL meanwhile, and the broker's window
        // of unacked messages would fill with batches waiting for PostgreSQL's WAL writer.
        let commit = if live {
            Commit::Deferred
        } else {
            Commit::Durable
        };
        let declined = if rejected.is_empty() {
            match projections::apply_unlocked(
                &mut conn,
                &self.store,
                &[&remaining],
                unlocked,
                commit,
            )
            .await?
            {
                Ok(reports) => {
                    let report = reports[0];
                    return Ok(Applied {
                        report,
                        parked: 0,
                        wal,
                        commit,
                    });
                }
                Err(declined) => declined.label(),
            }
        } else {
            "rejected"
        };
        metrics::counter!("projection_batches_locked_total", "reason" => declined).increment(1);
        for (envelope, reason) in rejected {
            tracing::warn!(consumer, event_id = %envelope.event_id, reason = reason.label(), "a message that is not the stored event: not applied, parked");
            metrics::counter!("projection_rejected_messages_total", "reason" => reason.label())
                .increment(1);
            parked.push((envelope, reason.to_string()));
        }
        loop {
            let mut tx = conn.begin().await?;
            match apply_batch(
                &mut tx,
                &self.store,
                &self.keys,
                &Projection::ALL,
                &remaining,
            )
            .await
            {
                Ok(report) => {
                    dead_letters::park(&mut tx, &consumer, &parked).await?;
                    tx.commit().await?;
                    return Ok(Applied {
                        report,
                        parked: parked.len(),
                        wal,
                        commit: Commit::Durable,
                    });
                }
                Err(ProjectionError::Poison { envelope, reason }) => {
                    tx.rollback().await?;
                    let poison = envelope.event_id;
                    tracing::error!(consumer, event_id = %poison, event_type = %envelope.event_type, error = %reason, "parking an event that cannot be applied");
                    // Everything of the same contact (the partition key) waits behind it.
                    let (blocked, rest): (Vec<_>, Vec<_>) = remaining
                        .into_iter()
                        .partition(|e| e.contact_id == envelope.contact_id);
                    if blocked.is_empty() {
                        anyhow::bail!("event {poison} cannot be applied ({reason}), yet no event of the batch needs it");
                    }
                    if !blocked.iter().any(|e| e.event_id == poison) {
                        parked.push((*envelope, reason.clone())); // met through a gap fill from the store
                    }
                    for e in blocked {
                        let why = if e.event_id == poison {
                            reason.clone()
                        } else {
                            format!(
                                "waits behind event {poison}, which cannot be applied: {reason}"
                            )
                        };
                        parked.push((e, why));
                    }
                    remaining = rest;
                }
                Err(other) => return Err(other.into()),
            }
        }
    }
}

/// The connection a worker's statements run on: its lease's (so that a worker whose lease is
/// gone cannot commit, see [`crate::ownership`]), or, without a lease, one of the pool's.
enum Held<'a> {
    Lease(tokio::sync::MutexGuard<'a, Leased>),
    Pool(PoolConnection<Postgres>),
}

impl Deref for Held<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match self {
            Self::Lease(leased) => &leased.conn,
            Self::Pool(conn) => conn,
        }
    }
}

impl DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Self::Lease(leased) => &mut leased.conn,
            Self::Pool(conn) => conn,
        }
    }
}

impl PartitionWorker {
    /// The connection to run on, a lease's plans renewed when due.
    async fn held(&self) -> Result<Held<'_>, sqlx::Error> {
        Ok(match &self.lease {
            Some(lease) => {
                let mut leased = lease.lock().await;
                let Leased { conn, plans } = &mut *leased;
                plans.refresh(conn).await?;
                Held::Lease(leased)
            }
            None => Held::Pool(self.store.pool().acquire().await?),
        })
    }
}

/// How long the oldest batch waiting for the WAL's flush waits before the worker flushes it.
const FORCE_FLUSH_AFTER: Duration = Duration::from_millis(50);

/// The messages `unsettled` may ack now, flushing the WAL first when `force`.
async fn settle_on(
    conn: &mut PgConnection,
    unsettled: &mut Unsettled,
    force: bool,
) -> Result<Vec<jetstream::Message>, sqlx::Error> {
    if force {
        projections::flush(conn).await?;
        return Ok(unsettled.all());
    }
    Ok(unsettled.settle(projections::wal(conn).await?))
}

/// A batch applied.
struct Applied {
    report: BatchReport,
    /// How many of its events were parked.
    parked: usize,
    /// Where the WAL stood before its commit (read with its events).
    wal: Option<Wal>,
    commit: Commit,
}
