//! Scenario 10: the integrations. 10a: webhook deliveries per second to a local receiver with
//! 50 subscriptions, from a backlog (the dispatcher stopped while the events are written, then
//! started), against the same receiver posted to directly with as many requests in flight.
//! 10b: the change feed's latency, from a command's answer to its event on `GET /changes`, at
//! 300 commands/s, against the read model's lag of the same commands measured beside it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use e2e::{Options, TestSystem};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::report::{number, Percentiles, Row};
use crate::workload::{self, Accepted, Api, Visible};
use crate::{lag, Sizes};

use super::{progress, secs};

/// Subscriptions of 10a.
const SUBSCRIPTIONS: usize = 50;

pub(super) async fn rows(sizes: &Sizes) -> anyhow::Result<Vec<Row>> {
    progress("10: starting both services, webhooks on");
    let mut system = TestSystem::start_with(Options {
        partitions: sizes.partitions,
        service_threads: sizes.service_threads,
        ..Options::default()
    })
    .await;
    let mut rows = deliveries(sizes, &mut system).await?;
    rows.extend(feed(sizes, &system).await?);
    system.stop().await;
    Ok(rows)
}

/// A local receiver that answers every POST 204 and counts them, with the time of the last.
struct Receiver {
    url: String,
    received: Arc<AtomicU64>,
    last: Arc<Mutex<Option<Instant>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Self> {
        let received = Arc::new(AtomicU64::new(0));
        let last: Arc<Mutex<Option<Instant>>> = Arc::default();
        let (r, l) = (received.clone(), last.clone());
        let app = axum::Router::new().route(
            "/hook",
            post(move |_body: axum::body::Bytes| {
                let (r, l) = (r.clone(), l.clone());
                async move {
                    r.fetch_add(1, Ordering::Relaxed);
                    *l.lock().unwrap() = Some(Instant::now());
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url,
            received,
            last,
            server,
        })
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// 10a.
async fn deliveries(sizes: &Sizes, system: &mut TestSystem) -> anyhow::Result<Vec<Row>> {
    let contacts = if sizes.mode == "quick" { 200 } else { 1_000 };
    let receiver = Receiver::start().await?;
    let http = workload::http_client();
    let mut subscriptions = Vec::with_capacity(SUBSCRIPTIONS);
    for i in 0..SUBSCRIPTIONS {
        let made = http
            .post(format!(
                "{}/v1/projects/{}/webhooks",
                system.command_url, system.tenant.project_id
            ))
            .bearer_auth(&system.tenant.api_key)
            .json(&json!({"url": receiver.url, "events": ["contact.created"], "description": format!("bench {i}")}))
            .send()
            .await?;
        anyhow::ensure!(
            made.status().is_success(),
            "subscription {i}: {}",
            made.status()
        );
        let made: Value = made.json().await?;
        subscriptions.push(made["id"].as_str().unwrap_or_default().to_owned());
    }
    // The backlog: the dispatcher (in projection-service) stopped while the events are stored.
    system.stop_projection().await;
    progress(format!(
        "10a: writing {contacts} contacts ({} deliveries) with the dispatcher stopped",
        contacts * SUBSCRIPTIONS
    ));
    let api = Api::new(
        &system.command_url,
        system.tenant.project_id,
        &system.tenant.api_key,
    );
    futures::stream::iter(0..contacts)
        .for_each_concurrent(8, |i| {
            let api = api.clone();
            async move {
                let made = api
                    .send(
                        reqwest::Method::POST,
                        "/contacts",
                        &json!({"name": format!("hooked {i}")}),
                    )
                    .await;
                assert!(made.is_ok(), "contact {i}: {made:?}");
            }
        })
        .await;
    let expected = (contacts * SUBSCRIPTIONS) as u64;
    progress("10a: starting the dispatcher and timing the deliveries");
    let started = Instant::now();
    system.start_projection().await;
    let deadline = started + Duration::from_secs(600);
    while receiver.received() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = receiver.received();
    let took = receiver
        .last
        .lock()
        .unwrap()
        .map_or(started.elapsed(), |l| l - started);
    let ours = delivered as f64 / took.as_secs_f64();

    // The baseline: the same receiver, posted to directly with as many requests in flight as
    // the dispatcher may have, bodies of a delivery's size.
    use projection_service::webhooks::{IN_FLIGHT, PER_SUBSCRIPTION};
    let in_flight = IN_FLIGHT.min(SUBSCRIPTIONS * PER_SUBSCRIPTION);
    progress(format!(
        "10a: baseline, {expected} direct POSTs, {in_flight} in flight"
    ));
    let body = Arc::new(
        json!({"id": Uuid::new_v4(), "type": "contact.created", "occurred_at": "2026-12-03T00:00:00Z",
               "project_id": Uuid::new_v4(), "aggregate_type": "contact", "aggregate_id": Uuid::new_v4(),
               "version": 1, "data": {"name": "hooked 1", "email": null, "phone": null, "tags": []}})
        .to_string(),
    );
    let before = receiver.received();
    let direct = Instant::now();
    futures::stream::iter(0..expected)
        .for_each_concurrent(in_flight, |_| {
            let (http, url, body) = (http.clone(), receiver.url.clone(), body.clone());
            async move {
                let _ = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.as_str().to_owned())
                    .send()
                    .await;
            }
        })
        .await;
    let direct_took = direct.elapsed();
    let base = (receiver.received() - before) as f64 / direct_took.as_secs_f64();
    // 10b measures the feed alone: fifty subscriptions to every creation would have the
    // dispatcher posting thousands of deliveries a second beside it.
    for id in &subscriptions {
        let deleted = http
            .delete(format!(
                "{}/v1/projects/{}/webhooks/{id}",
                system.command_url, system.tenant.project_id
            ))
            .bearer_auth(&system.tenant.api_key)
            .send()
            .await?;
        anyhow::ensure!(
            deleted.status().is_success(),
            "deleting subscription {id}: {}",
            deleted.status()
        );
    }
    progress(format!(
        "10a: {} of {expected} delivered in {:.1} s ({}/s); direct {}/s",
        number(delivered as f64),
        took.as_secs_f64(),
        number(ours),
        number(base)
    ));
    Ok(vec![Row::new(
        "10a",
        format!(
            "webhook deliveries from a backlog of {contacts} events × {SUBSCRIPTIONS} subscriptions to a local receiver: taken in from the store, signed, sent, recorded; {} of {expected} delivered (vs the receiver posted to directly, {in_flight} in flight)",
            number(delivered as f64)
        ),
    )
    .ours(ours, "deliveries/s")
    .baseline(base, "posts/s")
    .ratio(ours / base)
    .target("≥ 2,000 deliveries/s", ours >= 2_000.0 && delivered == expected)])
}

/// 10b.
async fn feed(sizes: &Sizes, system: &TestSystem) -> anyhow::Result<Vec<Row>> {
    let rate = 300.0;
    progress(format!(
        "10b: the change feed's latency at {rate} commands/s for {} (+{} warm-up)",
        secs(sizes.lag_run),
        secs(sizes.warmup)
    ));
    // The feed, read as a client reads it: each event's (aggregate, version) and when it came.
    let seen: Arc<Mutex<HashMap<(Uuid, i64), Instant>>> = Arc::default();
    let response = reqwest::Client::new()
        .get(format!(
            "{}/v1/projects/{}/changes",
            system.query_url, system.tenant.project_id
        ))
        .bearer_auth(&system.tenant.api_key)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "the feed: {}",
        response.status()
    );
    let reader = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut response = response;
            let mut buffer = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                let now = Instant::now();
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
                        continue;
                    };
                    let Ok(event) = serde_json::from_str::<Value>(data.trim()) else {
                        continue;
                    };
                    let id = event["aggregate_id"]
                        .as_str()
                        .and_then(|s| Uuid::parse_str(s).ok());
                    if let (Some(id), Some(version)) = (id, event["version"].as_i64()) {
                        seen.lock().unwrap().insert((id, version), now);
                    }
                }
            }
        })
    };
    // Every accepted command goes to the read-model tracker (the baseline) and is kept here.
    let (sender, mut accepted) = mpsc::unbounded_channel::<Accepted>();
    let (to_tracker, tracker_side) = mpsc::unbounded_channel();
    let answered: Arc<Mutex<Vec<(Uuid, i64, Instant)>>> = Arc::default();
    let forwarder = {
        let answered = answered.clone();
        tokio::spawn(async move {
            while let Some(a) = accepted.recv().await {
                let (id, version) = match a.visible {
                    Visible::Contact(id, v) | Visible::Session(id, v) => (id, v),
                };
                if a.measured {
                    answered.lock().unwrap().push((id, version, a.accepted));
                }
                let _ = to_tracker.send(a);
            }
        })
    };
    let url = system.db.url.clone();
    let tracker =
        tokio::spawn(async move { lag::track(&url, tracker_side, Duration::from_secs(30)).await });
    let api = Api::new(
        &system.command_url,
        system.tenant.project_id,
        &system.tenant.api_key,
    );
    let run = workload::open_loop(&api, 64, rate, sizes.warmup, sizes.lag_run, 101, sender).await;
    forwarder.await?;
    let read_model = tracker.await??;
    // The last events reach the feed within a moment; then it is read.
    tokio::time::sleep(Duration::from_secs(2)).await;
    reader.abort();
    let seen = seen.lock().unwrap().clone();
    let answered = answered.lock().unwrap().clone();
    let mut latencies = Vec::with_capacity(answered.len());
    let mut missing = 0;
    for (id, version, at) in &answered {
        match seen.get(&(*id, *version)) {
            Some(received) => latencies.push(received.saturating_duration_since(*at)),
            None => missing += 1,
        }
    }
    let ours = Percentiles::of(&mut latencies);
    let mut lags: Vec<Duration> = read_model.lags.iter().map(|l| l.1).collect();
    let base = Percentiles::of(&mut lags);
    progress(format!(
        "10b: achieved {}/s; feed p50 {:.1} ms p99 {:.1} ms ({missing} never on the feed); read model p99 {:.1} ms",
        number(run.per_second()),
        ours.p50_ms,
        ours.p99_ms,
        base.p99_ms
    ));
    Ok(vec![Row::new(
        "10b",
        format!(
            "change feed latency, command answered → its event on GET /changes, {} commands/s achieved, {}, realistic mix, {missing} of {} never seen (vs the read model's lag of the same commands)",
            number(run.per_second()),
            secs(sizes.lag_run),
            answered.len()
        ),
    )
    .ours(ours.p99_ms, "ms p99")
    .baseline(base.p99_ms, "ms p99")
    .ratio(ours.p99_ms / base.p99_ms)
    .latency(&ours)
    .target(
        "p99 < 100 ms at 300/s",
        ours.p99_ms < 100.0 && missing == 0 && run.per_second() >= 0.95 * rate,
    )])
}
