//! The realistic HTTP workload: virtual clients that each create a contact (profile and tags),
//! then run one or two conversations with it. An inbound message opens a session, 5–50 messages
//! go back and forth, an agent is assigned, the session is summarised and ended.
//!
//! A [`Script`] sends exactly one command per [`Script::step`], so the same clients serve a
//! closed loop (each client sends its next command as soon as the previous one is answered) and
//! an open loop at a fixed rate (each command waits for a ticket from a pacer).
//!
//! The closed loop drives any [`Client`], so other request shapes (one command on many
//! contacts, the peer's deposits) are measured by the same loop, with the same HTTP client
//! settings and the same counting.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use uuid::Uuid;

use crate::report::Percentiles;

const TAGS: [&str; 8] = [
    "vip",
    "lead",
    "customer",
    "churn-risk",
    "newsletter",
    "b2b",
    "trial",
    "support",
];
const LANGUAGES: [&str; 3] = ["en", "pt", "es"];
const SENTIMENTS: [&str; 4] = ["positive", "neutral", "negative", "mixed"];

/// The command API of one tenant's project.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

/// The HTTP client every load generator uses, whichever server it drives.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

impl Api {
    pub fn new(command_url: &str, project_id: Uuid, api_key: &str) -> Self {
        Self {
            http: http_client(),
            base: format!("{command_url}/v1/projects/{project_id}"),
            key: api_key.to_owned(),
        }
    }

    /// Sends one request; any answer other than 2xx is an error.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{path}: {status} {body}");
        Ok(body)
    }
}

/// Which read row shows a command's effect, and from which version on.
#[derive(Debug, Clone, Copy)]
pub enum Visible {
    Contact(Uuid, i64),
    Session(Uuid, i64),
}

#[derive(Debug)]
enum State {
    NewContact,
    OpenSession {
        contact: Uuid,
        sessions_left: u32,
    },
    InSession {
        contact: Uuid,
        sessions_left: u32,
        session: Uuid,
        messages_left: u32,
        sent: u32,
        agent: Uuid,
        assigned: bool,
        summarized: bool,
    },
}

/// One virtual client.
pub struct Script {
    rng: StdRng,
    state: State,
    agents: Arc<Vec<Uuid>>,
}

fn id_of(body: &Value, field: &str) -> anyhow::Result<Uuid> {
    body[field]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} in {body}"))
}

fn version_of(body: &Value, field: &str) -> anyhow::Result<i64> {
    body[field]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no {field} in {body}"))
}

