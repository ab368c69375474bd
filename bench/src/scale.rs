//! Scenario 7: one instance of each service against two, in the same run on the same database and
//! stream. The second command-service and projection-service are built in-process exactly as the
//! harness builds the first (the relay elects one leader; the projection instances share the
//! partitions by their advisory-lock leases). On one machine the instances share its cores, so
//! the ratio shows the cost or gain of the coordination, not the gain of a second machine.

use std::time::Duration;

use e2e::{Options, TestSystem};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::report::{number, Percentiles, Row};
use crate::workload::{self, Api};
use crate::{lag, Sizes};

fn progress(what: impl AsRef<str>) {
    eprintln!("[bench scale] {}", what.as_ref());
}

/// The rate of the lag measurement: steady on this machine with one instance of each.
const LAG_RATE: f64 = 300.0;
/// Closed-loop clients of the throughput measurement, split evenly over the instances.
const CLIENTS: usize = 16;

struct Figures {
    throughput: f64,
    errors: u64,
    command_latency: Percentiles,
    lag: Percentiles,
    unseen: usize,
}

async fn measure(apis: &[Api], sizes: &Sizes, db_url: &str, seed: u64) -> anyhow::Result<Figures> {
    let runs = futures::future::join_all(apis.iter().enumerate().map(|(i, api)| {
        workload::closed_loop(
            api,
            CLIENTS / apis.len(),
            sizes.warmup,
            sizes.command_run,
            seed + i as u64,
        )
    }))
    .await;
    let throughput = runs.iter().map(|r| r.per_second()).sum();
    let errors = runs.iter().map(|r| r.errors).sum();
    // Percentiles are per run; the worse of the instances is the one a client sees.
    let command_latency = runs
        .iter()
        .map(|r| r.latency)
        .max_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms))
        .expect("one run at least");

    let (sender, receiver) = mpsc::unbounded_channel();
    let url = db_url.to_owned();
    let tracker =
        tokio::spawn(async move { lag::track(&url, receiver, Duration::from_secs(30)).await });
    futures::future::join_all(apis.iter().enumerate().map(|(i, api)| {
        workload::open_loop(
            api,
            64 / apis.len(),
            LAG_RATE / apis.len() as f64,
            sizes.warmup,
            sizes.lag_run,
            seed + 100 + i as u64,
            sender.clone(),
        )
    }))
    .await;
    drop(sender);
    let report = tracker.await??;
    let mut lags: Vec<Duration> = report.lags.iter().map(|l| l.1).collect();
    Ok(Figures {
        throughput,
        errors,
        command_latency,
        lag: Percentiles::of(&mut lags),
        unseen: report.unseen,
    })
}

pub async fn rows(sizes: &Sizes) -> anyhow::Result<Vec<Row>> {
    progress("starting one instance of each service on a fresh database and stream");
    let system = TestSystem::start_with(Options {
        partitions: sizes.partitions,
        sweep_interval_ms: 15_000,
        relay_poll_ms: 1_000,
        ack_wait_secs: 3,
        ..Options::default()
    })
    .await;
    let tenant = system.tenant.clone();
    let first = Api::new(&system.command_url, tenant.project_id, &tenant.api_key);
    progress("priming the store");
    workload::closed_loop(&first, 8, Duration::ZERO, sizes.warmup * 2, 71).await;
    system.wait_until_projected(Duration::from_secs(300)).await;
    sqlx::query("vacuum analyze")
        .execute(&system.db.pool)
        .await?;

    progress(format!(
        "1 + 1 instances: {CLIENTS} clients for {:?}, then lag at {LAG_RATE}/s for {:?}",
        sizes.command_run, sizes.lag_run
    ));
    let one = measure(std::slice::from_ref(&first), sizes, &system.db.url, 73).await?;
    system.wait_until_projected(Duration::from_secs(300)).await;

    progress("starting a second command-service and a second projection-service");
    let stop = CancellationToken::new();
    let command = command_service::App::build_with(
        system.command_config(),
        platform::nats::connect(&system.stream.url, &Default::default()).await?,
        command_service::system_clock(),
    )
    .await?;
    let second = Api::new(
        &format!("http://{}", command.local_addr()),
        tenant.project_id,
        &tenant.api_key,
    );
    let projection = projection_service::App::build_with(
        system.projection_config(),
        platform::nats::connect(&system.stream.url, &Default::default()).await?,
    )
    .await?;
    let owned = projection.owned_partitions();
    let tokens = [command.shutdown_token(), projection.shutdown_token()];
    let handles = [
        tokio::spawn(command.run_until_stopped()),
        tokio::spawn(projection.run_until_stopped()),
    ];
    let _stop_on_drop = stop.clone().drop_guard();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while owned.partitions().len() < (sizes.partitions / 2) as usize {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the second projection-service got no share of the partitions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress(format!(
        "2 + 2 instances (the second projection-service owns partitions {:?})",
        owned.partitions()
    ));
    let two = measure(&[first, second], sizes, &system.db.url, 79).await?;
    system.wait_until_projected(Duration::from_secs(300)).await;
    for token in tokens {
        token.cancel();
    }
    for handle in handles {
        let _ = tokio::time::timeout(Duration::from_secs(30), handle).await;
    }
    system.stop().await;

    let ratio = two.throughput / one.throughput;
    let lag_ratio = two.lag.p99_ms / one.lag.p99_ms;
    let note = |f: &Figures| {
        format!(
            "{} errors, lag p50/p99 {:.1}/{:.1} ms at {}/s, {} unseen",
            f.errors,
            f.lag.p50_ms,
            f.lag.p99_ms,
            number(LAG_RATE),
            f.unseen
        )
    };
    Ok(vec![
        Row::new(
            "7a",
            format!(
                "1 command-service + 1 projection-service: HTTP commands, {CLIENTS} clients, realistic mix, {:.0} s; {}",
                sizes.command_run.as_secs_f64(),
                note(&one)
            ),
        )
        .ours(one.throughput, "cmd/s")
        .latency(&one.command_latency),
        Row::new(
            "7b",
            format!(
                "2 + 2 instances, same database, stream and machine (clients split over both command-services; vs 7a): {}; lag p99 {:.2}× 7a's",
                note(&two),
                lag_ratio
            ),
        )
        .ours(two.throughput, "cmd/s")
        .baseline(one.throughput, "cmd/s")
        .ratio(ratio)
        .latency(&two.command_latency),
    ])
}
