//! What the fault and failover tests share: steady command traffic from several clients (over
//! one command-service instance or several), a lag monitor, and the check every scenario ends
//! with: every command that got a 2xx is in the store exactly once, every event is applied
//! exactly once (`processed_events`, read-row versions), no outbox row is stuck, and the read
//! tables equal a rebuild from the store.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use projection_service::projections::covers_sql;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::{Tenant, APPLIED_PAIRS};

/// What the clients sent and which event ids their 2xx answers named.
pub struct Traffic {
    running: Arc<AtomicBool>,
    /// The event ids of each acknowledged command that appended any.
    acked: Arc<Mutex<Vec<Vec<Uuid>>>>,
    acked_commands: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
    clients: Vec<JoinHandle<()>>,
}

/// The counts of a run, for the test's output and the closing note.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub sent: usize,
    pub acknowledged: usize,
    pub acknowledged_events: usize,
    pub stored: usize,
    /// Events applied (by each projection: checked to be the same number).
    pub applied: usize,
    pub lost: usize,
    pub duplicates: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "commands sent {}, acknowledged {} ({} events), events stored {}, applied {}, lost {}, duplicates {}",
            self.sent, self.acknowledged, self.acknowledged_events, self.stored, self.applied, self.lost, self.duplicates
        )
    }
}

