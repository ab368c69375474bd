//! Partition ownership: several projection-service instances share the partitions, each
//! partition consumed by exactly one worker at a time.
//!
//! An instance owns a partition while it holds the PostgreSQL session advisory lock
//! `(namespace, partition)` on a connection of its own, the *lease*. The namespace is derived
//! from the stream's name, so systems on other streams in the same database never collide. The
//! worker applies its batches on the lease connection itself: a worker whose lease is gone cannot
//! commit anything, so two instances never apply the same partition at once, even for a moment.
//!
//! - **Death.** When an instance dies its connections close, PostgreSQL releases the locks, and
//!   the survivors claim the partitions on their next round (every [`ROUND`]). What the dead
//!   worker had received but not acked is redelivered by JetStream after the ack wait; the new
//!   owner meanwhile applies the newer events (filling any gap from the store), so the
//!   redelivered ones are duplicates that `processed_events` and the row versions skip.
//! - **Lost lease.** Each round pings every lease; one that fails (the connection dropped, or
//!   the server ended the session) stops its worker at once, and the partition is claimed again
//!   by whoever gets the lock first.
//! - **Balance.** Each instance also holds a *shared* member lock `(namespace | MEMBER_BIT, 0)`;
//!   the number of holders is the number of live instances. An instance claims partitions up to
//!   `ceil(partitions / instances)` and gives back (one per round, after its worker finished the
//!   batch in hand) those above it, so a new instance gets its share within a few rounds and the
//!   sum of the shares always covers every partition.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::worker::{durable_name, ConsumerHealth, Lease, Leased, PartitionWorker};

/// How often an instance looks at its leases, counts the instances and claims or gives back.
pub const ROUND: Duration = Duration::from_millis(500);

/// Set in the member lock's first key; partition locks never have it.
const MEMBER_BIT: i32 = 0x4000_0000;

/// The advisory-lock namespace of a stream: FNV-1a of its name, positive and below
/// [`MEMBER_BIT`].
pub fn namespace(stream: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in stream.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash & 0x3fff_ffff) as i32
}

/// The first key of a stream's member lock (the second is 0), from its [`namespace`].
pub fn member_key(namespace: i32) -> i32 {
    namespace | MEMBER_BIT
}

/// The `# HELP` text of the ownership families (`promtool check metrics` wants one on each).
pub fn describe_metrics() {
    use metrics::{describe_gauge, Unit};
    describe_gauge!(
        "projection_owned_partitions",
        Unit::Count,
        "Partitions this instance owns now"
    );
    describe_gauge!(
        "projection_partition_owned",
        "1 while this instance owns the consumer's partition, 0 after it let it go"
    );
}

/// The partitions this instance owns now, for `/metrics` and the tests.
#[derive(Debug, Default)]
pub struct Owned {
    partitions: std::sync::Mutex<Vec<u32>>,
}

impl Owned {
    pub fn partitions(&self) -> Vec<u32> {
        self.partitions
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    fn set(&self, partitions: Vec<u32>) {
        metrics::gauge!("projection_owned_partitions").set(partitions.len() as f64);
        if let Ok(mut p) = self.partitions.lock() {
            *p = partitions;
        }
    }
}

/// Claims, runs and gives back partition workers for one instance.
pub struct Coordinator {
    /// The system pool: leases are connections taken out of it (`detach`), so they run as
    /// its role.
    pub pool: PgPool,
    /// A worker with everything but its partition and lease.
    pub template: PartitionWorker,
    pub health: Arc<ConsumerHealth>,
    pub owned: Arc<Owned>,
    /// This instance's name: its member and lease connections say it in their
    /// `application_name` (`<pool's name> (<instance>)`), so the console can tell who owns what.
    pub instance: String,
}

struct Running {
    lease: Lease,
    token: CancellationToken,
    handle: JoinHandle<()>,
}

impl Coordinator {
    fn partitions(&self) -> u32 {
        self.template.stream.partitions.max(1)
    }

    fn namespace(&self) -> i32 {
        namespace(&self.template.stream.name)
    }

    /// A connection out of the pool for a lock of this instance's, named after the instance.
    async fn named_connection(&self) -> anyhow::Result<PgConnection> {
        let mut conn = self.pool.acquire().await?.detach();
        sqlx::query!(
            "select set_config('application_name', current_setting('application_name') || ' (' || $1 || ')', false)",
            self.instance,
        )
        .fetch_one(&mut conn)
        .await?;
        Ok(conn)
    }

    /// Runs until `shutdown`; then stops every worker (each finishes its batch) and releases
    /// the locks.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut member: Option<PgConnection> = None;
        let mut spare: Option<PgConnection> = None;
        let mut running: BTreeMap<u32, Running> = BTreeMap::new();
        let mut releasing: Vec<JoinHandle<()>> = Vec::new();
        // Instances start looking at different partitions, so that they do not all race for
        // partition 0 first.
        let offset = (uuid::Uuid::new_v4().as_u128() % u128::from(self.partitions())) as u32;
        let mut round = tokio::time::interval(ROUND);
        round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = round.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            releasing.retain(|h| !h.is_finished());

            // Leases that broke, workers that ended: the partition is no longer ours.
            let mut lost = Vec::new();
            for (&partition, r) in &running {
                if r.handle.is_finished() || !ping(&r.lease).await {
                    lost.push(partition);
                }
            }
            for partition in lost {
                if let Some(r) = running.remove(&partition) {
                    tracing::warn!(partition, "partition lease lost; its worker stops");
                    releasing.push(self.release(partition, r));
                }
            }

