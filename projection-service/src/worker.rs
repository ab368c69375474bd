//! The JetStream side of the projections: one durable pull consumer per partition
//! (`projections-p<N>`), each worker applying what it receives in batches. Which instance runs a
//! partition's worker is decided by [`crate::ownership`]: one at a time, across instances.
//!
//! A batch is whatever is ready, up to `batch_size`. It is applied to every projection at once,
//! in one read and one write statement (see [`crate::projections::apply_unlocked`]), or, when it
//! needs more, in one transaction ([`crate::projections::apply_batch`]); committed, and only then
//! acked. A crash between commit and ack means a redelivery, which `processed_events` turns
//! into a no-op. A batch that fails is nak'ed with a delay and retried.
//!
//! Each worker reports its progress to [`ConsumerHealth`]: a consumer with events waiting that
//! has not advanced for a while is stalled, and `/readyz` says so.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::{self, AckKind};
use chrono::Utc;
use dashmap::DashMap;
use event_model::EventEnvelope;
use futures::StreamExt;
use platform::db::GenericPlans;
use platform::event_store::EventStore;
use platform::nats::{StreamSettings, HEADER_TRACEPARENT};
use platform::personal::DataKeys;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::dead_letters;
use crate::projections::{
    self, apply_batch, BatchReport, Commit, Projection, ProjectionError, Wal,
};

/// The longest wait before a worker sets its consumer up again after a broker failure. Short: on
/// a NATS cluster, a consumer whose leader was lost is back as soon as the survivors elected a new
/// one (seconds), and a worker should not sleep through that; a failed attempt costs one request.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// How often a worker asks the broker how far behind it is.
const LAG_POLL: Duration = Duration::from_secs(2);

/// How long a catching-up worker waits for its batch to fill (see `consume`).
const CATCH_UP_FILL: Duration = Duration::from_millis(20);

/// How long the workers wait for an answer from the JetStream API (stream and consumer info,
/// consumer creation). When a broker node dies, its consumers elect new leaders (4 to 9 s in
/// nats-server) and every request until then goes unanswered: with the client's default of 5 s
/// (10 s for a get-or-create), a worker re-subscribed up to 10 s after the election was over.
/// These requests are small and answered in milliseconds when a leader is there.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The JetStream context of the workers (see [`REQUEST_TIMEOUT`]).
pub fn requests_context(client: &async_nats::Client) -> async_nats::jetstream::Context {
    let mut js = async_nats::jetstream::new(client.clone());
    js.set_timeout(REQUEST_TIMEOUT);
    js
}

/// The `# HELP` text of the workers' families (`promtool check metrics` wants one on each).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "projection_consumer_lag_events",
        Unit::Count,
        "Events waiting for a partition's worker (pending and unacknowledged), by consumer"
    );
    describe_gauge!(
        "projection_consumer_lag_seconds",
        Unit::Seconds,
        "Time from recording the newest event of a partition's last batch to applying it, by consumer"
    );
    describe_gauge!(
        "projection_parked_events",
        Unit::Count,
        "Events parked in dead_letter_events, by consumer"
    );
    describe_counter!(
        "projection_events_applied_total",
        "Events applied to the read tables, by consumer"
    );
    describe_counter!(
        "projection_events_duplicate_total",
        "Events delivered again and skipped (already in processed_events), by consumer"
    );
    describe_counter!(
        "projection_events_parked_total",
        "Events parked in dead_letter_events instead of applied, by consumer"
    );
    describe_counter!(
        "projection_redeliveries_total",
        "Messages the broker delivered more than once, by consumer"
    );
    describe_counter!(
        "projection_batch_failures_total",
        "Batches that failed and were handed back for redelivery, by consumer"
    );
    describe_counter!(
        "projection_rejected_messages_total",
        "Messages the event store does not back, parked and never applied, by reason"
    );
    describe_counter!(
        "projection_batches_locked_total",
        "Batches applied in a transaction that locks their rows instead of in two round trips, by reason"
    );
    describe_histogram!(
        "projection_batch_size",
        Unit::Count,
        "Events per batch a worker applied, by consumer"
    );
    describe_histogram!(
        "projection_batch_seconds",
        Unit::Seconds,
        "Time to apply one batch and commit it, by consumer"
    );
}

/// Every partition's progress, shared by the workers and `/readyz`.
#[derive(Debug, Default)]
pub struct ConsumerHealth {
    partitions: DashMap<u32, Progress>,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    /// Messages the broker holds for this consumer (not yet delivered, or not yet acked).
    waiting: u64,
    /// Last time the consumer applied a batch, or was found with nothing waiting.
    advanced: Instant,
}

