//! The outbox relay: publishes `outbox_events` rows to JetStream, in insertion order.
//!
//! Only one relay runs at a time across all command-service instances: the one holding a
//! PostgreSQL advisory lock, on a connection it also does all its work on, so that losing the
//! connection (and with it the lock) stops the work too. While rows keep coming it looks for
//! more every couple of milliseconds; when there are none it sleeps until `NOTIFY outbox_events`
//! (sent by the outbox trigger only while the relay sleeps: see [`RELAY_IDLE_LOCK`]) or a
//! fallback poll.
//!
//! Each batch is published with `Nats-Msg-Id = event_id` (the broker drops a republished event
//! within its duplicate window; the projections' `processed_events` catch the rest), the acks
//! are awaited, and the batch's rows are deleted in one statement. While the broker is away,
//! rows stay `pending` with `retry_count`/`last_error` updated and the relay backs off; only an
//! error that no retry can fix (a message over the broker's size limit) marks a row `failed`.

use std::ops::ControlFlow;
use std::time::Duration;

use async_nats::jetstream;
use platform::db::GenericPlans;
use platform::nats::StreamSettings;
use sqlx::postgres::PgListener;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

mod publish;

pub use publish::batch_query;

/// How long a wake-up waits for more commits to join its batch.
const LINGER: Duration = Duration::from_millis(2);

/// The longest wait between publish attempts while the broker refuses. Short: while a stream
/// elects a leader (4 to 9 s in nats-server) every publish is refused at once ("no stream found"),
/// and the relay should publish as soon as the election is over; a failed attempt costs one quick
/// round trip.
const MAX_BROKER_BACKOFF: Duration = Duration::from_secs(1);

/// How long the relay waits for a batch's acks. An ack lost with the broker node the relay was
/// connected to is not failed by the client: it times out, and until then the relay publishes
/// nothing. A batch's acks arrive within milliseconds from a live stream leader, and a batch sent
/// again after a timeout is only de-duplicated by the stream (`Nats-Msg-Id`).
pub const PUBLISH_ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// The relay's JetStream context (see [`PUBLISH_ACK_TIMEOUT`]).
pub fn publish_context(client: &async_nats::Client) -> jetstream::Context {
    let mut js = jetstream::new(client.clone());
    js.set_timeout(PUBLISH_ACK_TIMEOUT);
    js
}

/// How often an instance that does not relay asks for the relay's lock: the longest a dead
/// relay's backlog waits for the next one (one trivial query per interval).
const STANDBY_POLL: Duration = Duration::from_millis(250);

/// Set on the relay's connection: only index paths. The outbox is a queue that is often empty,
/// so its statistics often say so (autovacuum analyzed it between bursts) while a backlog of
/// hundreds of thousands of rows waits: planned for the few rows the statistics promise, the
/// batch query took every pending row and sorted them for each batch of 500 (447 ms a batch
/// for a 200,000-row backlog, against 4.5 ms walking the pending index in order). Every
/// statement of the relay reads by key or in index order, so this takes no good plan away.
pub const RELAY_PLANNER: &str =
    "set enable_seqscan = off; set enable_bitmapscan = off; set enable_sort = off";

/// The advisory lock the relay holds while it sleeps ("outidle"): the outbox trigger notifies
/// only when it cannot take it in shared mode (migration 0020). A NOTIFY serializes commits.
const RELAY_IDLE_LOCK: i64 = 0x006f_7574_6964_6c65;

#[derive(Clone)]
pub struct OutboxRelay {
    pub pool: PgPool,
    pub js: jetstream::Context,
    pub stream: StreamSettings,
    pub batch_size: i64,
    pub poll: Duration,
}

/// The `# HELP` text of the relay's families (`promtool check metrics` wants one on each).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "outbox_pending_rows",
        Unit::Count,
        "Outbox rows stored but not yet published to the broker"
    );
    describe_gauge!(
        "outbox_oldest_pending_age_seconds",
        Unit::Seconds,
        "Age of the oldest outbox row not yet published"
    );
    describe_counter!(
        "outbox_published_total",
        "Events the relay published to the broker"
    );
    describe_counter!(
        "outbox_publish_failures_total",
        "Publish attempts that failed (retried with backoff)"
    );
    describe_histogram!(
        "outbox_publish_batch_seconds",
        Unit::Seconds,
        "Time to publish one batch of outbox rows and mark them published"
    );
}

