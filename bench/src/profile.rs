//! `bench profile-statements`: where the database time of a command and of a projection batch
//! goes, without `pg_stat_statements` (not installed on these machines). Statement logging
//! (`log_min_duration_statement = 0`) is switched on for the benchmark's own database only, its
//! connections are recycled so that the setting applies, a short closed loop of HTTP commands
//! runs with the projection stopped, then the projection catches up; the server log is read
//! back and every statement (parse, bind, execute, simple query) is summed per phase.
//!
//! It needs the server log to be readable (`--log`, default Debian's path).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use e2e::{Options, TestSystem};
use projection_service::projections::Projection;

use crate::clone::{Owner, Template};
use sqlx::{Connection, PgConnection};

use crate::workload::{self, Api};

fn log_len(path: &str) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)?.len())
}

fn read_segment(path: &str, from: u64, to: u64) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = vec![0; (to - from) as usize];
    file.read_exact(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[derive(Default)]
struct Sum {
    count: u64,
    millis: f64,
}

/// Sums the `duration:` lines of one database in a log segment, by (step, statement).
fn summarise(segment: &str, database: &str) -> Vec<((String, String), Sum)> {
    let marker = format!("@{database} LOG:  duration: ");
    let mut sums: HashMap<(String, String), Sum> = HashMap::new();
    let mut current: Option<(String, String, f64)> = None;
    let flush = |c: Option<(String, String, f64)>, sums: &mut HashMap<_, Sum>| {
        if let Some((step, sql, ms)) = c {
            let sql: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
            let sql: String = sql.chars().take(150).collect();
            let s = sums.entry((step, sql)).or_default();
            s.count += 1;
            s.millis += ms;
        }
    };
    for line in segment.lines() {
        let starts_entry = line.len() > 23 && line.as_bytes()[4] == b'-' && line.contains(" UTC [");
        if starts_entry {
            flush(current.take(), &mut sums);
            if let Some(rest) = line.split_once(&marker).map(|(_, r)| r) {
                // "0.123 ms  execute sqlx_s_3: select …" or "0.02 ms  statement: BEGIN"
                let Some((ms, what)) = rest.split_once(" ms  ") else {
                    continue;
                };
                let ms: f64 = ms.trim().parse().unwrap_or(0.0);
                let (step, sql) = match what.split_once(": ") {
                    Some((head, sql)) => (
                        head.split_whitespace().next().unwrap_or("").to_owned(),
                        sql.to_owned(),
                    ),
                    None => (what.to_owned(), String::new()),
                };
                current = Some((step, sql, ms));
            }
        } else if let Some((_, sql, _)) = current.as_mut() {
            if !line.starts_with("\t") && !line.starts_with(' ') && line.contains("DETAIL:") {
                continue;
            }
            sql.push(' ');
            sql.push_str(line.trim());
        }
    }
    flush(current.take(), &mut sums);
    let mut list: Vec<_> = sums.into_iter().collect();
    list.sort_by(|a, b| b.1.millis.total_cmp(&a.1.millis));
    list
}

fn print(title: &str, units: u64, unit: &str, list: &[((String, String), Sum)]) {
    let total_ms: f64 = list.iter().map(|(_, s)| s.millis).sum();
    let total_n: u64 = list.iter().map(|(_, s)| s.count).sum();
    println!(
        "\n## {title}: {units} {unit}; {:.2} statements/{unit} ({} parse+bind+execute steps), {:.3} ms server time/{unit}",
        list.iter()
            .filter(|((step, _), _)| step == "execute" || step == "statement")
            .map(|(_, s)| s.count)
            .sum::<u64>() as f64
            / units.max(1) as f64,
        total_n,
        total_ms / units.max(1) as f64
    );
    println!("| step | per {unit} | ms per {unit} | ms each | statement |\n|---|---|---|---|---|");
    for ((step, sql), s) in list.iter().take(25) {
        println!(
            "| {step} | {:.2} | {:.3} | {:.3} | `{}` |",
            s.count as f64 / units.max(1) as f64,
            s.millis / units.max(1) as f64,
            s.millis / s.count.max(1) as f64,
            sql.replace('|', "\\|")
        );
    }
}

pub async fn statements(
    log: &str,
    clients: usize,
    seconds: u64,
    backlog: usize,
) -> anyhow::Result<()> {
    let mut system = TestSystem::start_with(Options {
        snapshot_every: 100,
        partitions: 8,
        sweep_interval_ms: 60_000,
        relay_poll_ms: 1_000,
        nats_url: None,
        ack_wait_secs: 3,
        ..Options::default()
    })
    .await;
    let name = system.db.name.clone();
    let mut admin = PgConnection::connect(&format!("{}/postgres", e2e::database_server())).await?;
    // Every statement's duration, and the plan of any slower than 200 ms.
    for setting in [
        "log_min_duration_statement = 0",
        "session_preload_libraries = 'auto_explain'",
        "auto_explain.log_min_duration = 200",
        "auto_explain.log_analyze = on",
        "auto_explain.log_buffers = on",
    ] {
        sqlx::query(&format!("alter database \"{name}\" set {setting}"))
            .execute(&mut admin)
            .await?;
    }
    system.stop_projection().await;
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()",
    )
    .bind(&name)
    .execute(&mut admin)
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let api = Api::new(
        &system.command_url,
        system.tenant.project_id,
        &system.tenant.api_key,
    );
    // Re-open the pool's connections (with logging) and let the relay re-elect itself.
    workload::closed_loop(&api, clients, Duration::ZERO, Duration::from_secs(2), 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Statistics as autovacuum keeps them (the benchmark does the same).
    sqlx::query("vacuum analyze")
        .execute(&mut admin_db(&system).await?)
        .await?;
    // The whole pipeline as it runs: commands with the relay and the projections live, every
    // statement of every service summed per command (the polls of the harness's waits fall
    // outside the segment).
    system.start_projection().await;
    system.wait_until_projected(Duration::from_secs(60)).await;
    let live = window(&system, &api, log, clients, seconds, 3).await?;
    system.wait_until_projected(Duration::from_secs(60)).await;
    let live_events = stored_events(&system).await? - live.events_before;
    system.stop_projection().await;

    let commands_only = window(&system, &api, log, clients, seconds, 2).await?;
    let (run, events_before, from, middle) = (
        commands_only.run,
        commands_only.events_before,
        commands_only.from,
        commands_only.to,
    );
    let mut conn = admin_db(&system).await?;
    let events = e2e::db::rows(&mut conn, "contact_event_store").await;
    system.start_projection().await;
    system.wait_until_projected(Duration::from_secs(300)).await;
    let to = log_len(log)?;

    // A backlog: copies of what the commands wrote, bulk-loaded with the relay running and the
    // projection stopped; then the projection catches up.
    system.stop_projection().await;
    sqlx::query("vacuum analyze").execute(&mut conn).await?;
    let template = std::sync::Arc::new(Template::load(&mut conn, &system.keys(), 100_000).await?);
    let owner = Owner {
        tenant_id: system.tenant.tenant_id.clone(),
        project_id: system.tenant.project_id,
        user_id: system.tenant.user_id,
    };
    let relay_from = log_len(log)?;
    let started = Instant::now();
    crate::clone::load_copies(template, &system.db.url, owner, backlog, 10_000, true).await?;
    let copied = log_len(log)?;
    loop {
        let pending = e2e::db::rows(&mut conn, e2e::db::OUTBOX_WAITING).await;
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let relayed = started.elapsed();
    let relay_to = log_len(log)?;
    let started = Instant::now();
    system.start_projection().await;
    system.wait_until_consumed(Duration::from_secs(600)).await;
    let caught_up = started.elapsed();
    let catch_up_to = log_len(log)?;

    // The rebuild, in this process, of everything stored so far.
    let all_events = e2e::db::rows(&mut conn, "contact_event_store").await;
    system.stop_projection().await;
    let started = Instant::now();
    replay_tool::rebuild(
        &system.db.pool,
        &system.keys(),
        &Projection::ALL,
        None,
        2_000,
        &|_, _| {},
    )
    .await?;
    let rebuilt = started.elapsed();
    let rebuild_to = log_len(log)?;
    sqlx::query(&format!("alter database \"{name}\" reset all"))
        .execute(&mut admin)
        .await?;

    let commands = run.completed + run.errors;
    let new_events = (events - events_before).max(0) as u64;
    println!(
        "# statements of {commands} HTTP commands ({clients} clients, {seconds} s, {} cmd/s, p50 {:.2} ms, p99 {:.2} ms), of projecting their {new_events} events, of a backlog of {backlog} events (relayed in {:.1} s, applied in {:.1} s) and of a rebuild of {all_events} events ({:.1} s)",
        run.per_second() as u64,
        run.latency.p50_ms,
        run.latency.p99_ms,
        relayed.as_secs_f64(),
        caught_up.as_secs_f64(),
        rebuilt.as_secs_f64(),
    );
    let part = |a, b| -> anyhow::Result<_> { Ok(summarise(&read_segment(log, a, b)?, &name)) };
    println!(
        "# the whole pipeline live: {} HTTP commands ({} cmd/s, p50 {:.2} ms, p99 {:.2} ms), {} events",
        live.run.completed + live.run.errors,
        live.run.per_second() as u64,
        live.run.latency.p50_ms,
        live.run.latency.p99_ms,
        live_events
    );
    print(
        "whole pipeline, projections live (commands, relay, workers)",
        live.run.completed + live.run.errors,
        "command",
        &part(live.from, live.to)?,
    );
    print(
        "command path (HTTP + relay)",
        commands,
        "command",
        &part(from, middle)?,
    );
    print(
        "projection workers, live",
        new_events,
        "event",
        &part(middle, to)?,
    );
    print(
        "bulk COPY of the backlog",
        backlog as u64,
        "event",
        &part(relay_from, copied)?,
    );
    print(
        "outbox relay, backlog",
        backlog as u64,
        "event",
        &part(copied, relay_to)?,
    );
    print(
        "projection workers, catch-up",
        backlog as u64,
        "event",
        &part(relay_to, catch_up_to)?,
    );
    print(
        "rebuild",
        all_events as u64,
        "event",
        &part(catch_up_to, rebuild_to)?,
    );
    system.stop().await;
    Ok(())
}

async fn admin_db(system: &TestSystem) -> anyhow::Result<PgConnection> {
    Ok(PgConnection::connect_with(&platform::db::connect_options(&system.db.url)?).await?)
}

/// A closed loop whose statements are the server log between `from` and `to`.
struct Window {
    run: workload::RunResult,
    events_before: i64,
    from: u64,
    to: u64,
}

/// Runs `clients` for `seconds` and marks the log around them (2 s after the loop, for the
/// statements it set off).
async fn window(
    system: &TestSystem,
    api: &Api,
    log: &str,
    clients: usize,
    seconds: u64,
    seed: u64,
) -> anyhow::Result<Window> {
    let events_before = stored_events(system).await?;
    let from = log_len(log)?;
    let run = workload::closed_loop(
        api,
        clients,
        Duration::ZERO,
        Duration::from_secs(seconds),
        seed,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Window {
        run,
        events_before,
        from,
        to: log_len(log)?,
    })
}

async fn stored_events(system: &TestSystem) -> anyhow::Result<i64> {
    Ok(e2e::db::rows(&mut admin_db(system).await?, "contact_event_store").await)
}
