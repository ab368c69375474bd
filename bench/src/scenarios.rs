//! The scenarios, in the order they run, each returning its rows (7, the scale-out one, is in
//! [`crate::scale`]; 8, the pipeline against the peer, in [`crate::pipeline`]).
//!
//! 1–3 share one system (both services in-process, a fresh database and stream); 4–6 each use
//! bare databases of their own. Progress goes to stderr, the table to stdout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{Options, TestDb, TestStream, TestSystem};
use platform::event_store::{EventRow, EVENT_COLUMNS};
use platform::nats::StreamSettings;
use projection_service::projections::covers_sql;
use sqlx::{Connection, PgConnection};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::clone::{Owner, Template};
use crate::report::{number, Percentiles, Row};
use crate::workload::{self, Api};
use crate::{lag, long_stream, raw_jetstream, raw_sql, rebuild, Sizes};

fn progress(what: impl AsRef<str>) {
    eprintln!("[bench {:>7.1}s] {}", uptime(), what.as_ref());
}

fn uptime() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

fn secs(d: Duration) -> String {
    format!("{:.0} s", d.as_secs_f64())
}

async fn count(pool: &sqlx::PgPool, sql: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(pool).await?)
}

/// Up-to-date planner statistics, as autovacuum keeps them on a database that has been running
/// for a while. (On a young database whose tables grew since their last analyze, the relay's
/// batch query joins by a nested loop over a sequential scan of the store: see the README.)
async fn analyze(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    sqlx::query("vacuum analyze").execute(pool).await?;
    Ok(())
}

/// Baseline (a)'s store, primed as the system's is: a short unmeasured run, then analyze.
async fn prime_raw_sql(db: &TestDb, run: Duration) -> anyhow::Result<()> {
    let pool = raw_sql::pool(&db.url, 8).await?;
    raw_sql::run(&pool, 8, Duration::ZERO, run, 5).await;
    pool.close().await;
    analyze(&db.pool).await
}

pub async fn run_all(sizes: &Sizes, only: &[u32]) -> anyhow::Result<Vec<Row>> {
    let wants = |n: u32| only.is_empty() || only.contains(&n);
    uptime();
    let mut rows = Vec::new();
    let mut template = None;
    if wants(1) || wants(2) || wants(3) || wants(4) {
        progress("starting command-service and projection-service on a fresh database and stream");
        let mut system = TestSystem::start_with(Options {
            snapshot_every: 100,
            partitions: sizes.partitions,
            sweep_interval_ms: 15_000,
            relay_poll_ms: 1_000,
            nats_url: None,
            ack_wait_secs: 3,
            ..Options::default()
        })
        .await;
        let api = Api::new(
            &system.command_url,
            system.tenant.project_id,
            &system.tenant.api_key,
        );
        if wants(1) {
            rows.extend(commands(sizes, &mut system, &api).await?);
        }
        if wants(2) {
            rows.extend(lag(sizes, &system, &api).await?);
        }
        if wants(3) || wants(4) {
            let events = count(&system.db.pool, "select count(*) from contact_event_store").await?;
            if events < 5_000 {
                progress("writing a template history through the command path");
                workload::closed_loop(&api, 8, Duration::ZERO, Duration::from_secs(4), 7).await;
                system.wait_until_projected(Duration::from_secs(300)).await;
            }
            let mut conn =
                PgConnection::connect_with(&platform::db::connect_options(&system.db.url)?).await?;
            let t = Arc::new(Template::load(&mut conn, &system.keys(), 100_000).await?);
            let _ = conn.close().await;
            progress(format!(
                "template: {} events written through the command path",
                t.len()
            ));
            template = Some(t);
        }
        if wants(3) {
            if let Some(t) = &template {
                rows.extend(catch_up(sizes, &mut system, t.clone()).await?);
            }
        }
        progress("stopping the services");
        system.stop().await;
    }
    if wants(4) {
        if let Some(t) = template {
            rows.extend(rebuild_rows(sizes, t).await?);
        }
    }
    if wants(5) {
        rows.extend(long_stream_rows(sizes).await?);
    }
    if wants(6) {
        rows.extend(gin(sizes).await?);
    }
    if wants(7) {
        rows.extend(crate::scale::rows(sizes).await?);
    }
    if wants(8) {
        rows.extend(crate::pipeline::rows(sizes).await?);
    }
    Ok(rows)
}

