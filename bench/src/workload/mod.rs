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

use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};
use uuid::Uuid;

use crate::report::Percentiles;

mod script;

use script::Conversation;
pub use script::{agents, Script};

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

/// One virtual client of a closed loop.
pub trait Client: Send + 'static {
    /// Sends this client's next request and waits for the answer: `Err` on a failure or any
    /// answer other than 2xx; `Some` names the read row that will show the command's effect,
    /// where the server has a read side that lags.
    fn send_next(&mut self) -> impl Future<Output = anyhow::Result<Option<Visible>>> + Send;
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
