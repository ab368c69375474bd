//! What the fault and failover tests share: steady client traffic that keeps every acknowledged
//! event id, a lag monitor, and the end check (every acknowledged event in the store exactly
//! once, each event in the stream once and applied once, no stuck outbox row, read tables equal
//! a rebuild).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::Tenant;

/// Clients that create contacts and tag them until stopped; the event ids of each 2xx answer
/// are kept. With several command-service URLs, each client alternates between them, so a
/// contact is created through one instance and tagged through the next.
pub struct Traffic {
    running: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Uuid>>>,
    sent: Arc<Mutex<usize>>,
    handles: Vec<JoinHandle<()>>,
}

impl Traffic {
    pub fn start(command_urls: Vec<String>, tenant: Tenant, clients: usize) -> Self {
        assert!(!command_urls.is_empty());
        let running = Arc::new(AtomicBool::new(true));
        let acked: Arc<Mutex<Vec<Uuid>>> = Arc::default();
        let sent: Arc<Mutex<usize>> = Arc::default();
        let urls = Arc::new(command_urls);
        let handles = (0..clients)
            .map(|client| {
                let (running, acked, sent) = (running.clone(), acked.clone(), sent.clone());
                let (urls, tenant) = (urls.clone(), tenant.clone());
                tokio::spawn(async move {
                    let http = reqwest::Client::builder()
                        .timeout(Duration::from_secs(3))
                        .build()
                        .unwrap();
                    let mut turn = client;
                    let mut base = || {
                        turn += 1;
                        format!(
                            "{}/v1/projects/{}",
                            urls[turn % urls.len()],
                            tenant.project_id
                        )
                    };
                    let keep = |body: &Value| {
                        let ids: Vec<Uuid> = body["event_ids"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|v| v.as_str().and_then(|s| Uuid::parse_str(s).ok()))
                            .collect();
                        acked.lock().unwrap().extend(ids);
                    };
                    let mut i = 0;
                    while running.load(Ordering::SeqCst) {
                        i += 1;
                        *sent.lock().unwrap() += 1;
                        let created = http
                            .post(format!("{}/contacts", base()))
                            .bearer_auth(&tenant.api_key)
                            .json(&json!({"name": format!("client{client}-{i}")}))
                            .send()
                            .await;
                        let Ok(created) = created else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        if !created.status().is_success() {
                            continue;
                        }
                        let body: Value = created.json().await.unwrap_or(Value::Null);
                        keep(&body);
                        let Some(id) = body["id"].as_str() else {
                            continue;
                        };
                        *sent.lock().unwrap() += 1;
                        if let Ok(tagged) = http
                            .post(format!("{}/contacts/{id}/tags", base()))
                            .bearer_auth(&tenant.api_key)
                            .json(&json!({"tag": "crash-tested"}))
                            .send()
                            .await
                        {
                            if tagged.status().is_success() {
                                keep(&tagged.json().await.unwrap_or(Value::Null));
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            running,
            acked,
            sent,
            handles,
        }
    }

    /// Commands sent so far.
    pub fn sent(&self) -> usize {
        *self.sent.lock().unwrap()
    }

    /// Event ids acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops the clients; returns the commands sent and the acknowledged event ids.
    pub async fn stop(self) -> (usize, Vec<Uuid>) {
        self.running.store(false, Ordering::SeqCst);
        for handle in self.handles {
            handle.await.unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        let sent = *self.sent.lock().unwrap();
        (sent, acked)
    }
}

/// End-to-end lag, sampled: the age of the oldest stored event not yet applied (0 when every
/// event is applied).
pub struct LagMonitor {
    samples: Arc<Mutex<Vec<(tokio::time::Instant, f64)>>>,
    handle: JoinHandle<()>,
}

/// The lag above which the system counts as behind.
pub const LAGGING_SECS: f64 = 1.0;

impl LagMonitor {
    pub fn start(pool: PgPool) -> Self {
        let samples: Arc<Mutex<Vec<(tokio::time::Instant, f64)>>> = Arc::default();
        let handle = tokio::spawn({
            let samples = samples.clone();
            async move {
                // A connection of its own: a sample never waits for the pool.
                let mut conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>> = None;
                loop {
                    if conn.is_none() {
                        conn = pool.acquire().await.ok();
                        // The tables grow faster than autovacuum analyses them; on stale
                        // statistics the planner picks a nested-loop anti-join that takes
                        // seconds. A hash anti-join stays linear.
                        if let Some(c) = conn.as_mut() {
                            if sqlx::query("set enable_nestloop = off")
                                .execute(&mut **c)
                                .await
                                .is_err()
                            {
                                conn = None;
                            }
                        }
                    }
                    let Some(c) = conn.as_mut() else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    // Stamped when asked, not when answered: on a starved machine the answer can
                    // take seconds, and the lag it reports is the lag at the query's snapshot.
                    let asked = tokio::time::Instant::now();
                    match sqlx::query_scalar::<_, f64>(
                        "select coalesce(extract(epoch from statement_timestamp()::timestamp - min(e.created_at)), 0)::float8 \
                           from contact_event_store e \
                          where not exists (select 1 from processed_events p \
                                             where p.event_id = e.id and p.consumer_name = 'domain_event_logs')",
                    )
                    .fetch_one(&mut **c)
                    .await
                    {
                        Ok(lag) => samples.lock().unwrap().push((asked, lag)),
                        Err(_) => conn = None,
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Self { samples, handle }
    }

    /// The worst lag sampled between `from` and `to`.
    pub fn worst(&self, from: tokio::time::Instant, to: tokio::time::Instant) -> f64 {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, lag)| *lag)
            .fold(0.0, f64::max)
    }

    /// The worst lag of each second from `since` to `until`, e.g. `0.1 0.2 3.8 - 0.1` (`-`: no
    /// sample that second).
    pub fn timeline(&self, since: tokio::time::Instant, until: tokio::time::Instant) -> String {
        let samples = self.samples.lock().unwrap();
        let mut seconds: Vec<Option<f64>> = Vec::new();
        for (t, lag) in samples.iter().filter(|(t, _)| *t >= since && *t <= until) {
            let i = (*t - since).as_secs() as usize;
            if seconds.len() <= i {
                seconds.resize(i + 1, None);
            }
            seconds[i] = Some(seconds[i].map_or(*lag, |worst| worst.max(*lag)));
        }
        seconds
            .iter()
            .map(|l| l.map_or("-".to_owned(), |l| format!("{l:.1}")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// How long after `since` the lag was last above [`LAGGING_SECS`] (zero if it never was),
    /// looking at the samples up to `until`; `None` if it was still above at `until`.
    pub fn recovered_after(
        &self,
        since: tokio::time::Instant,
        until: tokio::time::Instant,
    ) -> Option<Duration> {
        let samples = self.samples.lock().unwrap();
        let window: Vec<_> = samples
            .iter()
            .filter(|(t, _)| *t >= since && *t <= until)
            .collect();
        if window.last().is_some_and(|(_, lag)| *lag > LAGGING_SECS) {
            return None;
        }
        Some(
            window
                .iter()
                .rev()
                .find(|(_, lag)| *lag > LAGGING_SECS)
                .map(|(t, _)| *t - since)
                .unwrap_or_default(),
        )
    }
}

impl Drop for LagMonitor {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub use crate::traffic::wait_converged;

/// The end check's figures.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub sent: usize,
    pub acknowledged: usize,
    pub stored: usize,
    pub applied: usize,
    pub lost: usize,
    pub duplicates: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "commands sent {}, events acknowledged {}, events stored {}, applied {}, lost {}, duplicates {}",
            self.sent, self.acknowledged, self.stored, self.applied, self.lost, self.duplicates
        )
    }
}

/// After [`wait_converged`]: every acknowledged event is in the store; no command took effect
/// twice; each event is applied once per projection and is in the stream once; the read tables
/// equal a rebuild. Panics otherwise; returns the figures.
pub async fn end_check(
    pool: &PgPool,
    nats_url: &str,
    stream: &str,
    sent: usize,
    acked: &[Uuid],
) -> Counts {
    let stored: Vec<Uuid> = sqlx::query_scalar("select id from contact_event_store")
        .fetch_all(pool)
        .await
        .unwrap();
    let stored_set: HashSet<Uuid> = stored.iter().copied().collect();
    let lost: Vec<&Uuid> = acked.iter().filter(|id| !stored_set.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged events missing from the store: {lost:?}"
    );
    assert!(
        acked.len() > 20,
        "enough traffic got through: {} of {sent} commands acknowledged",
        acked.len()
    );
    let twice = count(
        pool,
        "select count(*) from (select name from contacts group by name having count(*) > 1) d",
    )
    .await;
    assert_eq!(twice, 0, "a command took effect twice");
    let applied_twice = count(pool, "select count(*) from (select event_id, consumer_name from processed_events group by 1, 2 having count(*) > 1) d").await;
    assert_eq!(applied_twice, 0, "an event applied twice");
    let applied = count(
        pool,
        "select count(distinct event_id) from processed_events where consumer_name = 'domain_event_logs'",
    )
    .await as usize;
    assert_eq!(applied, stored.len(), "every stored event applied");
    let client = platform::nats::connect(nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let info = js
        .get_stream(stream)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(
        info.state.messages as usize,
        stored.len(),
        "each event in the stream exactly once"
    );
    let diffs = replay_tool::verify(pool, None, 500, &|_, _| {})
        .await
        .unwrap();
    assert!(
        diffs.is_empty(),
        "read tables differ from a rebuild: {diffs:?}"
    );
    Counts {
        sent,
        acknowledged: acked.len(),
        stored: stored.len(),
        applied,
        lost: lost.len(),
        duplicates: (twice + applied_twice) as usize,
    }
}