/// Scenario 1: HTTP commands at 8 and 32 clients, against baseline (a).
async fn commands(sizes: &Sizes, system: &mut TestSystem, api: &Api) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    progress("1: priming the store (a short unmeasured run, then vacuum analyze)");
    workload::closed_loop(api, 8, Duration::ZERO, sizes.warmup * 2, 3).await;
    system.wait_until_projected(Duration::from_secs(300)).await;
    analyze(&system.db.pool).await?;
    // The command side alone: the projection workers would compete for the same two cores
    // (the relay still publishes every event, as it does in production).
    system.stop_projection().await;
    let baseline_db = TestDb::new().await;
    prime_raw_sql(&baseline_db, sizes.warmup * 2).await?;
    for (clients, id) in [(8usize, "1a"), (32, "1b")] {
        progress(format!(
            "1: HTTP commands, {clients} clients, {} (+{} warm-up)",
            secs(sizes.command_run),
            secs(sizes.warmup)
        ));
        let ours = workload::closed_loop(api, clients, sizes.warmup, sizes.command_run, 11).await;
        progress(format!("1: baseline (a) raw SQL, {clients} connections"));
        let pool = raw_sql::pool(&baseline_db.url, clients as u32).await?;
        let base = raw_sql::run(&pool, clients, sizes.warmup, sizes.command_run, 13).await;
        pool.close().await;
        if let Some(e) = &ours.first_error {
            progress(format!("1: {} commands failed, e.g. {e}", ours.errors));
        }
        if let Some(e) = &base.first_error {
            progress(format!(
                "1: {} baseline commands failed, e.g. {e}",
                base.errors
            ));
        }
        let ratio = ours.per_second() / base.per_second();
        let errors = if ours.errors > 0 {
            format!(", {} errors", ours.errors)
        } else {
            String::new()
        };
        let mut row = Row::new(
            id,
            format!(
                "HTTP commands, {clients} clients, realistic mix, {}{errors} (vs baseline (a): raw SQL load + event + outbox, {clients} connections)",
                secs(sizes.command_run)
            ),
        )
        .ours(ours.per_second(), "cmd/s")
        .baseline(base.per_second(), "cmd/s")
        .ratio(ratio)
        .latency(&ours.latency);
        row = if clients == 8 {
            row.target("≥ 0.8× (a)", ratio >= 0.8)
        } else {
            row.target("p99 ≤ 10 ms", ours.latency.p99_ms <= 10.0)
        };
        rows.push(row);
        rows.push(
            Row::new(
                &format!("{id} (a)"),
                format!("baseline (a) alone, {clients} connections: its latency"),
            )
            .ours(base.per_second(), "cmd/s")
            .latency(&base.latency),
        );
    }
    drop(baseline_db);
    progress("1: projecting what the command runs wrote");
    system.start_projection().await;
    system.wait_until_projected(Duration::from_secs(900)).await;
    Ok(rows)
}

