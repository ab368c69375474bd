//! The scenarios, in the order they run, each returning its rows (7, the scale-out one, is in
//! [`crate::scale`]; 8, the pipeline against the peer, in [`crate::pipeline`]; 9, reading the
//! past and conversations, in `reads`; 10, webhooks and the change feed, in `integrations`).
//!
//! 1–3 share one system (both services in-process, a fresh database and stream); 4–6 each use
//! bare databases of their own. Progress goes to stderr, the table to stdout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{Options, TestDb, TestSystem};
use sqlx::{Connection, PgConnection};

use crate::clone::Template;
use crate::report::Row;
use crate::workload::{self, Api};
use crate::{raw_sql, Sizes};

mod catch_up;
mod history;
mod integrations;
mod live;
mod reads;

fn progress(what: impl AsRef<str>) {
    eprintln!("[bench {:>7.1}s] {}", uptime(), what.as_ref());
}

fn uptime() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

fn report_secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn secs(d: Duration) -> String {
    format!("{:.0} s", d.as_secs_f64())
}

/// The store's last position (0: empty): where a scenario's own events begin.
async fn last_position(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("select coalesce(max(position), 0) from contact_event_store")
            .fetch_one(pool)
            .await?,
    )
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
            service_threads: sizes.service_threads,
            ..Options::default()
        })
        .await;
        let api = Api::new(
            &system.command_url,
            system.tenant.project_id,
            &system.tenant.api_key,
        );
        if wants(1) {
            rows.extend(live::commands(sizes, &mut system, &api).await?);
        }
        if wants(2) {
            // Issue 4's target, then issue 15's (the rate a busy CRM project sees).
            rows.extend(live::lag(sizes, &system, &api, sizes.lag_rate, "2").await?);
            rows.extend(live::lag(sizes, &system, &api, 600.0, "2b").await?);
        }
        if wants(3) || wants(4) {
            let events = e2e::db::rows(&system.db.pool, "contact_event_store").await;
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
                rows.extend(catch_up::catch_up(sizes, &mut system, t.clone()).await?);
            }
        }
        progress("stopping the services");
        system.stop().await;
    }
    if wants(4) {
        if let Some(t) = template {
            rows.extend(history::rebuild_rows(sizes, t).await?);
        }
    }
    if wants(5) {
        rows.extend(history::long_stream_rows(sizes).await?);
    }
    if wants(6) {
        rows.extend(history::gin(sizes).await?);
    }
    if wants(7) {
        rows.extend(crate::scale::rows(sizes).await?);
    }
    if wants(8) {
        rows.extend(crate::pipeline::rows(sizes).await?);
    }
    if wants(9) {
        rows.extend(reads::reads(sizes).await?);
    }
    if wants(10) {
        rows.extend(integrations::rows(sizes).await?);
    }
    Ok(rows)
}