            let instances = match self.count_instances(&mut member).await {
                Ok(n) => n.max(1),
                Err(e) => {
                    // Without a count, keep what we hold (the leases are separate connections)
                    // and claim nothing new.
                    tracing::warn!(error = %e, "cannot count the projection instances");
                    member = None;
                    self.publish(&running);
                    continue;
                }
            };
            let share = self.partitions().div_ceil(instances) as usize;

            if running.len() > share {
                // Give back one per round: the newcomer claims it on its next round.
                if let Some((&partition, _)) = running.iter().next_back() {
                    if let Some(r) = running.remove(&partition) {
                        tracing::info!(partition, instances, share, "giving a partition back");
                        releasing.push(self.release(partition, r));
                    }
                }
            }
            let mut candidate = 0;
            while running.len() < share && candidate < self.partitions() {
                let partition = (offset + candidate) % self.partitions();
                candidate += 1;
                if running.contains_key(&partition) {
                    continue;
                }
                match self.claim(&mut spare, partition).await {
                    Ok(Some(lease)) => {
                        tracing::info!(partition, instances, share, "partition claimed");
                        running.insert(partition, self.start(partition, lease, &shutdown));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(partition, error = %e, "cannot claim a partition");
                        spare = None;
                        break;
                    }
                }
            }
            self.publish(&running);
        }

        for (partition, r) in std::mem::take(&mut running) {
            releasing.push(self.release(partition, r));
        }
        futures::future::join_all(releasing).await;
        self.owned.set(Vec::new());
        if let Some(conn) = member {
            let _ = conn.close().await;
        }
    }

    fn publish(&self, running: &BTreeMap<u32, Running>) {
        self.owned.set(running.keys().copied().collect());
    }

    /// Joins (takes the shared member lock) if needed, then counts the members.
    async fn count_instances(&self, member: &mut Option<PgConnection>) -> anyhow::Result<u32> {
        let key = member_key(self.namespace());
        if member.is_none() {
            let mut conn = self.named_connection().await?;
            sqlx::query!("select pg_advisory_lock_shared($1, 0)", key)
                .fetch_one(&mut conn)
                .await?;
            *member = Some(conn);
        }
        let Some(conn) = member.as_mut() else {
            unreachable!("joined above")
        };
        let count = sqlx::query_scalar!(
            r#"select count(*) as "count!" from pg_locks
                where locktype = 'advisory' and granted and objsubid = 2
                  and database = (select oid from pg_database where datname = current_database())
                  and classid = $1::int8::oid and objid = 0"#,
            i64::from(key),
        )
        .fetch_one(conn)
        .await?;
        Ok(count as u32)
    }

    /// Tries the partition's lock on the spare connection; on success that connection becomes
    /// the lease.
    async fn claim(
        &self,
        spare: &mut Option<PgConnection>,
        partition: u32,
    ) -> anyhow::Result<Option<Lease>> {
        let mut conn = match spare.take() {
            Some(conn) => conn,
            None => self.named_connection().await?,
        };
        let got = sqlx::query_scalar!(
            r#"select pg_try_advisory_lock($1, $2) as "taken!""#,
            self.namespace(),
            partition as i32,
        )
        .fetch_one(&mut conn)
        .await?;
        if got {
            Ok(Some(Arc::new(Mutex::new(Leased::new(conn)))))
        } else {
            *spare = Some(conn);
            Ok(None)
        }
    }

    fn start(&self, partition: u32, lease: Lease, shutdown: &CancellationToken) -> Running {
        let token = shutdown.child_token();
        let worker = PartitionWorker {
            partition,
            lease: Some(lease.clone()),
            ..self.template.clone()
        };
        metrics::gauge!("projection_partition_owned", "consumer" => worker.consumer_name())
            .set(1.0);
        Running {
            lease,
            handle: tokio::spawn(worker.run(token.clone())),
            token,
        }
    }

    /// Stops the worker (it finishes the batch in hand), then closes the lease, which releases
    /// the lock: nobody else can take the partition before the worker is done.
    fn release(&self, partition: u32, r: Running) -> JoinHandle<()> {
        let health = self.health.clone();
        let consumer = durable_name(partition);
        tokio::spawn(async move {
            r.token.cancel();
            let _ = r.handle.await;
            health.forget(partition);
            metrics::gauge!("projection_partition_owned", "consumer" => consumer.clone()).set(0.0);
            metrics::gauge!("projection_consumer_lag_events", "consumer" => consumer).set(0.0);
            if let Ok(conn) = Arc::try_unwrap(r.lease) {
                let _ = conn.into_inner().conn.close().await;
            }
            // Otherwise the last reference goes with the worker's clone, and dropping a
            // connection closes it too.
        })
    }
}

/// Whether the lease connection still answers. A lease busy with a batch is alive: a batch on
/// a dead connection fails by itself, and the next round finds it dead.
async fn ping(lease: &Lease) -> bool {
    let Ok(mut conn) = lease.try_lock() else {
        return true;
    };
    tokio::time::timeout(Duration::from_secs(5), conn.conn.ping())
        .await
        .is_ok_and(|r| r.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_stable_positive_and_apart_from_the_member_bit() {
        assert_eq!(namespace("VENTROS_EVENTS"), namespace("VENTROS_EVENTS"));
        assert_ne!(namespace("VENTROS_EVENTS"), namespace("TEST_1"));
        for name in ["", "VENTROS_EVENTS", "TEST_0123456789abcdef"] {
            let ns = namespace(name);
            assert!(ns >= 0 && ns & MEMBER_BIT == 0, "{name}: {ns:#x}");
        }
    }
}