/// Scenario 2: end-to-end lag at a steady rate (1,000 commands/s, or the highest steady rate
/// this machine sustains: a lower rate is tried when the generator cannot reach it or the lag
/// keeps growing).
async fn lag(sizes: &Sizes, system: &TestSystem, api: &Api) -> anyhow::Result<Vec<Row>> {
    let mut rate = sizes.lag_rate;
    let warmup = sizes.warmup;
    system.wait_until_projected(Duration::from_secs(600)).await;
    analyze(&system.db.pool).await?;
    let mut offered_row = None;
    for attempt in 1..=4 {
        progress(format!(
            "2: end-to-end lag at {} commands/s for {} (+{} warm-up)",
            number(rate),
            secs(sizes.lag_run),
            secs(warmup)
        ));
        let first_position = count(
            &system.db.pool,
            "select coalesce(max(position), 0) from contact_event_store",
        )
        .await?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let url = system.db.url.clone();
        let tracker =
            tokio::spawn(async move { lag::track(&url, receiver, Duration::from_secs(30)).await });
        let run =
            workload::open_loop(api, 128, rate, warmup, sizes.lag_run, 17 + attempt, sender).await;
        let report = tracker.await??;
        let achieved = run.per_second();
        let mut lags: Vec<Duration> = report.lags.iter().map(|l| l.1).collect();
        let p = Percentiles::of(&mut lags);
        // Growing: the last quarter of the window lags far behind the first.
        let mut by_time = report.lags.clone();
        by_time.sort_by_key(|l| l.0);
        let quarter = by_time.len() / 4;
        let mean = |s: &[(Instant, Duration)]| {
            s.iter().map(|l| l.1.as_secs_f64()).sum::<f64>() / s.len().max(1) as f64
        };
        let first = mean(&by_time[..quarter]);
        let last = mean(&by_time[by_time.len() - quarter..]);
        let growing = last > 2.0 * first + 0.05;
        let reached = achieved >= 0.95 * rate && run.errors == 0;
        progress(format!(
            "2: achieved {} commands/s, lag p50 {:.1} ms p99 {:.1} ms, first/last quarter mean {:.1}/{:.1} ms, {} unseen, {} errors",
            number(achieved),
            p.p50_ms,
            p.p99_ms,
            first * 1e3,
            last * 1e3,
            report.unseen,
            run.errors
        ));
        let offered = rate;
        if attempt == 1 && !(reached && !growing && report.unseen == 0) {
            offered_row = Some(
                Row::new(
                    "2 (offered)",
                    format!(
                        "the same at {} commands/s offered: {} answered per second, {} failed, {} accepted but not visible 30 s later",
                        number(offered),
                        number(achieved),
                        run.errors,
                        report.unseen
                    ),
                )
                .ours(p.p99_ms, "ms p99")
                .latency(&p),
            );
        }
        if (reached && !growing && report.unseen == 0) || attempt == 4 {
            let steady = if rate >= sizes.lag_rate {
                format!("at a steady {} commands/s", number(rate))
            } else {
                format!(
                    "at {} commands/s, the highest steady rate found here ({} not sustained, see next row)",
                    number(rate),
                    number(sizes.lag_rate)
                )
            };
            let split = lag_split(system, first_position).await?;
            let mut rows = vec![Row::new(
                "2",
                format!(
                    "end-to-end lag, command answered → its version in the read table, {steady}, achieved {}, {}, realistic mix, projection live; {split}",
                    number(achieved),
                    secs(sizes.lag_run)
                ),
            )
            .ours(p.p99_ms, "ms p99")
            .latency(&p)
            .target(
                format!("p99 < 100 ms at {}/s", number(sizes.lag_rate)),
                p.p99_ms < 100.0 && rate >= sizes.lag_rate,
            )];
            rows.extend(offered_row);
            return Ok(rows);
        }
        // The machine did not hold this rate: halve it after a collapse (failures, or less than
        // half achieved), else try a little below what it achieved.
        rate = if run.errors > 0 || achieved < 0.5 * rate {
            rate / 2.0
        } else {
            ((achieved * 0.9) / 50.0).floor().max(1.0) * 50.0
        };
        system.wait_until_projected(Duration::from_secs(300)).await;
    }
    unreachable!("the last attempt returns")
}

/// Where the lag goes, from the rows' own clocks (server time, so no clock skew): the command
/// transaction's start (`created_at`) → the projection transaction's start
/// (`processed_events.processed_at`). The relay deletes what it published, so its share is not
/// in the tables: it is the rest of the lag.
async fn lag_split(system: &TestSystem, after_position: i64) -> anyhow::Result<String> {
    system.wait_until_projected(Duration::from_secs(120)).await;
    let (p50, p99): (f64, f64) = sqlx::query_as(&format!(
        "select percentile_cont(0.5) within group (order by p), percentile_cont(0.99) within group (order by p) \
           from (select extract(epoch from pe.processed_at - e.created_at)::float8 * 1e3 as p \
                   from contact_event_store e \
                   join processed_events pe on pe.event_id = e.id and {} \
                  where e.position > $1) d",
        covers_sql("pe", "'contacts'")
    ))
    .bind(after_position)
    .fetch_one(&system.db.pool)
    .await?;
    Ok(format!(
        "split (server clocks, p50/p99): command tx start → projection tx start {p50:.1}/{p99:.1} ms"
    ))
}

