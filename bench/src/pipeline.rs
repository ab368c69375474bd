//! Scenario 8: the whole pipeline, projections live, against the peer, baseline (d)
//! ([`crate::peer`]), at 8 and 32 clients, in the same run on the same servers.
//!
//! The shape is the one issue 15 measured: `POST /contacts/{id}/tags` on 2,000 contacts for
//! ours, deposits on 2,000 accounts for the peer, each client going round its own share of the
//! ids (so neither side loses commands to concurrent appends). Ours counts only while its read
//! side keeps up: the lag of every measured command (answered → its version in `contacts`) is
//! tracked, and after each of our windows the bench waits until everything is projected before
//! the peer's window starts, so a backlog never runs on into the peer's time. The sides
//! alternate ours, peer, peer, ours, so a drift in the machine's load weighs on both alike.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{Options, TestDb, TestSystem};
use serde_json::json;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::lag;
use crate::peer::{Depositor, PeerServer};
use crate::report::{number, Percentiles, Row};
use crate::workload::{self, Api, Client, RunResult, Visible};
use crate::Sizes;

/// Contacts (ours) and accounts (the peer's) the commands are spread over.
const AGGREGATES: usize = 2_000;
/// How coarsely the lag is read (a finer poll costs our side more queries during the run).
const LAG_POLL: Duration = Duration::from_millis(10);
/// The lag counts as bounded when the last quarter of the window is not far behind the first
/// (row 2's rule) and everything is projected this soon after the window.
const CATCH_UP_BOUND: Duration = Duration::from_secs(5);

fn progress(what: impl AsRef<str>) {
    eprintln!("[bench peer] {}", what.as_ref());
}

/// One client of ours: adds a new tag to its contacts in turn. A contact's tags are counted
/// across all runs so every command adds a tag the contact does not have (an existing tag would
/// be a no-op without an event; a contact takes at most 200, far more than a run adds).
struct Tagger {
    api: Api,
    contacts: Arc<Vec<Uuid>>,
    tags_added: Arc<Vec<AtomicU32>>,
    mine: Vec<usize>,
    next: usize,
}

impl Client for Tagger {
    async fn send_next(&mut self) -> anyhow::Result<Option<Visible>> {
        let i = self.mine[self.next % self.mine.len()];
        self.next += 1;
        let n = self.tags_added[i].fetch_add(1, Ordering::Relaxed);
        let contact = self.contacts[i];
        let reply = self
            .api
            .send(
                reqwest::Method::POST,
                &format!("/contacts/{contact}/tags"),
                &json!({ "tag": format!("bench-{n}") }),
            )
            .await?;
        let version = reply["version"]
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("no version in {reply}"))?;
        Ok(Some(Visible::Contact(contact, version)))
    }
}

fn taggers(
    api: &Api,
    contacts: &Arc<Vec<Uuid>>,
    tags_added: &Arc<Vec<AtomicU32>>,
    clients: usize,
) -> Vec<Tagger> {
    (0..clients)
        .map(|c| Tagger {
            api: api.clone(),
            contacts: contacts.clone(),
            tags_added: tags_added.clone(),
            mine: (c..contacts.len()).step_by(clients).collect(),
            next: 0,
        })
        .collect()
}

async fn create_contacts(api: &Api, n: usize) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let created = chunk.iter().map(|i| async move {
            let body = json!({
                "name": format!("Peer Bench Contact {i}"),
                "email": format!("peer{i}@bench.example.com"),
                "source_channel": "whatsapp",
                "tags": ["customer"],
            });
            api.send(reqwest::Method::POST, "/contacts", &body).await
        });
        for reply in futures::future::try_join_all(created).await? {
            let id = reply["id"]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| anyhow::anyhow!("no id in {reply}"))?;
            ids.push(id);
        }
    }
    Ok(ids)
}

