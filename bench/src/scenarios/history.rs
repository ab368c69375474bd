//! Scenarios 4–6: rebuilding from stored history, loading long streams, and the tags' index.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{TestDb, TestSystem};
use uuid::Uuid;

use crate::clone::{Owner, Template};
use crate::report::{number, Percentiles, Row};
use crate::{long_stream, raw_sql, rebuild, Sizes};

use super::{prime_raw_sql, progress, report_secs, secs};

/// Scenario 4: rebuild from stored history, against baseline (c).
pub(super) async fn rebuild_rows(
    sizes: &Sizes,
    template: Arc<Template>,
) -> anyhow::Result<Vec<Row>> {
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
pub(super) async fn long_stream_rows(sizes: &Sizes) -> anyhow::Result<Vec<Row>> {
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
        ends_any_session: true,
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
pub(super) async fn gin(sizes: &Sizes) -> anyhow::Result<Vec<Row>> {
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