/// Scenario 3: projection catch-up from a backlog in the stream, against baseline (b).
async fn catch_up(
    sizes: &Sizes,
    system: &mut TestSystem,
    template: Arc<Template>,
) -> anyhow::Result<Vec<Row>> {
    let n = sizes.catchup_events;
    system.wait_until_projected(Duration::from_secs(600)).await;
    analyze(&system.db.pool).await?;
    system.stop_projection().await;
    let before: i64 = count(
        &system.db.pool,
        "select coalesce(max(position), 0) from contact_event_store",
    )
    .await?;
    progress(format!(
        "3: producing {} events with projection-service stopped (bulk COPY into store + outbox, relay publishing)",
        number(n as f64)
    ));
    let owner = Owner {
        tenant_id: system.tenant.tenant_id.clone(),
        project_id: system.tenant.project_id,
        user_id: system.tenant.user_id,
    };
    let started = Instant::now();
    let loaded =
        crate::clone::load_copies(template, &system.db.url, owner, n, 10_000, true).await?;
    anyhow::ensure!(loaded as usize == n, "loaded {loaded} of {n}");
    let inserted = started.elapsed();
    loop {
        let pending = count(
            &system.db.pool,
            "select count(*) from outbox_events where status <> 'processed'",
        )
        .await?;
        if pending == 0 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "the relay did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let produced = started.elapsed();
    progress(format!(
        "3: stored in {}, all published in {}; starting projection-service",
        report_secs(inserted),
        report_secs(produced)
    ));
    let started = Instant::now();
    system.start_projection().await;
    system.wait_until_consumed(Duration::from_secs(900)).await;
    let catch_up = started.elapsed();
    system.wait_until_projected(Duration::from_secs(60)).await;
    let ours = n as f64 / catch_up.as_secs_f64();
    progress(format!(
        "3: applied in {} ({} events/s); baseline (b): raw JetStream publish and consume",
        report_secs(catch_up),
        number(ours)
    ));

    // Baseline (b): the very messages, on a stream of their own.
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "select {EVENT_COLUMNS} from contact_event_store e where e.position > $1 order by e.position"
    ))
    .bind(before)
    .fetch_all(&system.db.pool)
    .await?;
    let stream = TestStream::new(None, sizes.partitions);
    let settings = StreamSettings {
        name: stream.name.clone(),
        subject_prefix: stream.prefix.clone(),
        partitions: sizes.partitions,
        replicas: 1,
        max_age: Duration::from_secs(24 * 3600),
    };
    let mut messages = Vec::with_capacity(rows.len());
    for row in rows {
        let envelope = row.into_envelope()?;
        messages.push(raw_jetstream::Message {
            subject: settings.subject(
                envelope.contact_id,
                envelope.aggregate_type.as_str(),
                &envelope.event_type,
            ),
            partition: platform::nats::partition_for(envelope.contact_id, sizes.partitions),
            id: envelope.event_id.to_string(),
            tenant: envelope.tenant_id.clone(),
            payload: serde_json::to_vec(&envelope)?.into(),
        });
    }
    let js = async_nats::jetstream::new(
        platform::nats::connect(&stream.url, &Default::default()).await?,
    );
    let timings = raw_jetstream::publish_and_consume(&js, &settings, &messages, 500, 256).await?;
    drop(js);
    drop(stream);
    let consume = n as f64 / timings.consume.as_secs_f64();
    let publish = n as f64 / timings.publish.as_secs_f64();
    let relay = n as f64 / produced.as_secs_f64();
    let ratio = ours / consume;
    Ok(vec![
        Row::new(
            "3",
            format!(
                "projection catch-up: {} events waiting in the stream ({} partitions), start projection-service, all applied (vs baseline (b): raw pull consume + ack of the same messages)",
                number(n as f64),
                sizes.partitions
            ),
        )
        .ours(ours, "events/s")
        .baseline(consume, "events/s")
        .ratio(ratio)
        .target("≥ 20,000 events/s, ≥ 0.5× (b)", ours >= 20_000.0 && ratio >= 0.5),
        Row::new(
            "3 (p)",
            format!(
                "producing them: bulk COPY into store + outbox ({} in the store after {}), outbox relay publishing (vs raw JetStream publish with awaited acks)",
                number(n as f64),
                report_secs(inserted)
            ),
        )
        .ours(relay, "events/s")
        .baseline(publish, "events/s")
        .ratio(relay / publish),
    ])
}