impl ConsumerHealth {
    fn advanced(&self, partition: u32) {
        self.partitions
            .entry(partition)
            .or_insert(Progress {
                waiting: 0,
                advanced: Instant::now(),
            })
            .advanced = Instant::now();
    }

    fn waiting(&self, partition: u32, waiting: u64) {
        let mut entry = self.partitions.entry(partition).or_insert(Progress {
            waiting,
            advanced: Instant::now(),
        });
        entry.waiting = waiting;
        if waiting == 0 {
            entry.advanced = Instant::now();
        }
    }

    /// Drops a partition this instance no longer owns (its new owner reports it).
    pub fn forget(&self, partition: u32) {
        self.partitions.remove(&partition);
    }

    /// The consumers that have events waiting and have not advanced for `after`.
    pub fn stalled(&self, after: Duration) -> Vec<String> {
        let mut stalled: Vec<String> = self
            .partitions
            .iter()
            .filter(|p| p.waiting > 0 && p.advanced.elapsed() > after)
            .map(|p| format!("projections-p{}", p.key()))
            .collect();
        stalled.sort();
        stalled
    }
}

#[derive(Clone)]
pub struct PartitionWorker {
    pub js: jetstream::Context,
    pub stream: StreamSettings,
    pub partition: u32,
    pub store: EventStore,
    /// Opens the personal fields of the events (read per batch, never cached: see
    /// [`platform::personal`]).
    pub keys: DataKeys,
    pub batch_size: usize,
    pub ack_wait: Duration,
    pub health: Arc<ConsumerHealth>,
    /// The connection holding this partition's lock (see [`crate::ownership`]): batches are
    /// applied on it, so a worker that lost its lock cannot commit. `None`: the pool's.
    pub lease: Option<Lease>,
}

/// The connection that holds a partition's lock (`ownership`), on which its worker also writes.
pub type Lease = Arc<tokio::sync::Mutex<Leased>>;

/// A lease's connection, with its statements' plans: planned once, renewed every few seconds
/// (see `GenericPlans`).
pub struct Leased {
    pub conn: sqlx::PgConnection,
    pub plans: GenericPlans,
}

impl Leased {
    pub fn new(conn: sqlx::PgConnection) -> Self {
        Self {
            conn,
            plans: GenericPlans::new(GenericPlans::EVERY),
        }
    }
}

/// The durable JetStream consumer of a partition.
pub fn durable_name(partition: u32) -> String {
    format!("projections-p{partition}")
}

impl PartitionWorker {
    pub fn consumer_name(&self) -> String {
        durable_name(self.partition)
    }