impl Traffic {
    /// `clients` clients, each in a loop until [`Traffic::stop`]: create a contact, tag it, and
    /// every other round send it an inbound message (opening a session) and an agent's reply.
    /// A client whose request fails (service down, timeout) waits a little and goes on. With
    /// several command-service URLs each client sends its commands to them in turn, so a contact
    /// is created through one instance and tagged through the next.
    pub fn start(command_urls: Vec<String>, tenant: Tenant, clients: usize) -> Self {
        assert!(!command_urls.is_empty(), "a command-service URL");
        let urls = Arc::new(command_urls);
        let running = Arc::new(AtomicBool::new(true));
        let acked: Arc<Mutex<Vec<Vec<Uuid>>>> = Arc::default();
        let acked_commands = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        let handles = (0..clients)
            .map(|client| {
                let (running, acked, acked_commands, sent) = (
                    running.clone(),
                    acked.clone(),
                    acked_commands.clone(),
                    sent.clone(),
                );
                let (urls, tenant) = (urls.clone(), tenant.clone());
                tokio::spawn(async move {
                    let http = reqwest::Client::builder()
                        .timeout(Duration::from_secs(3))
                        .build()
                        .unwrap();
                    let turn = AtomicUsize::new(client);
                    // One command: its answer's body on a 2xx (event ids kept), None otherwise.
                    let command = |path: String, body: Value| {
                        let (http, urls, turn, tenant, acked, acked_commands, sent) = (
                            &http,
                            &urls,
                            &turn,
                            &tenant,
                            &acked,
                            &acked_commands,
                            &sent,
                        );
                        async move {
                            sent.fetch_add(1, Ordering::SeqCst);
                            let url = &urls[turn.fetch_add(1, Ordering::SeqCst) % urls.len()];
                            let answer = match http
                                .post(format!("{url}/v1/projects/{}{path}", tenant.project_id))
                                .bearer_auth(&tenant.api_key)
                                .json(&body)
                                .send()
                                .await
                            {
                                Ok(answer) => answer,
                                Err(_) => {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    return None;
                                }
                            };
                            if !answer.status().is_success() {
                                return None;
                            }
                            let body: Value = answer.json().await.ok()?;
                            acked_commands.fetch_add(1, Ordering::SeqCst);
                            let ids: Vec<Uuid> = body["event_ids"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|v| v.as_str().and_then(|s| Uuid::parse_str(s).ok()))
                                .collect();
                            if !ids.is_empty() {
                                acked.lock().unwrap().push(ids);
                            }
                            Some(body)
                        }
                    };
                    let mut i = 0;
                    while running.load(Ordering::SeqCst) {
                        i += 1;
                        let Some(created) = command(
                            "/contacts".into(),
                            json!({"name": format!("client{client}-{i}")}),
                        )
                        .await
                        else {
                            continue;
                        };
                        let Some(id) = created["id"].as_str().map(str::to_owned) else {
                            continue;
                        };
                        command(format!("/contacts/{id}/tags"), json!({"tag": "load"})).await;
                        if i % 2 == 0 {
                            let Some(inbound) = command(
                                format!("/contacts/{id}/messages"),
                                json!({"channel_type_id": 1, "from_contact": true}),
                            )
                            .await
                            else {
                                continue;
                            };
                            if let Some(session) = inbound["session_id"].as_str() {
                                command(
                                    format!("/sessions/{session}/messages"),
                                    json!({"from_contact": false, "agent_id": Uuid::from_u128(client as u128 + 1)}),
                                )
                                .await;
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            running,
            acked,
            acked_commands,
            sent,
            clients: handles,
        }
    }

    /// Stops the clients and waits for their last requests.
    pub async fn stop(&mut self) {
        self.running.store(false, Ordering::SeqCst);
        for client in self.clients.drain(..) {
            client.await.expect("a client panicked");
        }
    }

    pub fn acknowledged_commands(&self) -> usize {
        self.acked_commands.load(Ordering::SeqCst)
    }

    pub fn acknowledged_events(&self) -> Vec<Uuid> {
        self.acked.lock().unwrap().concat()
    }

    /// The event ids each acknowledged command answered (those that appended any).
    pub fn acknowledged_by_command(&self) -> Vec<Vec<Uuid>> {
        self.acked.lock().unwrap().clone()
    }

    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
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
                    match sqlx::query_scalar::<_, f64>(&format!(
                        "select coalesce(extract(epoch from statement_timestamp()::timestamp - min(e.created_at)), 0)::float8 \
                           from contact_event_store e \
                          where not exists (select 1 from processed_events p \
                                             where p.event_id = e.id and {})",
                        covers_sql("p", "'domain_event_logs'")
                    ))
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

/// Waits until no outbox row is pending and every stored event is in `processed_events` once
/// per projection.
pub async fn wait_converged(pool: &PgPool, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let events = count(pool, "select count(*) from contact_event_store").await;
        let pending = count(
            pool,
            "select count(*) from outbox_events where status <> 'processed'",
        )
        .await;
        let applied = count(pool, &format!("select count(*) from {APPLIED_PAIRS} a")).await;
        if pending == 0 && applied == 3 * events {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence within {within:?}: {events} events, {pending} outbox rows not processed, {applied} (event, projection) pairs in processed_events"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The messages a stream holds.
pub async fn stream_messages(nats_url: &str, auth: &platform::nats::NatsAuth, stream: &str) -> u64 {
    let js =
        async_nats::jetstream::new(platform::nats::connect(nats_url, auth).await.expect("nats"));
    js.get_stream(stream)
        .await
        .expect("stream")
        .get_info()
        .await
        .expect("stream info")
        .state
        .messages
}

/// The end check of every fault scenario, after [`wait_converged`]. Returns the counts.
pub async fn assert_end_state(
    pool: &PgPool,
    keys: &platform::personal::DataKeys,
    traffic: &Traffic,
) -> Counts {
    let acked = traffic.acknowledged_events();
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
        "enough traffic got through: {} events acknowledged, {} commands sent",
        acked.len(),
        traffic.sent()
    );
    // Exactly once: an event id is the store's primary key, so a command that took effect twice
    // shows as two contacts of one client's name (each name is sent once; a forgotten contact
    // has none).
    let duplicates = count(
        pool,
        "select count(*) from (select name from contacts where name is not null group by name having count(*) > 1) d",
    )
    .await as usize;
    assert_eq!(duplicates, 0, "a command took effect twice");
    let answered_twice = acked.len() - acked.iter().collect::<HashSet<_>>().len();
    assert_eq!(answered_twice, 0, "an event id was answered twice");
    // Applied exactly once: no (event, projection) in two processed_events rows.
    assert_eq!(
        count(
            pool,
            &format!("select count(*) from (select 1 from {APPLIED_PAIRS} a group by event_id, name having count(*) > 1) d")
        )
        .await,
        0,
        "an event was applied twice"
    );
    let applied: Vec<(String, i64)> = sqlx::query_as(&format!(
        "select name, count(*) from {APPLIED_PAIRS} a group by 1 order by 1"
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    let each = |n: i64| {
        ["contacts", "domain_event_logs", "sessions"]
            .map(|consumer| (consumer.to_owned(), n))
            .to_vec()
    };
    assert_eq!(
        applied,
        each(stored.len() as i64),
        "every event applied once by each projection"
    );
    // Read-row versions: each row is at its aggregate's last stored event.
    for (table, kind) in [("contacts", "contact"), ("sessions", "session")] {
        let behind = count(
            pool,
            &format!(
                "select count(*) from (select aggregate_id, max(sequence_number) as last \
                   from contact_event_store where aggregate_type = '{kind}' group by 1) s \
                   left join {table} r on r.id = s.aggregate_id \
                  where r.version is distinct from s.last"
            ),
        )
        .await;
        assert_eq!(behind, 0, "{table} rows not at their last stored version");
    }
    assert_eq!(
        count(
            pool,
            "select count(*) from outbox_events where status <> 'processed'"
        )
        .await,
        0,
        "an outbox row is stuck"
    );
    assert_eq!(
        count(pool, "select count(*) from outbox_events").await,
        0,
        "a published outbox row was kept (the relay deletes what it published)"
    );
    let diffs = replay_tool::verify(pool, keys, None, 500, &|_, _| {})
        .await
        .expect("verify");
    assert!(
        diffs.is_empty(),
        "read tables differ from a rebuild: {diffs:?}"
    );
    Counts {
        sent: traffic.sent(),
        acknowledged: traffic.acknowledged_commands(),
        acknowledged_events: acked.len(),
        stored: stored.len(),
        applied: stored.len(),
        lost: lost.len(),
        duplicates,
    }
}
