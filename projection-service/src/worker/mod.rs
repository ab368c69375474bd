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

mod batch;
mod combine;
mod health;
mod settle;
mod truth;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use event_model::EventEnvelope;
use futures::StreamExt;
use platform::db::GenericPlans;
use platform::event_store::EventStore;
use platform::nats::{StreamSettings, HEADER_TRACEPARENT};
use platform::personal::DataKeys;
use tokio_util::sync::CancellationToken;

use crate::dead_letters;
pub use combine::{Combined, Combiner};
pub use health::ConsumerHealth;
use settle::{Unsettled, SETTLE_POLL};

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
    /// Applies live batches with the other partitions' (see [`combine`]). `None`: each worker
    /// applies its own.
    pub combiner: Option<Combiner>,
}

/// The `# HELP` text of the workers' families.
pub fn describe_metrics() {
    health::describe_metrics();
    combine::describe_metrics();
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