impl OutboxRelay {
    /// Relays until `shutdown`; re-elects itself after any database failure.
    pub async fn run(self, shutdown: CancellationToken) {
        platform::shutdown::retry_until_stopped(
            &shutdown,
            Duration::from_secs(5),
            || self.lead(&shutdown),
            |e| tracing::warn!(error = %e, "outbox relay stopped; retrying"),
        )
        .await;
    }

    async fn lead(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await?.detach();
        loop {
            if platform::db::try_advisory_lock(&mut conn, platform::db::RELAY_LOCK).await? {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(STANDBY_POLL) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
        tracing::info!("outbox relay elected");
        conn.execute(RELAY_PLANNER).await?;
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen("outbox_events").await?;
        let result = self
            .relay_until_stopped(&mut conn, &mut listener, shutdown)
            .await;
        // Closing the connection releases the lock for the next instance.
        let _ = conn.close().await;
        result
    }

    async fn relay_until_stopped(
        &self,
        conn: &mut PgConnection,
        listener: &mut PgListener,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut broker_backoff = Duration::from_millis(100);
        let mut backlog_measured = std::time::Instant::now() - Duration::from_secs(60);
        let mut plans = GenericPlans::new(GenericPlans::EVERY);
        loop {
            plans.refresh(conn).await?;
            if backlog_measured.elapsed() >= Duration::from_secs(1) {
                self.measure_backlog(conn).await?;
                backlog_measured = std::time::Instant::now();
            }
            let (published, failed) = self.relay_pending(conn).await?;
            if failed > 0 {
                metrics::counter!("outbox_publish_failures_total").increment(failed as u64);
                tokio::select! {
                    _ = tokio::time::sleep(broker_backoff) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
                broker_backoff = (broker_backoff * 2).min(MAX_BROKER_BACKOFF);
                continue;
            }
            broker_backoff = Duration::from_millis(100);
            if published > 0 {
                // Busy: more is likely to have committed meanwhile. Asking for the idle lock now
                // would be a statement a batch for nothing.
                tokio::select! {
                    _ = tokio::time::sleep(LINGER) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
                continue;
            }
            if self
                .sleep_while_idle(conn, listener, shutdown)
                .await?
                .is_break()
            {
                return Ok(());
            }
        }
    }

    /// After a batch that found nothing: lingers a moment while a transaction that inserted
    /// without notifying is still open (the idle lock is taken), else sleeps under the idle lock
    /// until notified or the poll is due; `Break` on shutdown.
    async fn sleep_while_idle(
        &self,
        conn: &mut PgConnection,
        listener: &mut PgListener,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<ControlFlow<()>> {
        // Awake, the relay gets no notifications (commits do not send them: see
        // RELAY_IDLE_LOCK); it looks again after a moment, and sleeps only when it gets the
        // idle lock, which waits for every transaction that inserted without notifying.
        let idle = platform::db::try_advisory_lock(&mut *conn, RELAY_IDLE_LOCK).await?;
        if !idle {
            tokio::select! {
                _ = tokio::time::sleep(LINGER) => {}
                _ = shutdown.cancelled() => return Ok(ControlFlow::Break(())),
            }
            return Ok(ControlFlow::Continue(()));
        }
        // The last look: what committed between the caller's last batch and the lock.
        let (published, failed) = self.relay_pending(conn).await?;
        if published + failed == 0 {
            tokio::select! {
                notification = listener.recv() => {
                    notification?;
                }
                _ = tokio::time::sleep(self.poll) => {}
                _ = shutdown.cancelled() => return Ok(ControlFlow::Break(())),
            }
        }
        platform::db::advisory_unlock(&mut *conn, RELAY_IDLE_LOCK).await?;
        // Linger a moment so that the commits close behind the one that woke the relay share
        // its batch, then drain the notifications that arrived meanwhile.
        tokio::time::sleep(LINGER).await;
        while let Ok(notification) = tokio::time::timeout(Duration::ZERO, listener.recv()).await {
            notification?;
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Sets the backlog gauges: rows waiting, and how long the oldest has waited.
    async fn measure_backlog(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        let (pending, oldest) = platform::event_store::outbox_backlog(&mut *conn).await?;
        metrics::gauge!("outbox_pending_rows").set(pending as f64);
        metrics::gauge!("outbox_oldest_pending_age_seconds").set(oldest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_trigger_tries_the_lock_the_relay_sleeps_with() {
        let migration =
            include_str!("../../../migrations/0020_outbox_notify_only_to_wake_an_idle_relay.sql");
        assert!(
            migration.contains(&format!(
                "pg_try_advisory_xact_lock_shared({RELAY_IDLE_LOCK})"
            )),
            "migration 0020 and RELAY_IDLE_LOCK name different keys"
        );
    }
}
