//! Where the pipeline stands, as `replay-tool status` and the console's pipeline page show it:
//! each partition consumer's position, backlog and lag; who relays the outbox, which instance
//! owns which partition, and whether a rebuild runs. One home, so the two never disagree.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use platform::nats::StreamSettings;
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::worker::durable_name;

pub use platform::db::{REBUILD_LOCK, RELAY_LOCK};

/// How often each instance samples the consumers' lag for the console's sparklines.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// How long the samples reach back.
pub const SAMPLED_FOR: Duration = Duration::from_secs(15 * 60);

/// One partition consumer, as JetStream reports it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConsumerStatus {
    /// The durable consumer's name (`projections-p<partition>`).
    pub consumer: String,
    /// Its partition.
    pub partition: u32,
    /// The stream sequence below which every message is acknowledged.
    pub acked_through: u64,
    /// Messages not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub unacked: usize,
    /// Messages delivered more than once.
    pub redelivered: usize,
    /// Messages not yet applied: pending and unacknowledged.
    pub lag_events: u64,
    /// How long the oldest message not yet acknowledged has waited, in seconds (0 when none
    /// waits; absent when the broker would not say).
    pub lag_seconds: Option<f64>,
}

/// Each partition consumer of `stream`, in partition order; one not created yet (no
/// projection-service ever ran) shows as empty.
pub async fn consumers(
    nats: &async_nats::Client,
    stream: &StreamSettings,
) -> anyhow::Result<Vec<ConsumerStatus>> {
    let js = async_nats::jetstream::new(nats.clone());
    let jet = js.get_stream(&stream.name).await?;
    let now = Utc::now();
    let mut consumers = Vec::new();
    for partition in 0..stream.partitions {
        let name = durable_name(partition);
        let Ok(info) = jet.consumer_info(&name).await else {
            consumers.push(ConsumerStatus {
                consumer: name,
                partition,
                acked_through: 0,
                pending: 0,
                unacked: 0,
                redelivered: 0,
                lag_events: 0,
                lag_seconds: Some(0.0),
            });
            continue;
        };
        let lag_events = info.num_pending + info.num_ack_pending as u64;
        let lag_seconds = if lag_events == 0 {
            Some(0.0)
        } else {
            // The first message not acknowledged; its stream time is when it was published.
            jet.get_raw_message(info.ack_floor.stream_sequence + 1)
                .await
                .ok()
                .map(|message| {
                    let published = message.time.unix_timestamp_nanos() as f64 / 1e9;
                    (now.timestamp_micros() as f64 / 1e6 - published).max(0.0)
                })
        };
        consumers.push(ConsumerStatus {
            consumer: name,
            partition,
            acked_through: info.ack_floor.stream_sequence,
            pending: info.num_pending,
            unacked: info.num_ack_pending,
            redelivered: info.num_redelivered,
            lag_events,
            lag_seconds,
        });
    }
    Ok(consumers)
}

/// A projection-service instance and the partitions it owns now.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Instance {
    /// Its name (`INSTANCE_NAME`: the host's name and the process id unless set).
    pub instance: String,
    /// The partitions it holds the leases of.
    pub partitions: Vec<u32>,
}

/// Who holds an elected task's lock.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Holder {
    /// The holder's connection name (`application_name`).
    pub held_by: String,
    /// Since when its transaction or session has held it, as PostgreSQL reports the session's
    /// start.
    pub since: Option<DateTime<Utc>>,
}

/// The instances of the stream's projection-service, from the locks they hold (the member lock
/// and the partitions' leases, named by the connection's `application_name`).
pub async fn instances(pool: &PgPool, stream: &StreamSettings) -> anyhow::Result<Vec<Instance>> {
    let namespace = crate::ownership::namespace(&stream.name);
    let rows = sqlx::query!(
        r#"select a.application_name as "instance!", l.classid::int8 as "classid!",
                  l.objid::int8 as "objid!"
             from pg_locks l join pg_stat_activity a on a.pid = l.pid
            where l.locktype = 'advisory' and l.granted and l.objsubid = 2
              and l.database = (select oid from pg_database where datname = current_database())
              and l.classid in ($1::int8::oid, $2::int8::oid)"#,
        i64::from(namespace),
        i64::from(crate::ownership::member_key(namespace)),
    )
    .fetch_all(pool)
    .await?;
    let mut by_instance: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for row in rows {
        let owned = by_instance.entry(row.instance).or_default();
        if row.classid == i64::from(namespace) {
            owned.push(row.objid as u32);
        }
    }
    Ok(by_instance
        .into_iter()
        .map(|(instance, mut partitions)| {
            partitions.sort_unstable();
            Instance {
                instance,
                partitions,
            }
        })
        .collect())
}

