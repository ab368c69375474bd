//! Scenarios 1 and 2: commands over HTTP against baseline (a), and the end-to-end lag.

use std::time::{Duration, Instant};

use e2e::{TestDb, TestSystem};
use projection_service::projections::covers_sql;
use tokio::sync::mpsc;

use crate::report::{number, Percentiles, Row};
use crate::workload::{self, Api};
use crate::{lag, raw_sql, Sizes};

use super::{analyze, last_position, prime_raw_sql, progress, secs};

/// Scenario 1: HTTP commands at 8 and 32 clients, against baseline (a).
pub(super) async fn commands(
    sizes: &Sizes,
    system: &mut TestSystem,
    api: &Api,
) -> anyhow::Result<Vec<Row>> {
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

/// Scenario 2: end-to-end lag at a steady rate of `target` commands/s (or the highest steady
/// rate this machine sustains: a lower rate is tried when the generator cannot reach it or the
/// lag keeps growing), reported as row `row`.
pub(super) async fn lag(
    sizes: &Sizes,
    system: &TestSystem,
    api: &Api,
    target: f64,
    row: &str,
) -> anyhow::Result<Vec<Row>> {
    let mut rate = target;
    let warmup = sizes.warmup;
    system.wait_until_projected(Duration::from_secs(600)).await;
    analyze(&system.db.pool).await?;
    let mut offered_row = None;
    for attempt in 1..=4 {
        progress(format!(
            "{row}: end-to-end lag at {} commands/s for {} (+{} warm-up)",
            number(rate),
            secs(sizes.lag_run),
            secs(warmup)
        ));
        let first_position = last_position(&system.db.pool).await?;
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
            "{row}: achieved {} commands/s, lag p50 {:.1} ms p99 {:.1} ms, first/last quarter mean {:.1}/{:.1} ms, {} unseen, {} errors",
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
                    &format!("{row} (offered)"),
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
            let steady = if rate >= target {
                format!("at a steady {} commands/s", number(rate))
            } else {
                format!(
                    "at {} commands/s, the highest steady rate found here ({} not sustained, see next row)",
                    number(rate),
                    number(target)
                )
            };
            let split = lag_split(system, first_position).await?;
            let mut rows = vec![Row::new(
                row,
                format!(
                    "end-to-end lag, command answered → its version in the read table, {steady}, achieved {}, {}, realistic mix, projection live; {split}",
                    number(achieved),
                    secs(sizes.lag_run)
                ),
            )
            .ours(p.p99_ms, "ms p99")
            .latency(&p)
            .target(
                format!("p99 < 100 ms at {}/s", number(target)),
                p.p99_ms < 100.0 && rate >= target,
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