/// One of our windows and what its read side did.
struct OursRun {
    run: RunResult,
    /// (accepted, lag) of every measured command.
    lags: Vec<(Instant, Duration)>,
    unseen: usize,
    /// From the window's end until every event was published and projected.
    caught_up: Duration,
}

async fn ours_window(
    system: &TestSystem,
    clients: Vec<Tagger>,
    warmup: Duration,
    run: Duration,
) -> anyhow::Result<OursRun> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let url = system.db.url.clone();
    let tracker = tokio::spawn(async move {
        lag::track_polling(&url, receiver, Duration::from_secs(30), LAG_POLL).await
    });
    let result = workload::closed_loop_of(clients, warmup, run, Some(sender)).await;
    let ended = Instant::now();
    system.wait_until_projected(Duration::from_secs(300)).await;
    let caught_up = ended.elapsed();
    let report = tracker.await??;
    Ok(OursRun {
        run: result,
        lags: report.lags,
        unseen: report.unseen,
        caught_up,
    })
}

/// Whether the lag stayed bounded over a window: the last quarter's mean is not far above the
/// first's (the rule row 2 applies).
fn growing(lags: &[(Instant, Duration)]) -> bool {
    let mut by_time = lags.to_vec();
    by_time.sort_by_key(|l| l.0);
    let quarter = by_time.len() / 4;
    if quarter == 0 {
        return false;
    }
    let mean = |s: &[(Instant, Duration)]| {
        s.iter().map(|l| l.1.as_secs_f64()).sum::<f64>() / s.len() as f64
    };
    mean(&by_time[by_time.len() - quarter..]) > 2.0 * mean(&by_time[..quarter]) + 0.05
}

pub async fn rows(sizes: &Sizes) -> anyhow::Result<Vec<Row>> {
    progress("8: starting command-service and projection-service on a fresh database and stream");
    let system = TestSystem::start_with(Options {
        partitions: sizes.partitions,
        sweep_interval_ms: 15_000,
        relay_poll_ms: 1_000,
        ack_wait_secs: 3,
        service_threads: sizes.service_threads,
        ..Options::default()
    })
    .await;
    let tenant = system.tenant.clone();
    let api = Api::new(&system.command_url, tenant.project_id, &tenant.api_key);
    progress(format!("8: creating {AGGREGATES} contacts"));
    let contacts = Arc::new(create_contacts(&api, AGGREGATES).await?);
    let tags_added = Arc::new((0..AGGREGATES).map(|_| AtomicU32::new(0)).collect());
    system.wait_until_projected(Duration::from_secs(300)).await;
    sqlx::query("vacuum analyze")
        .execute(&system.db.pool)
        .await?;

    let connections = system.options.database_max_connections;
    progress(format!(
        "8: starting baseline (d), the peer (cqrs-es + postgres-es, pool of {connections}), opening {AGGREGATES} accounts"
    ));
    let peer_db = TestDb::new().await;
    let peer = PeerServer::start(&peer_db.url, connections, sizes.service_threads).await?;
    let accounts = peer.open_accounts(AGGREGATES).await?;

    let mut rows = Vec::new();
    for (clients, id) in [(8usize, "8a"), (32, "8b")] {
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for ours_first in [true, false] {
            for is_ours in [ours_first, !ours_first] {
                if is_ours {
                    progress(format!(
                        "8: ours, POST /contacts/{{id}}/tags, {clients} clients, {:?} (+{:?} warm-up), projections live",
                        sizes.peer_round, sizes.warmup
                    ));
                    let run = ours_window(
                        &system,
                        taggers(&api, &contacts, &tags_added, clients),
                        sizes.warmup,
                        sizes.peer_round,
                    )
                    .await?;
                    progress(format!(
                        "8: ours {} cmd/s, p99 {:.1} ms, {} errors; everything projected {:.2} s after the window",
                        number(run.run.per_second()),
                        run.run.latency.p99_ms,
                        run.run.errors,
                        run.caught_up.as_secs_f64()
                    ));
                    ours.push(run);
                } else {
                    progress(format!(
                        "8: baseline (d), deposits, {clients} clients, {:?} (+{:?} warm-up)",
                        sizes.peer_round, sizes.warmup
                    ));
                    let run = workload::closed_loop_of(
                        Depositor::clients(&peer.url, &accounts, clients),
                        sizes.warmup,
                        sizes.peer_round,
                        None,
                    )
                    .await;
                    progress(format!(
                        "8: baseline (d) {} cmd/s, p99 {:.1} ms, {} errors",
                        number(run.per_second()),
                        run.latency.p99_ms,
                        run.errors
                    ));
                    theirs.push(run);
                }
            }
        }
        rows.extend(compare(id, clients, ours, theirs, &peer));
    }
    peer.stop().await;
    drop(peer_db);
    system.stop().await;
    Ok(rows)
}