    /// Consumes until `shutdown`, reconnecting the consumer after any broker failure.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            match self.consume(&shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    if started.elapsed() > Duration::from_secs(10) {
                        // It ran for a while: a fresh failure (a broker node lost), not a loop.
                        backoff = Duration::from_millis(200);
                    }
                    tracing::warn!(partition = self.partition, error = %e, "consumer stopped; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
                }
            }
        }
    }

    async fn consume(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let stream = self.js.get_stream(&self.stream.name).await?;
        let name = self.consumer_name();
        let consumer: PullConsumer = stream
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: self.stream.partition_filter(self.partition),
                    ack_policy: AckPolicy::Explicit,
                    deliver_policy: DeliverPolicy::All,
                    ack_wait: self.ack_wait,
                    max_ack_pending: (self.batch_size * 4) as i64,
                    ..Default::default()
                },
            )
            .await?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.batch_size)
            // A pull request lost with a broker node (its consumer's leader moved) shows as
            // missed heartbeats after twice this, and the worker pulls again.
            .heartbeat(Duration::from_secs(1))
            .expires(Duration::from_secs(30))
            .messages()
            .await?;
        let mut batches = messages.ready_chunks(self.batch_size);
        // Measured beside the consumption, so that a worker stuck on a batch still shows its lag
        // (and so its stall).
        let monitor = tokio::spawn({
            let worker = self.clone();
            async move {
                let mut lag_poll = tokio::time::interval(LAG_POLL);
                loop {
                    lag_poll.tick().await;
                    worker.measure_lag(&consumer).await;
                }
            }
        });
        let _monitor = AbortOnDrop(monitor);
        tracing::info!(partition = self.partition, consumer = %name, "consuming");
        let mut unsettled = Unsettled::default();
        loop {
            let batch = tokio::select! {
                batch = batches.next() => batch,
                _ = tokio::time::sleep(SETTLE_POLL), if !unsettled.is_empty() => {
                    self.settle(&mut unsettled).await;
                    continue;
                }
                _ = shutdown.cancelled() => {
                    self.settle_before_leaving(&mut unsettled).await;
                    return Ok(());
                }
            };
            let Some(batch) = batch else {
                anyhow::bail!("message stream ended");
            };
            let mut messages = Vec::with_capacity(self.batch_size);
            take_received(batch, &mut messages)?;
            // Catching up (the broker says at least the rest of a batch is waiting behind the
            // last message), fill the batch before applying it: one transaction for a full batch
            // instead of one for whatever had crossed the socket. Live traffic, even a little
            // behind, never waits: a worker that waited for a few stragglers added up to the
            // whole fill time to their lag.
            let filling = Instant::now();
            while messages.len() < self.batch_size
                && messages
                    .last()
                    .and_then(|m| m.info().ok())
                    .is_some_and(|info| info.pending >= (self.batch_size - messages.len()) as u64)
            {
                let Some(left) = CATCH_UP_FILL.checked_sub(filling.elapsed()) else {
                    break;
                };
                match tokio::time::timeout(left, batches.next()).await {
                    Ok(Some(more)) => take_received(more, &mut messages)?,
                    Ok(None) => anyhow::bail!("message stream ended"),
                    Err(_) => break,
                }
            }
            // Finish the batch even when shutdown arrives meanwhile: commit, then ack.
            self.handle(messages, &mut unsettled).await;
        }
    }

    async fn measure_lag(&self, consumer: &PullConsumer) {
        if let Ok(parked) = dead_letters::count(self.store.pool(), &self.consumer_name()).await {
            metrics::gauge!("projection_parked_events", "consumer" => self.consumer_name())
                .set(parked as f64);
        }
        if let Ok(info) = consumer.get_info().await {
            let waiting = info.num_pending + info.num_ack_pending as u64;
            metrics::gauge!("projection_consumer_lag_events", "consumer" => self.consumer_name())
                .set(waiting as f64);
            self.health.waiting(self.partition, waiting);
        }
    }

    /// Acks what PostgreSQL now says is on disk.
    async fn settle(&self, unsettled: &mut Unsettled) {
        let wal = match &self.lease {
            Some(lease) => projections::wal(&mut lease.lock().await.conn).await,
            None => match self.store.pool().acquire().await {
                Ok(mut conn) => projections::wal(&mut conn).await,
                Err(e) => Err(e),
            },
        };
        match wal {
            Ok(wal) => ack(&unsettled.settle(wal)).await,
            Err(e) => {
                tracing::warn!(partition = self.partition, error = %e, "reading the WAL's position failed; acking later")
            }
        }
    }

    /// On the way out, acks what reaches the disk within a moment (PostgreSQL's WAL writer
    /// flushes every 200 ms by default); the rest is delivered again, and skipped.
    async fn settle_before_leaving(&self, unsettled: &mut Unsettled) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while !unsettled.is_empty() && Instant::now() < deadline {
            self.settle(unsettled).await;
            if !unsettled.is_empty() {
                tokio::time::sleep(SETTLE_POLL).await;
            }
        }
    }

    async fn handle(&self, messages: Vec<jetstream::Message>, unsettled: &mut Unsettled) {
        let consumer = self.consumer_name();
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
        let apply = self.apply(&envelopes).instrument(batch_span);
        tokio::pin!(apply);
        let mut progress = tokio::time::interval(self.ack_wait / 3);
        progress.tick().await;
        let result = loop {
            tokio::select! {
                result = &mut apply => break result,
                _ = progress.tick() => {
                    for message in &acceptable {
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

    /// Applies a batch: in two round trips when it can ([`projections::apply_unlocked`]), else in
    /// one transaction. An event that cannot be applied (poison) is parked,
    /// with the events of its contact behind it in the batch, and the rest is applied: the
    /// partition keeps flowing where ordering allows. Returns the report and how many were parked.
    ///
    /// The store is the truth: what is applied is each message's event as
    /// `contact_event_store` holds it, never the message itself. A message whose event the store
    /// does not have, or holds otherwise, was not published by the relay (a forgery, or a copy
    /// from before `encrypt-history` rewrote it): it is counted
    /// (`projection_rejected_messages_total{reason}`) and parked for an operator; the stored
    /// event, where there is one, is applied all the same.
    async fn apply(&self, envelopes: &[EventEnvelope]) -> anyhow::Result<Applied> {
        let consumer = self.consumer_name();
        let mut parked: Vec<(EventEnvelope, String)> = Vec::new();
        let mut guard = match &self.lease {
            Some(lease) => Some(lease.lock().await),
            None => None,
        };
        if let Some(leased) = guard.as_deref_mut() {
            leased.plans.refresh(&mut leased.conn).await?;
        }
        let mut lease = guard.as_deref_mut().map(|leased| &mut leased.conn);
        let ids: Vec<_> = envelopes.iter().map(|e| e.event_id).collect();
        // First in two round trips and no transaction (the lease keeps every other worker off
        // these rows); a batch that needs a transaction, or whose rows moved meanwhile, is
        // applied again below in one that locks them.
        let mut pooled: Option<sqlx::pool::PoolConnection<sqlx::Postgres>> = None;
        let conn: &mut sqlx::PgConnection = match lease.as_mut() {
            Some(conn) => conn,
            None => pooled.insert(self.store.pool().acquire().await?),
        };
        let unlocked = projections::read_unlocked(conn, &self.keys, &ids).await?;
        let wal = Some(unlocked.wal);
        let (mut remaining, rejected) = against_the_store(envelopes, &unlocked.stored);
        // Live traffic commits without waiting for the disk and is acked once the WAL is there
        // (`Unsettled`): a batch's flush was a third of its time, and the commands' commits,
        // which must wait, queued behind it. A full batch (catching up) waits, so that the
        // broker's window of unacked messages never fills with batches waiting for a flush.
        let commit = if envelopes.len() < self.batch_size {
            Commit::Deferred
        } else {
            Commit::Durable
        };
        let declined = if rejected.is_empty() {
            match projections::apply_unlocked(conn, &self.store, &remaining, unlocked, commit)
                .await?
            {
                Ok(report) => {
                    return Ok(Applied {
                        report,
                        parked: 0,
                        wal,
                        commit,
                    })
                }
                Err(declined) => declined.label(),
            }
        } else {
            "rejected"
        };
        drop(pooled);
        metrics::counter!("projection_batches_locked_total", "reason" => declined).increment(1);
        for (envelope, reason) in rejected {
            tracing::warn!(consumer, event_id = %envelope.event_id, reason = reason.label(), "a message that is not the stored event: not applied, parked");
            metrics::counter!("projection_rejected_messages_total", "reason" => reason.label())
                .increment(1);
            parked.push((envelope, reason.to_string()));
        }
        loop {
            let mut tx = match lease.as_mut() {
                Some(conn) => conn.begin().await?,
                None => self.store.pool().begin().await?,
            };
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

/// A batch applied.
struct Applied {
    report: BatchReport,
    /// How many of its events were parked.
    parked: usize,
    /// Where the WAL stood before its commit (read with its events).
    wal: Option<Wal>,
    commit: Commit,
}

/// How often a worker with batches waiting for the WAL's flush asks how far it is.
const SETTLE_POLL: Duration = Duration::from_millis(25);

/// Batches committed with [`Commit::Deferred`], in order, their messages (`M`) unacked until the
/// WAL holding them is on disk; each with the WAL position its commit ends at or before, once a
/// statement after it told one.
struct Unsettled<M = jetstream::Message> {
    batches: VecDeque<(Vec<M>, Option<i64>)>,
}

impl<M> Default for Unsettled<M> {
    fn default() -> Self {
        Self {
            batches: VecDeque::new(),
        }
    }
}

impl<M> Unsettled<M> {
    fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    fn push(&mut self, messages: Vec<M>) {
        self.batches.push_back((messages, None));
    }

    /// Takes `wal`, read after every batch held here was committed; returns the messages of the
    /// batches now on disk, to ack.
    fn settle(&mut self, wal: Wal) -> Vec<M> {
        for (_, ends_by) in &mut self.batches {
            ends_by.get_or_insert(wal.inserted);
        }
        let mut settled = Vec::new();
        while let Some((_, Some(ends_by))) = self.batches.front() {
            if *ends_by > wal.flushed {
                break;
            }
            if let Some((messages, _)) = self.batches.pop_front() {
                settled.extend(messages);
            }
        }
        settled
    }

    /// Every batch's messages: a durable commit after them flushed their WAL too.
    fn all(&mut self) -> Vec<M> {
        self.batches.drain(..).flat_map(|(m, _)| m).collect()
    }
}

async fn ack(messages: &[jetstream::Message]) {
    for message in messages {
        if let Err(e) = message.ack().await {
            tracing::warn!(error = %e, "ack failed; the message will be redelivered and skipped");
        }
    }
}

/// Why a message was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejected {
    /// No stored event has its id.
    NotInStore,
    /// The stored event with its id is not what the message says.
    Differs,
}

impl Rejected {
    fn label(self) -> &'static str {
        match self {
            Self::NotInStore => "not_in_store",
            Self::Differs => "differs",
        }
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotInStore => "rejected: no stored event has this id; never applied",
            Self::Differs => {
                "rejected: the stored event with this id differs from the message; the stored one was applied"
            }
        })
    }
}

/// The events to apply (the stored ones the messages name, in message order) and the messages
/// rejected, with why.
fn against_the_store(
    received: &[EventEnvelope],
    stored: &[EventEnvelope],
) -> (Vec<EventEnvelope>, Vec<(EventEnvelope, Rejected)>) {
    let stored: std::collections::HashMap<_, _> = stored.iter().map(|e| (e.event_id, e)).collect();
    let mut truth = Vec::with_capacity(received.len());
    let mut rejected = Vec::new();
    for message in received {
        match stored.get(&message.event_id) {
            None => rejected.push((message.clone(), Rejected::NotInStore)),
            Some(event) => {
                if *event != message {
                    rejected.push((message.clone(), Rejected::Differs));
                }
                // A second message naming the same event is a duplicate the batch skips.
                truth.push((*event).clone());
            }
        }
    }
    (truth, rejected)
}

fn event_span(
    consumer: &str,
    envelope: &EventEnvelope,
    message: &jetstream::Message,
) -> tracing::Span {
    let span = tracing::info_span!(
        "projection.event",
        consumer,
        event_id = %envelope.event_id,
        event_type = %envelope.event_type,
        aggregate_id = %envelope.aggregate_id,
        correlation_id = ?envelope.correlation_id,
    );
    let traceparent = message
        .headers
        .as_ref()
        .and_then(|h| h.get(HEADER_TRACEPARENT))
        .map(|v| v.as_str());
    if let Some(traceparent) = traceparent {
        platform::telemetry::continue_trace(&span, traceparent);
    }
    span
}

/// Moves a chunk the broker delivered into `messages`; a delivery error ends the subscription.
fn take_received<E: std::fmt::Display>(
    chunk: Vec<Result<jetstream::Message, E>>,
    messages: &mut Vec<jetstream::Message>,
) -> anyhow::Result<()> {
    for message in chunk {
        messages.push(message.map_err(|e| anyhow::anyhow!("receiving: {e}"))?);
    }
    Ok(())
}

/// Aborts a background task when its owner goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal(inserted: i64, flushed: i64) -> Wal {
        Wal { inserted, flushed }
    }

    #[test]
    fn a_deferred_batch_is_acked_only_once_the_wal_is_flushed_past_a_position_read_after_it() {
        let mut unsettled = Unsettled::default();
        unsettled.push(vec!["a1", "a2"]);
        // Read after batch a: its commit ends by 100; only 90 is on disk.
        assert!(unsettled.settle(wal(100, 90)).is_empty());
        unsettled.push(vec!["b"]);
        // A flush at 100 covers a, not b (which committed after the position 100 was read).
        assert_eq!(unsettled.settle(wal(150, 100)), ["a1", "a2"]);
        assert!(!unsettled.is_empty());
        assert!(unsettled.settle(wal(160, 149)).is_empty());
        assert_eq!(unsettled.settle(wal(170, 150)), ["b"]);
        assert!(unsettled.is_empty());
    }

    #[test]
    fn a_batch_is_held_to_the_first_position_read_after_it_not_to_later_ones() {
        // Under steady traffic the WAL's end keeps moving ahead of its flush: a batch held to
        // the newest position would never be acked.
        let mut unsettled = Unsettled::default();
        unsettled.push(vec![1]);
        assert!(unsettled.settle(wal(200, 150)).is_empty());
        assert!(unsettled.settle(wal(400, 199)).is_empty());
        assert_eq!(unsettled.settle(wal(600, 200)), [1]);
    }

    #[test]
    fn a_durable_commit_takes_every_batch_before_it() {
        let mut unsettled = Unsettled::default();
        unsettled.push(vec![1]);
        unsettled.push(vec![2, 3]);
        assert!(unsettled.settle(wal(10, 0)).is_empty());
        assert_eq!(unsettled.all(), [1, 2, 3]);
        assert!(unsettled.is_empty());
    }
}
