//! How a `min_version` read learns that the row it waits for may have moved, without holding or
//! polling a pooled connection: a batch that projected events notifies the channel
//! [`CHANNEL`] in its own transaction (PostgreSQL delivers it on commit, to every instance, so a
//! read served by one instance hears of a batch committed by another's worker); each instance
//! listens on one connection of its own ([`Listener`]) and wakes the reads waiting for the
//! aggregates the batch names ([`Projected`]).
//!
//! A notification can be missed (the listening connection was lost and reconnected) or arrive
//! before the row is visible (a read replica behind the primary): a waiting read also re-reads
//! every [`RECHECK`], so it converges either way.

use std::sync::Arc;
use std::time::Duration;

use event_model::EventEnvelope;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The notification channel of committed projection batches.
pub const CHANNEL: &str = "ventros_projected";

/// How often a waiting read re-reads with no notification for it.
pub const RECHECK: Duration = Duration::from_secs(1);

/// A batch naming more aggregates than this notifies without names (every waiting read
/// re-reads): PostgreSQL refuses a payload of 8,000 bytes or more, and a name takes 17.
const MAX_NAMED: usize = 400;

/// A short name of an aggregate in a notification: the 64 random low bits of its UUID (v4 or
/// v7). Two aggregates sharing one only cost a needless re-read.
fn short_name(id: Uuid) -> u64 {
    id.as_u64_pair().1
}

/// The notification payload telling the listening instances which aggregates `events`
/// advanced; sent with [`CHANNEL`] by the batch's write, so they hear of it on commit.
pub fn payload(events: &[EventEnvelope]) -> String {
    let mut names: Vec<u64> = events.iter().map(|e| short_name(e.aggregate_id)).collect();
    names.sort_unstable();
    names.dedup();
    if names.len() > MAX_NAMED {
        return String::new();
    }
    names
        .iter()
        .map(|n| format!("{n:016x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// What a notification says advanced.
#[derive(Debug)]
enum Advanced {
    /// Anything may have (a batch of many aggregates, or notifications possibly missed).
    Anything,
    /// These aggregates (short names, sorted).
    Only(Vec<u64>),
}

impl Advanced {
    fn parse(payload: &str) -> Self {
        if payload.is_empty() {
            return Self::Anything;
        }
        let names: Result<Vec<u64>, _> = payload
            .split(',')
            .map(|n| u64::from_str_radix(n, 16))
            .collect();
        match names {
            Ok(mut names) => {
                names.sort_unstable();
                Self::Only(names)
            }
            Err(_) => Self::Anything,
        }
    }

    fn names(&self, id: Uuid) -> bool {
        match self {
            Self::Anything => true,
            Self::Only(names) => names.binary_search(&short_name(id)).is_ok(),
        }
    }
}

/// The waiting reads' side: subscribe, then read, then [`Subscription::advanced`].
#[derive(Clone)]
pub struct Projected {
    sender: broadcast::Sender<Arc<Advanced>>,
}

impl Projected {
    /// Subscribes before the read it follows, so that a batch committed between the read and
    /// the wait is not missed.
    pub fn subscribe(&self, id: Uuid) -> Subscription {
        Subscription {
            id,
            receiver: self.sender.subscribe(),
        }
    }

    /// Subscribes to every batch, from now on.
    pub fn subscribe_all(&self) -> EveryBatch {
        EveryBatch {
            receiver: self.sender.subscribe(),
        }
    }
}

pub struct Subscription {
    id: Uuid,
    receiver: broadcast::Receiver<Arc<Advanced>>,
}

/// A subscription to every batch, whatever it names: the change feed's wake-up.
pub struct EveryBatch {
    receiver: broadcast::Receiver<Arc<Advanced>>,
}

impl EveryBatch {
    /// Returns when the next batch commits (at once if some committed since the last call);
    /// never, while no listener runs.
    pub async fn next(&mut self) {
        match self.receiver.recv().await {
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

impl Subscription {
    /// Returns when a batch naming this aggregate (or possibly naming it) commits, or at
    /// `until`, whichever comes first.
    pub async fn advanced(&mut self, until: tokio::time::Instant) {
        let heard = async {
            loop {
                match self.receiver.recv().await {
                    Ok(advanced) if advanced.names(self.id) => return,
                    Ok(_) => continue,
                    // Missed some: any of them may have named it.
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    // No listener (shut down, or not started): the re-check is all there is.
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        tokio::select! {
            () = heard => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }
}

/// The one connection of an instance that listens on [`CHANNEL`], and the fan-out to its
/// waiting reads.
pub struct Listener {
    pool: PgPool,
    sender: broadcast::Sender<Arc<Advanced>>,
}

impl Listener {
    /// A listener on `pool` (a pool of its own: its connection is held for as long as it runs,
    /// and must not count against the queries'), and the handle the queries wait on.
    pub fn new(pool: PgPool) -> (Self, Projected) {
        // A waiting read that falls this far behind re-reads once (`Lagged`), nothing more.
        let (sender, _) = broadcast::channel(256);
        (
            Self {
                pool,
                sender: sender.clone(),
            },
            Projected { sender },
        )
    }

    /// Listens until `shutdown`, reconnecting after a failure.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let listened = tokio::select! {
                listened = self.listen() => listened,
                () = shutdown.cancelled() => return,
            };
            if let Err(error) = listened {
                tracing::warn!(%error, "listening for projected batches failed; waiting reads re-read every {RECHECK:?} meanwhile");
            }
            tokio::select! {
                () = tokio::time::sleep(RECHECK) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn listen(&self) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        // Whatever committed before the LISTEN took effect was not heard.
        self.wake(Advanced::Anything);
        loop {
            match listener.try_recv().await? {
                Some(notification) => self.wake(Advanced::parse(notification.payload())),
                // The connection was lost (and made again): what committed meanwhile was not heard.
                None => self.wake(Advanced::Anything),
            }
        }
    }

    fn wake(&self, advanced: Advanced) {
        // No receiver: no read is waiting.
        let _ = self.sender.send(Arc::new(advanced));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_names_the_aggregates_of_its_batch_and_nothing_else() {
        let (a, b) = (Uuid::now_v7(), Uuid::new_v4());
        let payload = format!("{:016x}", short_name(a));
        let advanced = Advanced::parse(&payload);
        assert!(advanced.names(a));
        assert!(!advanced.names(b));
        assert!(Advanced::parse("").names(b));
        assert!(Advanced::parse("not hex").names(b));
    }
}