/// Who holds the session advisory lock `key` (the one-key form), if anyone.
pub async fn holder(pool: &PgPool, key: i64) -> anyhow::Result<Option<Holder>> {
    let row = sqlx::query!(
        r#"select a.application_name as "held_by!", a.backend_start
             from pg_locks l join pg_stat_activity a on a.pid = l.pid
            where l.locktype = 'advisory' and l.granted and l.objsubid = 1
              and l.database = (select oid from pg_database where datname = current_database())
              and (l.classid::int8 << 32) | l.objid::int8 = $1
            limit 1"#,
        key,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| Holder {
        held_by: row.held_by,
        since: row.backend_start.map(|at| at.with_timezone(&Utc)),
    }))
}

/// One sample of a consumer's lag.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Sample {
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// Messages not yet applied then.
    pub lag_events: u64,
}

/// The last [`SAMPLED_FOR`] of each partition's lag, sampled by this instance every
/// [`SAMPLE_EVERY`] (the broker's numbers, the same whichever instance asks).
#[derive(Debug, Default, Clone)]
pub struct History {
    samples: Arc<Mutex<BTreeMap<u32, VecDeque<Sample>>>>,
}

impl History {
    /// A partition's samples, oldest first.
    pub fn of(&self, partition: u32) -> Vec<Sample> {
        let samples = self.samples.lock().expect("not poisoned");
        samples
            .get(&partition)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Records the consumers' lag now, forgetting what is older than [`SAMPLED_FOR`].
    pub fn record(&self, consumers: &[ConsumerStatus]) {
        let at = Utc::now();
        let oldest = at - chrono::Duration::from_std(SAMPLED_FOR).expect("a short duration");
        let mut samples = self.samples.lock().expect("not poisoned");
        for consumer in consumers {
            let kept = samples.entry(consumer.partition).or_default();
            kept.push_back(Sample {
                at,
                lag_events: consumer.lag_events,
            });
            while kept.front().is_some_and(|s| s.at < oldest) {
                kept.pop_front();
            }
        }
    }

    /// Samples every [`SAMPLE_EVERY`] until `stop`; a sample the broker cannot give is skipped.
    pub async fn run(
        self,
        nats: async_nats::Client,
        stream: StreamSettings,
        stop: CancellationToken,
    ) {
        loop {
            match consumers(&nats, &stream).await {
                Ok(now) => self.record(&now),
                Err(e) => tracing::debug!(error = %e, "sampling the consumers' lag failed"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(partition: u32, lag_events: u64) -> ConsumerStatus {
        ConsumerStatus {
            consumer: durable_name(partition),
            partition,
            acked_through: 0,
            pending: lag_events,
            unacked: 0,
            redelivered: 0,
            lag_events,
            lag_seconds: None,
        }
    }

    #[test]
    fn samples_are_kept_per_partition_in_order_and_only_for_the_window() {
        let history = History::default();
        history.record(&[consumer(0, 5), consumer(1, 7)]);
        history.record(&[consumer(0, 3), consumer(1, 9)]);
        let lags = |p| {
            history
                .of(p)
                .iter()
                .map(|s| s.lag_events)
                .collect::<Vec<_>>()
        };
        assert_eq!(lags(0), [5, 3]);
        assert_eq!(lags(1), [7, 9]);
        assert!(history.of(2).is_empty());
        // A sample from before the window goes at the next record.
        history.samples.lock().unwrap().get_mut(&0).unwrap()[0].at -=
            chrono::Duration::from_std(SAMPLED_FOR + Duration::from_secs(1)).unwrap();
        history.record(&[consumer(0, 1)]);
        assert_eq!(lags(0), [3, 1]);
    }
}