fn compare(
    id: &str,
    clients: usize,
    ours: Vec<OursRun>,
    theirs: Vec<RunResult>,
    peer: &PeerServer,
) -> Vec<Row> {
    let bounded = ours
        .iter()
        .all(|r| !growing(&r.lags) && r.unseen == 0 && r.caught_up <= CATCH_UP_BOUND);
    let caught_up = ours.iter().map(|r| r.caught_up).max().unwrap_or_default();
    let unseen: usize = ours.iter().map(|r| r.unseen).sum();
    let mut lags: Vec<Duration> = ours
        .iter()
        .flat_map(|r| r.lags.iter().map(|l| l.1))
        .collect();
    let lag = Percentiles::of(&mut lags);
    let ours = RunResult::combine(ours.into_iter().map(|r| r.run).collect());
    let theirs = RunResult::combine(theirs);
    for (side, run) in [("ours", &ours), ("baseline (d)", &theirs)] {
        if let Some(e) = &run.first_error {
            progress(format!(
                "8: {side}: {} commands failed, e.g. {e}",
                run.errors
            ));
        }
    }
    let view_failures = peer.view_failures.load(Ordering::Relaxed);
    let ratio = ours.per_second() / theirs.per_second();
    let met = ratio >= 1.0 && ours.latency.p99_ms <= theirs.latency.p99_ms && bounded;
    let seconds = ours.window.as_secs_f64();
    vec![
        Row::new(
            id,
            format!(
                "whole pipeline, projections live: POST /contacts/{{id}}/tags on {} contacts, {clients} clients, {seconds:.0} s in 2 windows alternating with (d) (ours, (d), (d), ours), {} errors; lag answered → in contacts p50/p99 {:.0}/{:.0} ms (read every {} ms), {}, all projected {:.1} s after a window at most, {unseen} unseen (vs baseline (d): cqrs-demo's shape, deposits on {} accounts, same clients; its p99 {:.1} ms, {} errors)",
                number(AGGREGATES as f64),
                ours.errors,
                lag.p50_ms,
                lag.p99_ms,
                LAG_POLL.as_millis(),
                if bounded { "bounded" } else { "NOT bounded" },
                caught_up.as_secs_f64(),
                number(AGGREGATES as f64),
                theirs.latency.p99_ms,
                theirs.errors
            ),
        )
        .ours(ours.per_second(), "cmd/s")
        .baseline(theirs.per_second(), "cmd/s")
        .ratio(ratio)
        .latency(&ours.latency)
        .target("≥ 1.0× (d), p99 ≤ (d)'s, lag bounded", met),
        Row::new(
            &format!("{id} (d)"),
            format!(
                "baseline (d) alone, {clients} clients, {:.0} s: its latency; {} errors, {view_failures} views not stored",
                theirs.window.as_secs_f64(),
                theirs.errors
            ),
        )
        .ours(theirs.per_second(), "cmd/s")
        .latency(&theirs.latency),
    ]
}