impl Script {
    pub fn new(seed: u64, agents: Arc<Vec<Uuid>>) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            state: State::NewContact,
            agents,
        }
    }

    /// Sends the next command of this client's conversation; on a failure the client starts over
    /// with a new contact (so one refused command does not wedge it).
    pub async fn step(&mut self, api: &Api) -> anyhow::Result<Visible> {
        let result = self.try_step(api).await;
        if result.is_err() {
            self.state = State::NewContact;
        }
        result
    }

    async fn try_step(&mut self, api: &Api) -> anyhow::Result<Visible> {
        use reqwest::Method;
        let state = std::mem::replace(&mut self.state, State::NewContact);
        match state {
            State::NewContact => {
                let n: u64 = self.rng.random();
                let tag_count = self.rng.random_range(1..=3);
                let tags: Vec<&str> = (0..tag_count)
                    .map(|_| TAGS[self.rng.random_range(0..TAGS.len())])
                    .collect();
                let body = json!({
                    "name": format!("Bench Contact {n:x}"),
                    "email": format!("c{n:x}@bench.example.com"),
                    "phone": format!("+55119{:08}", n % 100_000_000),
                    "external_id": format!("crm-{n:x}"),
                    "source_channel": "whatsapp",
                    "language": LANGUAGES[self.rng.random_range(0..LANGUAGES.len())],
                    "timezone": "America/Sao_Paulo",
                    "tags": tags,
                });
                let reply = api.send(Method::POST, "/contacts", &body).await?;
                let contact = id_of(&reply, "id")?;
                self.state = State::OpenSession {
                    contact,
                    sessions_left: self.rng.random_range(1..=2),
                };
                Ok(Visible::Contact(contact, version_of(&reply, "version")?))
            }
            State::OpenSession {
                contact,
                sessions_left,
            } => {
                let body = json!({"channel_type_id": 1, "from_contact": true});
                let reply = api
                    .send(
                        Method::POST,
                        &format!("/contacts/{contact}/messages"),
                        &body,
                    )
                    .await?;
                let session = id_of(&reply, "session_id")?;
                let version = version_of(&reply, "session_version")?;
                self.state = State::InSession {
                    contact,
                    sessions_left,
                    session,
                    messages_left: self.rng.random_range(5..=50) - 1,
                    sent: 1,
                    agent: self.agents[self.rng.random_range(0..self.agents.len())],
                    assigned: false,
                    summarized: false,
                };
                Ok(Visible::Session(session, version))
            }
            State::InSession {
                contact,
                sessions_left,
                session,
                messages_left,
                sent,
                agent,
                assigned,
                summarized,
            } => {
                let path = format!("/sessions/{session}");
                let mut next = State::InSession {
                    contact,
                    sessions_left,
                    session,
                    messages_left,
                    sent,
                    agent,
                    assigned,
                    summarized,
                };
                let reply = if !assigned && sent >= 2 {
                    let body = json!({"agent_id": agent, "source": "automatic", "strategy": "round_robin"});
                    if let State::InSession { assigned, .. } = &mut next {
                        *assigned = true;
                    }
                    api.send(Method::POST, &format!("{path}/agents"), &body)
                        .await?
                } else if messages_left > 0 {
                    // The contact opened; the agent answers second; then either side.
                    let from_contact = sent != 1 && self.rng.random_bool(0.5);
                    let body = if from_contact {
                        json!({"from_contact": true})
                    } else {
                        json!({"from_contact": false, "agent_id": agent})
                    };
                    if let State::InSession {
                        messages_left,
                        sent,
                        ..
                    } = &mut next
                    {
                        *messages_left -= 1;
                        *sent += 1;
                    }
                    api.send(Method::POST, &format!("{path}/messages"), &body)
                        .await?
                } else if !summarized {
                    let body = json!({
                        "summary": format!("Talked about pricing and onboarding ({sent} messages)"),
                        "sentiment": SENTIMENTS[self.rng.random_range(0..SENTIMENTS.len())],
                        "sentiment_score": self.rng.random_range(-1.0..=1.0f64),
                        "topics": ["pricing", "onboarding"],
                        "next_steps": ["send proposal"],
                        "key_entities": {"plan": "pro", "seats": 12},
                    });
                    if let State::InSession { summarized, .. } = &mut next {
                        *summarized = true;
                    }
                    api.send(Method::PUT, &format!("{path}/summary"), &body)
                        .await?
                } else {
                    let body = json!({"reason": "agent_close"});
                    let reply = api
                        .send(Method::POST, &format!("{path}/end"), &body)
                        .await?;
                    next = if sessions_left > 1 {
                        State::OpenSession {
                            contact,
                            sessions_left: sessions_left - 1,
                        }
                    } else {
                        State::NewContact
                    };
                    reply
                };
                self.state = next;
                Ok(Visible::Session(session, version_of(&reply, "version")?))
            }
        }
    }
}

/// One virtual client of a closed loop.
pub trait Client: Send + 'static {
    /// Sends this client's next request and waits for the answer: `Err` on a failure or any
    /// answer other than 2xx; `Some` names the read row that will show the command's effect,
    /// where the server has a read side that lags.
    fn send_next(&mut self) -> impl Future<Output = anyhow::Result<Option<Visible>>> + Send;
}

/// The realistic mix: a [`Script`] against our command API.
struct Conversation {
    script: Script,
    api: Api,
}

impl Client for Conversation {
    async fn send_next(&mut self) -> anyhow::Result<Option<Visible>> {
        self.script.step(&self.api).await.map(Some)
    }
}

pub fn agents() -> Arc<Vec<Uuid>> {
    Arc::new((0..20).map(|_| Uuid::new_v4()).collect())
}

/// What a timed run did inside its measuring window. A command counts when it was sent inside
/// the window, whenever its answer came: a stall at the end of a run cannot hide.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub completed: u64,
    pub errors: u64,
    pub window: Duration,
    pub latency: Percentiles,
    pub first_error: Option<String>,
    /// Every latency of the window, sorted (so that runs can be combined).
    pub samples: Vec<Duration>,
}

impl RunResult {
    pub fn per_second(&self) -> f64 {
        self.completed as f64 / self.window.as_secs_f64()
    }

    /// Several runs of the same side as one: their windows added, their samples pooled.
    pub fn combine(runs: Vec<RunResult>) -> RunResult {
        let mut all = Window::default();
        let mut window = Duration::ZERO;
        for run in runs {
            window += run.window;
            all.latencies.extend(run.samples);
            all.errors += run.errors;
            if all.first_error.is_none() {
                all.first_error = run.first_error;
            }
        }
        all.into_result(window)
    }
}

