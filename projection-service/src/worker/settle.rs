//! Acks that wait for the disk: a batch committed without waiting for its WAL flush
//! ([`crate::projections::Commit::Deferred`]) is acked once PostgreSQL says the WAL is on disk
//! past it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream;

use crate::projections::Wal;

/// How often a worker with batches waiting for the WAL's flush asks how far it is.
pub(super) const SETTLE_POLL: Duration = Duration::from_millis(25);

/// Batches committed with [`crate::projections::Commit::Deferred`], in order, their messages
/// (`M`) unacked until the WAL holding them is on disk.
pub(super) struct Unsettled<M = jetstream::Message> {
    batches: VecDeque<Batch<M>>,
}

struct Batch<M> {
    messages: Vec<M>,
    /// The WAL position its commit ends at or before, once a statement after it told one.
    ends_by: Option<i64>,
    committed: Instant,
}

impl<M> Default for Unsettled<M> {
    fn default() -> Self {
        Self {
            batches: VecDeque::new(),
        }
    }
}

impl<M> Unsettled<M> {
    pub(super) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    pub(super) fn push(&mut self, messages: Vec<M>) {
        self.batches.push_back(Batch {
            messages,
            ends_by: None,
            committed: Instant::now(),
        });
    }

    /// How long the oldest batch held here has waited.
    pub(super) fn waited(&self) -> Duration {
        self.batches
            .front()
            .map_or(Duration::ZERO, |b| b.committed.elapsed())
    }

    /// Takes `wal`, read after every batch held here was committed; returns the messages of the
    /// batches now on disk, to ack.
    pub(super) fn settle(&mut self, wal: Wal) -> Vec<M> {
        for batch in &mut self.batches {
            batch.ends_by.get_or_insert(wal.inserted);
        }
        let mut settled = Vec::new();
        while self
            .batches
            .front()
            .is_some_and(|b| b.ends_by.is_some_and(|end| end <= wal.flushed))
        {
            if let Some(batch) = self.batches.pop_front() {
                settled.extend(batch.messages);
            }
        }
        settled
    }

    /// The messages waiting, oldest first.
    pub(super) fn messages(&self) -> impl Iterator<Item = &M> {
        self.batches.iter().flat_map(|b| &b.messages)
    }

    /// Every batch's messages: a durable commit after them flushed their WAL too.
    pub(super) fn all(&mut self) -> Vec<M> {
        self.batches.drain(..).flat_map(|b| b.messages).collect()
    }
}

pub(super) async fn ack(messages: &[jetstream::Message]) {
    for message in messages {
        if let Err(e) = message.ack().await {
            tracing::warn!(error = %e, "ack failed; the message will be redelivered and skipped");
        }
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
