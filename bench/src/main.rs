//! The benchmark of issue 4: the whole system (command-service and projection-service built
//! in-process by the `e2e` harness) against this machine's PostgreSQL and NATS JetStream, every
//! figure beside a baseline measured in the same run on the same servers.
//!
//! ```sh
//! cargo run --release -p bench -- --quick     # about 3 minutes
//! cargo run --release -p bench                # the full sizes (about 12 minutes)
//! cargo run --release -p bench -- --json      # the rows as JSON
//! cargo run --release -p bench -- --only 1,5  # some scenarios only
//! cargo run --release -p bench -- profile-statements   # where the database time goes
//! ```
//!
//! Scenarios ([`scenarios`]): 1 HTTP commands vs baseline (a), raw SQL; 2 end-to-end lag;
//! 3 projection catch-up vs baseline (b), raw JetStream; 4 rebuild vs baseline (c), `COPY`;
//! 5 loading a long stream with and without snapshots; 6 the indexes no query reads on the
//! insert path; 7 one instance of each service against two ([`scale`]); 8 the whole pipeline,
//! projections live, against baseline (d), the peer built on cqrs-es and postgres-es
//! ([`pipeline`], [`peer`]); 9 reading the past (`?as_of_version=`) and a conversation's page;
//! 10 webhook deliveries from a backlog to a local receiver, and the change feed's latency.
//!
//! Every database and stream it creates is dropped afterwards (the harness's `Drop`s), also on
//! Ctrl-C and on a failure. Progress goes to stderr, the table (or JSON) to stdout.

mod clone;
mod lag;
mod long_stream;
mod peer;
mod pipeline;
mod profile;
mod raw_jetstream;
mod raw_sql;
mod rebuild;
mod report;
mod scale;
mod scenarios;
mod workload;

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde::Serialize;
use sqlx::Connection as _;

use report::Row;

/// The data keys of a bench child process: the `DATA_KEK` it was given, else unwrapped.
fn data_keys() -> platform::personal::DataKeys {
    let keyring = std::env::var("DATA_KEK")
        .ok()
        .and_then(|k| platform::crypto::Kek::from_base64(&k).ok())
        .map_or_else(platform::crypto::Keyring::unwrapped, |kek| {
            platform::crypto::Keyring::new(Some(kek), vec![])
        });
    platform::personal::DataKeys::new(keyring, 0)
}

/// Benchmarks of the Ventros core against this machine's PostgreSQL and NATS JetStream.
#[derive(Parser)]
#[command(about)]
struct Cli {
    /// Smaller sizes and shorter runs (about 3 minutes).
    #[arg(long)]
    quick: bool,
    /// Print the rows as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Run only these scenarios (1–10), e.g. `--only 1,5`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<u32>,
    #[command(subcommand)]
    child: Option<Child>,
}

#[derive(Subcommand)]
enum Child {
    /// (Internal) rebuild every projection of a database and report time and memory as JSON.
    #[command(hide = true)]
    RebuildChild {
        #[arg(long)]
        database_url: String,
        #[arg(long, default_value_t = 2_000)]
        batch_size: i64,
    },
    /// Sums the database statements of HTTP commands and of projecting them, per command and
    /// per event, from the server log (statement logging is switched on for the benchmark's own
    /// database only).
    ProfileStatements {
        /// The PostgreSQL server log (must be readable).
        #[arg(long, default_value = "/var/log/postgresql/postgresql-15-main.log")]
        log: String,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Events of the backlog the relay and the projection then work through.
        #[arg(long, default_value_t = 20_000)]
        backlog: usize,
    },
}

/// The sizes of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    pub mode: &'static str,
    #[serde(serialize_with = "as_seconds")]
    pub warmup: Duration,
    #[serde(serialize_with = "as_seconds")]
    pub command_run: Duration,
    pub lag_rate: f64,
    #[serde(serialize_with = "as_seconds")]
    pub lag_run: Duration,
    pub catchup_events: usize,
    pub rebuild_events: usize,
    pub long_stream_events: i64,
    pub snapshot_loads: usize,
    pub full_loads: usize,
    #[serde(serialize_with = "as_seconds")]
    pub gin_run: Duration,
    pub gin_rounds: usize,
    pub partitions: u32,
    /// One of scenario 8's windows; each side gets two.
    #[serde(serialize_with = "as_seconds")]
    pub peer_round: Duration,
    /// The worker threads of each service's own runtime ([`e2e::Options::service_threads`]), as
    /// each service's process has in production: `BENCH_SERVICE_THREADS`; unset or 0, the
    /// services and the peer run on the load generator's runtime. On two cores, own runtimes
    /// lower row 8a's tail and raise row 2's lag (README "Where the time goes"), so the table
    /// keeps the one runtime its earlier figures were measured on.
    pub service_threads: Option<usize>,
    /// Scenario 9: reads timed per row.
    pub history_reads: usize,
    /// Scenario 9: messages in the table when a conversation's page is read.
    pub messages_in_table: usize,
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn service_threads() -> Option<usize> {
    match std::env::var("BENCH_SERVICE_THREADS") {
        Ok(n) => match n.parse() {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(_) => panic!("BENCH_SERVICE_THREADS={n}: not a number"),
        },
        Err(_) => None,
    }
}