/// Collects samples of the measuring window from many tasks.
#[derive(Default)]
pub struct Window {
    pub latencies: Vec<Duration>,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// `clients` virtual clients of the realistic mix, each sending its next command as soon as the
/// last is answered, for `warmup` (not counted) and then `duration`.
pub async fn closed_loop(
    api: &Api,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    seed: u64,
) -> RunResult {
    let agents = agents();
    let clients = (0..clients).map(|c| Conversation {
        script: Script::new(seed ^ (c as u64).wrapping_mul(0x9e37_79b9), agents.clone()),
        api: api.clone(),
    });
    closed_loop_of(clients, warmup, duration, None).await
}

/// A closed loop of the given clients, each sending its next request as soon as the last is
/// answered, for `warmup` (not counted) and then `duration`. Every command that names a read
/// row is sent to `accepted`, if given, for a lag tracker.
pub async fn closed_loop_of<C: Client>(
    clients: impl IntoIterator<Item = C>,
    warmup: Duration,
    duration: Duration,
    accepted: Option<mpsc::UnboundedSender<Accepted>>,
) -> RunResult {
    let started = Instant::now();
    let measure_from = started + warmup;
    let deadline = measure_from + duration;
    let mut tasks = Vec::new();
    for mut client in clients {
        let accepted = accepted.clone();
        tasks.push(tokio::spawn(async move {
            let mut window = Window::default();
            loop {
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                let result = client.send_next().await;
                let done = Instant::now();
                let measured = sent >= measure_from;
                if let (Ok(Some(visible)), Some(accepted)) = (&result, &accepted) {
                    let _ = accepted.send(Accepted {
                        visible: *visible,
                        accepted: done,
                        measured,
                    });
                }
                if !measured {
                    continue;
                }
                match result {
                    Ok(_) => window.latencies.push(done - sent),
                    Err(e) => {
                        window.errors += 1;
                        window.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            window
        }));
    }
    drop(accepted);
    merge(futures::future::join_all(tasks).await, duration)
}

impl Window {
    fn into_result(mut self, window: Duration) -> RunResult {
        RunResult {
            completed: self.latencies.len() as u64,
            errors: self.errors,
            window,
            latency: Percentiles::of(&mut self.latencies),
            first_error: self.first_error,
            samples: self.latencies,
        }
    }
}

/// The windows of a run's tasks as one result.
pub fn merge(
    windows: Vec<Result<Window, tokio::task::JoinError>>,
    duration: Duration,
) -> RunResult {
    let mut all = Window::default();
    for w in windows.into_iter().flatten() {
        all.latencies.extend(w.latencies);
        all.errors += w.errors;
        if all.first_error.is_none() {
            all.first_error = w.first_error;
        }
    }
    all.into_result(duration)
}

/// A command accepted at `accepted`, whose effect the lag tracker waits to see.
pub struct Accepted {
    pub visible: Visible,
    pub accepted: Instant,
    pub measured: bool,
}

/// An open loop: commands are released at `rate` per second (a ticket each, handed out every
/// 5 ms; tickets that no client is free to take are dropped, so a system that cannot keep up
/// shows a lower achieved rate instead of a growing queue inside the generator). Every accepted
/// command is sent to `accepted`.
pub async fn open_loop(
    api: &Api,
    clients: usize,
    rate: f64,
    warmup: Duration,
    duration: Duration,
    seed: u64,
    accepted: mpsc::UnboundedSender<Accepted>,
) -> RunResult {
    let agents = agents();
    let tickets = Arc::new(Semaphore::new(0));
    let started = Instant::now();
    let measure_from = started + warmup;
    let deadline = measure_from + duration;
    let released = Arc::new(AtomicU64::new(0));
    let pacer = {
        let tickets = tickets.clone();
        let released = released.clone();
        tokio::spawn(async move {
            let tick = Duration::from_millis(5);
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let cap = (rate * 0.05).max(1.0) as usize;
            let mut owed = 0.0f64;
            let mut last = Instant::now();
            loop {
                interval.tick().await;
                let now = Instant::now();
                if now >= deadline {
                    tickets.close();
                    return;
                }
                owed += rate * (now - last).as_secs_f64();
                last = now;
                let whole = owed.floor();
                owed -= whole;
                let room = cap.saturating_sub(tickets.available_permits());
                let n = (whole as usize).min(room);
                tickets.add_permits(n);
                released.fetch_add(n as u64, Ordering::Relaxed);
            }
        })
    };
    let mut tasks = Vec::new();
    for c in 0..clients {
        let api = api.clone();
        let agents = agents.clone();
        let tickets = tickets.clone();
        let accepted = accepted.clone();
        tasks.push(tokio::spawn(async move {
            let mut script = Script::new(seed ^ (c as u64).wrapping_mul(0x9e37_79b9), agents);
            let mut window = Window::default();
            while let Ok(ticket) = tickets.acquire().await {
                ticket.forget();
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                let result = script.step(&api).await;
                let done = Instant::now();
                let measured = sent >= measure_from;
                match result {
                    Ok(visible) => {
                        if measured {
                            window.latencies.push(done - sent);
                        }
                        let _ = accepted.send(Accepted {
                            visible,
                            accepted: done,
                            measured,
                        });
                    }
                    Err(e) if measured => {
                        window.errors += 1;
                        window.first_error.get_or_insert_with(|| e.to_string());
                    }
                    Err(_) => {}
                }
            }
            window
        }));
    }
    drop(accepted);
    let result = merge(futures::future::join_all(tasks).await, duration);
    let _ = pacer.await;
    result
}