fn report_secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Scenario 4: rebuild from stored history, against baseline (c).
async fn rebuild_rows(sizes: &Sizes, template: Arc<Template>) -> anyhow::Result<Vec<Row>> {
    let n = sizes.rebuild_events;
    let db = TestDb::new().await;
    let tenant = TestSystem::bootstrap_tenant(&db.pool, "rebuild").await;
    progress(format!(
        "4: storing {} events (copies of the template, bulk COPY)",
        number(n as f64)
    ));
    let started = Instant::now();
    let owner = Owner {
        tenant_id: tenant.tenant_id.clone(),
        project_id: tenant.project_id,
        user_id: tenant.user_id,
    };
    let loaded = crate::clone::load_copies(template, &db.url, owner, n, 50_000, false).await?;
    anyhow::ensure!(loaded as usize == n, "loaded {loaded} of {n}");
    sqlx::query("vacuum analyze contact_event_store")
        .execute(&db.pool)
        .await?;
    progress(format!(
        "4: stored in {}; rebuilding all projections in a child process",
        report_secs(started.elapsed())
    ));
    let observed = rebuild::run_child(&db.url, 2_000).await?;
    let r = &observed.report;
    anyhow::ensure!(r.events as usize == n, "rebuilt {} of {n} events", r.events);
    let ours = r.events as f64 / r.seconds;
    progress(format!(
        "4: rebuilt in {:.1} s ({} events/s); baseline (c): COPY of the rebuilt rows",
        r.seconds,
        number(ours)
    ));
    let copy = rebuild::copy_baseline(&db.url).await?;
    let base = n as f64 / copy.read_tables.as_secs_f64();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let early = observed.rss_at(0.2);
    let peak = r.hwm_after_kib.max(observed.polled_peak_kib());
    let flat = early > 0 && (peak as f64) <= early as f64 * 1.25 + 16.0 * 1024.0;
    drop(db);
    Ok(vec![
        Row::new(
            "4",
            format!(
                "replay-tool rebuild of all projections from {} stored events (batches of 2,000; vs baseline (c): COPY of the {} rebuilt rows into contacts, sessions, domain_event_logs); its phases: {}",
                number(n as f64),
                number(copy.rows as f64),
                r.phases
            ),
        )
        .ours(ours, "events/s")
        .baseline(base, "events/s")
        .ratio(ours / base)
        .target("≥ 0.7× (c)", ours / base >= 0.7),
        Row::new(
            "4 (mem)",
            format!(
                "rebuild process peak RSS (VmHWM) vs its RSS at 20 % of the rebuild; {} MiB before it started",
                number(mib(r.rss_before_kib))
            ),
        )
        .ours(mib(peak), "MiB peak")
        .baseline(mib(early), "MiB at 20 %")
        .ratio(peak as f64 / early.max(1) as f64)
        .target("flat (peak ≤ 1.25× + 16 MiB)", flat),
    ])
}

/// Scenario 5: loading a contact of 10,000 events with and without snapshots.
async fn long_stream_rows(sizes: &Sizes) -> anyhow::Result<Vec<Row>> {
    let n = sizes.long_stream_events;
    progress(format!(
        "5: loading a contact of {} events",
        number(n as f64)
    ));
    let db = TestDb::new().await;
    let actor = command_service::commands::Actor {
        tenant_id: "bench-loads".into(),
        project_id: Uuid::new_v4(),
        user_id: Some(Uuid::new_v4()),
        session_timeout: event_model::values::SessionTimeout::from_minutes(30),
    };
    let with = long_stream::write_contact(&db.pool, &actor, n, Some(100)).await?;
    let tail = long_stream::write_contact(&db.pool, &actor, n + 99, Some(100)).await?;
    let without = long_stream::write_contact(&db.pool, &actor, n, None).await?;
    sqlx::query("vacuum analyze contact_event_store, contact_snapshots")
        .execute(&db.pool)
        .await?;
    let handler = long_stream::handler(&db.pool);
    let p_with = long_stream::time_loads(&handler, &actor, with, n, sizes.snapshot_loads).await?;
    let p_tail =
        long_stream::time_loads(&handler, &actor, tail, n + 99, sizes.snapshot_loads).await?;
    let p_without = long_stream::time_loads(&handler, &actor, without, n, sizes.full_loads).await?;
    drop(db);
    Ok(vec![
        Row::new(
            "5",
            format!(
                "CommandHandler::load::<Contact> of a contact with {} events, snapshots every 100 (SNAPSHOT_EVERY=100), mean of {} loads (vs the same contact without snapshots, mean of {})",
                number(n as f64),
                sizes.snapshot_loads,
                sizes.full_loads
            ),
        )
        .ours(p_with.mean_ms, "ms mean")
        .baseline(p_without.mean_ms, "ms mean")
        .ratio(p_without.mean_ms / p_with.mean_ms)
        .latency(&p_with)
        .target("≤ 1 ms (mean) with snapshot", p_with.mean_ms <= 1.0),
        Row::new(
            "5 (tail)",
            format!(
                "the same, worst case between snapshots: {} events, 99 after the last snapshot",
                number((n + 99) as f64)
            ),
        )
        .ours(p_tail.mean_ms, "ms mean")
        .latency(&p_tail)
        .target("≤ 1 ms (mean)", p_tail.mean_ms <= 1.0),
        Row::new(
            "5 (none)",
            format!(
                "the same contact without snapshots (SNAPSHOT_EVERY huge): {} events folded per load",
                number(n as f64)
            ),
        )
        .ours(p_without.mean_ms, "ms mean")
        .latency(&p_without),
    ])
}