impl Sizes {
    fn quick() -> Self {
        Self {
            mode: "quick",
            warmup: Duration::from_secs(1),
            command_run: Duration::from_secs(4),
            lag_rate: 1_000.0,
            lag_run: Duration::from_secs(5),
            catchup_events: 20_000,
            rebuild_events: 100_000,
            long_stream_events: 10_000,
            snapshot_loads: 500,
            full_loads: 20,
            gin_run: Duration::from_secs(3),
            gin_rounds: 1,
            partitions: 8,
            peer_round: Duration::from_secs(5),
            service_threads: service_threads(),
            history_reads: 300,
            messages_in_table: 100_000,
        }
    }

    fn full() -> Self {
        Self {
            mode: "full",
            warmup: Duration::from_secs(3),
            command_run: Duration::from_secs(20),
            lag_rate: 1_000.0,
            lag_run: Duration::from_secs(30),
            catchup_events: 200_000,
            rebuild_events: 1_000_000,
            long_stream_events: 10_000,
            snapshot_loads: 3_000,
            full_loads: 100,
            gin_run: Duration::from_secs(10),
            gin_rounds: 2,
            partitions: 8,
            peer_round: Duration::from_secs(15),
            service_threads: service_threads(),
            history_reads: 2_000,
            messages_in_table: 1_000_000,
        }
    }
}

#[derive(Debug, Serialize)]
struct Machine {
    cores: usize,
    cpu: String,
    memory_gib: f64,
    kernel: String,
    postgres: String,
    nats_server: String,
    /// The 1, 5 and 15 minute load averages when the run started: on a shared machine, what
    /// else was running weighs on every figure (the ratios less than the rates).
    load_average: String,
}

impl Machine {
    fn line(&self) -> String {
        format!(
            "{} cores ({}), {:.0} GiB RAM, Linux {}, {}, nats-server {}, load average {} at start",
            self.cores,
            self.cpu,
            self.memory_gib,
            self.kernel,
            self.postgres,
            self.nats_server,
            self.load_average
        )
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn machine() -> anyhow::Result<Machine> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown CPU".into());
    let memory_kib = rebuild::proc_file_kib("/proc/meminfo", "MemTotal:").unwrap_or(0);
    let server = e2e::database_server();
    let mut conn = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
    let version: String = sqlx::query_scalar("select version()")
        .fetch_one(&mut conn)
        .await?;
    let postgres = version.split(" on ").next().unwrap_or(&version).to_owned();
    let nats_url = std::env::var("TEST_NATS_URL").unwrap_or_else(|_| e2e::nats::SHARED_NATS.into());
    let client = platform::nats::connect(&nats_url, &Default::default()).await?;
    // The INFO arrives right after the connection; give it a moment.
    let mut nats_server = client.server_info().version;
    for _ in 0..20 {
        if !nats_server.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        nats_server = client.server_info().version;
    }
    Ok(Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu,
        memory_gib: memory_kib as f64 / 1024.0 / 1024.0,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        postgres,
        nats_server,
        load_average: load_average(),
    })
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error"));
    // Before the harness's own (test) subscriber, which would write to stdout.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .compact()
        .try_init();
}

#[derive(Serialize)]
struct JsonReport<'a> {
    machine: &'a Machine,
    sizes: &'a Sizes,
    command: String,
    elapsed_seconds: f64,
    rows: &'a [Row],
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs();
    match cli.child {
        Some(Child::RebuildChild {
            database_url,
            batch_size,
        }) => return rebuild::child(&database_url, batch_size).await,
        Some(Child::ProfileStatements {
            log,
            clients,
            seconds,
            backlog,
        }) => return profile::statements(&log, clients, seconds, backlog).await,
        None => {}
    }
    let sizes = if cli.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let only = cli
        .only
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let command = format!(
        "cargo run --release -p bench --{}{}{}",
        if cli.quick { " --quick" } else { "" },
        if cli.json { " --json" } else { "" },
        if only.is_empty() {
            String::new()
        } else {
            format!(" --only {only}")
        }
    );
    let machine = machine().await?;
    if !cli.json {
        println!("machine: {}", machine.line());
        println!("command: {command}  ({} sizes)", sizes.mode);
        println!();
    }
    let started = Instant::now();
    let run = scenarios::run_all(&sizes, &cli.only);
    let rows = tokio::select! {
        rows = run => rows?,
        _ = tokio::signal::ctrl_c() => {
            // Dropping the run drops its databases and streams.
            anyhow::bail!("interrupted");
        }
    };
    let elapsed = started.elapsed();
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&JsonReport {
                machine: &machine,
                sizes: &sizes,
                command,
                elapsed_seconds: elapsed.as_secs_f64(),
                rows: &rows,
            })?
        );
    } else {
        println!("{}", report::table(&rows));
        println!();
        println!(
            "total {}, load average {} at the end",
            report::seconds(elapsed),
            load_average()
        );
    }
    Ok(())
}
