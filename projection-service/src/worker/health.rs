//! How far each partition's worker is, for `/readyz` and `/metrics`.

use std::time::{Duration, Instant};

use dashmap::DashMap;

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
    pub(super) fn advanced(&self, partition: u32) {
        self.partitions
            .entry(partition)
            .or_insert(Progress {
                waiting: 0,
                advanced: Instant::now(),
            })
            .advanced = Instant::now();
    }

    pub(super) fn waiting(&self, partition: u32, waiting: u64) {
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
            .map(|p| super::durable_name(*p.key()))
            .collect();
        stalled.sort();
        stalled
    }
}