/// The indexes migration 0025 dropped from the event store and the outbox (the ones baseline
/// (a)'s statements write), as the inventory had them.
const UNREAD_INDEXES: &str = "\
    create index contact_event_store_event_type_occurred_at_idx on contact_event_store (event_type, occurred_at desc);
    create index contact_event_store_event_data_idx on contact_event_store using gin (event_data jsonb_path_ops);
    create index outbox_events_aggregate_idx on outbox_events (aggregate_type, aggregate_id);
    create index outbox_events_tenant_id_idx on outbox_events (tenant_id);
    create index outbox_events_event_type_idx on outbox_events (event_type);
    create index outbox_events_retry_idx on outbox_events (retry_count, last_retry_at);
    create index outbox_events_metadata_idx on outbox_events using gin (metadata);
    create index outbox_events_correlation_id_idx on outbox_events ((metadata->>'correlation_id'));
    create index outbox_events_saga_type_idx on outbox_events ((metadata->>'saga_type'));";

/// Scenario 6: the indexes no statement reads (migration 0025) on the hot insert path: baseline
/// (a) with them (the inventory's full set) and without (as migrated), alternating, on two fresh
/// databases.
async fn gin(sizes: &Sizes) -> anyhow::Result<Vec<Row>> {
    let with = TestDb::new().await;
    let without = TestDb::new().await;
    sqlx::raw_sql(UNREAD_INDEXES).execute(&with.pool).await?;
    prime_raw_sql(&with, Duration::from_secs(1)).await?;
    prime_raw_sql(&without, Duration::from_secs(1)).await?;
    let mut totals = [
        (0u64, Duration::ZERO, Vec::new()),
        (0, Duration::ZERO, Vec::new()),
    ];
    for round in 0..sizes.gin_rounds {
        for (i, db) in [&with, &without].into_iter().enumerate() {
            progress(format!(
                "6: baseline (a), 8 connections, {} the unread indexes (round {})",
                if i == 0 { "with" } else { "without" },
                round + 1
            ));
            let pool = raw_sql::pool(&db.url, 8).await?;
            let r = raw_sql::run(
                &pool,
                8,
                Duration::from_secs(1),
                sizes.gin_run,
                23 + round as u64,
            )
            .await;
            pool.close().await;
            totals[i].0 += r.completed;
            totals[i].1 += r.window;
            totals[i].2.push(r.latency);
        }
    }
    let rate = |t: &(u64, Duration, Vec<Percentiles>)| t.0 as f64 / t.1.as_secs_f64();
    let (with_rate, without_rate) = (rate(&totals[0]), rate(&totals[1]));
    let p99 =
        |t: &(u64, Duration, Vec<Percentiles>)| t.2.iter().map(|p| p.p99_ms).fold(0.0, f64::max);
    drop(with);
    drop(without);
    Ok(vec![Row::new(
        "6",
        format!(
            "the 9 unread indexes of the event store and outbox (0025) on the insert path: baseline (a) at 8 connections with them, as the inventory had them (vs without, as migrated), {} rounds of {}; p99 without: {:.2} ms",
            sizes.gin_rounds,
            secs(sizes.gin_run),
            p99(&totals[1])
        ),
    )
    .ours(with_rate, "cmd/s")
    .baseline(without_rate, "cmd/s")
    .ratio(with_rate / without_rate)
    .latency(&Percentiles {
        p99_ms: p99(&totals[0]),
        p50_ms: totals[0].2.iter().map(|p| p.p50_ms).sum::<f64>() / totals[0].2.len().max(1) as f64,
        ..Percentiles::default()
    })])
}
