//! The operator CLI. Exit codes: 0 done; 1 done, and found something wrong (`verify` found a
//! difference, `dead-letters retry` left events parked); 2 bad usage; 3 could not run (database
//! or broker unreachable, ...).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use projection_service::dead_letters;
use projection_service::projections::Projection;
use uuid::Uuid;

/// Rebuild, verify and inspect the Ventros read tables and their consumers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    settings: platform::Settings,
    /// Events per batch (rebuild, verify).
    #[arg(long, default_value_t = 2_000, global = true)]
    batch_size: i64,
    /// Print the result as JSON (for scripts) instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Serve Prometheus metrics (`replay_events_total`, `replay_events_expected`) at
    /// http://<addr>/metrics while the command runs.
    #[arg(long, env = "REPLAY_METRICS_ADDR", global = true)]
    metrics_addr: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Rebuild projections from the event store: new tables built beside the live ones and swapped
    /// in (with --tenant: that tenant's rows merged into the live tables).
    Rebuild {
        #[arg(long, value_enum, default_value = "all")]
        projection: Which,
        /// Only this tenant's rows.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Rebuild into temporary tables and compare with the live ones; exit 1 on any difference.
    Verify {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Per consumer: acknowledged position, pending, unacked, redelivered, parked; per projection:
    /// rows, events taken care of, events behind; the outbox backlog; per table the retention
    /// sweepers prune: rows, the oldest one's age, rows past their retention.
    Status {
        /// The retention periods to report against (the command-service's settings).
        #[command(flatten)]
        retention: platform::retention::RetentionPeriods,
    },
    /// Events a projection worker could not apply.
    #[command(subcommand)]
    DeadLetters(DeadLetters),
    /// Seal the personal fields of events, outbox rows, audit rows, dead letters and snapshots
    /// that the previous release stored in the clear, each under its contact's key (created where
    /// missing); a forgotten contact's are dropped. The one sanctioned rewrite of history:
    /// idempotent, resumable, safe beside live traffic.
    EncryptHistory {
        /// Count what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The key-encryption key that wraps the contacts' data keys.
    #[command(subcommand)]
    Kek(Kek),
}

#[derive(Subcommand)]
enum Kek {
    /// Print a new random KEK (base64, for DATA_KEK or the file DATA_KEK_FILE names).
    Generate,
    /// Wrap every data key under DATA_KEK, unwrapping with DATA_KEK_PREVIOUS (or none, for keys
    /// stored unwrapped): run with the services already holding both, then drop the old one.
    Rotate,
    /// How many keys each KEK wraps (and how many were destroyed).
    Status,
}

#[derive(Subcommand)]
enum DeadLetters {
    /// The parked events, oldest first.
    List {
        #[arg(long)]
        consumer: Option<String>,
    },
    /// Apply parked events again (after the cause is fixed); exit 1 if some still fail.
    Retry {
        /// Only these (ids from `list`); all parked events by default.
        #[arg(long = "id")]
        ids: Vec<Uuid>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Which {
    Contacts,
    Sessions,
    Messages,
    DomainEventLogs,
    All,
}

impl Which {
    fn projections(self) -> Vec<Projection> {
        match self {
            Self::Contacts => vec![Projection::Contacts],
            Self::Sessions => vec![Projection::Sessions],
            Self::Messages => vec![Projection::Messages],
            Self::DomainEventLogs => vec![Projection::DomainEventLogs],
            Self::All => Projection::ALL.to_vec(),
        }
    }
}

fn progress_bar(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} events ({per_sec}, ETA {eta})",
        )
        .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn print<T: serde::Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(value)?);
    } else {
        print!("{}", text());
    }
    Ok(())
}

/// Serves `/metrics` in the background for as long as the command runs.
async fn serve_metrics(addr: &str) -> anyhow::Result<()> {
    let handle = platform::health::metrics_handle();
    metrics::describe_gauge!(
        "replay_events_expected",
        metrics::Unit::Count,
        "Events the running rebuild or verify expects to read from the store"
    );
    metrics::describe_counter!(
        "replay_events_total",
        "Events the running rebuild or verify has read from the store so far"
    );
    metrics::describe_counter!(
        "encrypt_history_events_total",
        "Events encrypt-history has gone through so far (sealed, or found sealed already)"
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move { handle.render() }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    if let Some(addr) = &cli.metrics_addr {
        serve_metrics(addr).await?;
    }
    // The operator's tool logs in as the owner: a rebuild swaps tables and spans tenants.
    let pool = platform::db::connect_and_migrate(cli.settings.migration_url(), 4).await?;
    if let Cmd::Kek(Kek::Generate) = cli.command {
        // No database: a KEK is made offline and kept out of it.
        println!("{}", platform::crypto::Kek::generate_base64().as_str());
        return Ok(true);
    }
    let keys = platform::personal::DataKeys::new(cli.settings.keyring()?, 0);
    let bar = progress_bar(cli.json);
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    match cli.command {
        Cmd::Rebuild { projection, tenant } => {
            let report = replay_tool::rebuild(
                &pool,
                &keys,
                &projection.projections(),
                tenant.as_deref(),
                cli.batch_size,
                &progress,
            )
            .await?;
            bar.finish_and_clear();
            print(cli.json, &report, || {
                format!(
                    "rebuilt from {} events ({} projection updates); {}\n",
                    report.events,
                    report.applied,
                    report.phases_line()
                )
            })?;
            Ok(true)
        }
        Cmd::Verify { tenant } => {
            let diffs =
                replay_tool::verify(&pool, &keys, tenant.as_deref(), cli.batch_size, &progress)
                    .await?;
            bar.finish_and_clear();
            print(cli.json, &diffs, || {
                if diffs.is_empty() {
                    "live read tables equal a rebuild from the store\n".to_owned()
                } else {
                    diffs
                        .iter()
                        .map(|d| {
                            format!(
                                "{}: {} live rows differ, {} rebuilt rows differ (e.g. {})\n",
                                d.table,
                                d.only_live,
                                d.only_rebuilt,
                                d.sample_ids.join(", ")
                            )
                        })
                        .collect()
                }
            })?;
            Ok(diffs.is_empty())
        }
        Cmd::Status { retention } => {
            bar.finish_and_clear();
            // Stream and consumer info only: the projection-service login is enough.
            let nats = cli
                .settings
                .nats_auth
                .apply(async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5)))
                .await?
                .connect(platform::nats::server_list(&cli.settings.nats_url))
                .await?;
            let status =
                replay_tool::status::status(&pool, &nats, &cli.settings.stream(), &retention)
                    .await?;
            print(cli.json, &status, || status.to_string())?;
            Ok(true)
        }
        Cmd::DeadLetters(DeadLetters::List { consumer }) => {
            bar.finish_and_clear();
            let parked = dead_letters::list(&pool, consumer.as_deref()).await?;
            print(cli.json, &parked, || {
                if parked.is_empty() {
                    return "no parked events\n".to_owned();
                }
                parked
                    .iter()
                    .map(|d| {
                        format!(
                            "{} {} {} {} #{} (tenant {}, {} attempt(s), parked {}): {}\n",
                            d.id,
                            d.consumer_name,
                            d.event_type,
                            d.aggregate_id,
                            d.sequence_number,
                            d.tenant_id,
                            d.attempts,
                            d.parked_at.and_utc().to_rfc3339(),
                            d.error
                        )
                    })
                    .collect()
            })?;
            Ok(true)
        }
        Cmd::EncryptHistory { dry_run } => {
            let report = replay_tool::personal::encrypt_history(
                &pool,
                &keys,
                cli.batch_size,
                dry_run,
                &progress,
            )
            .await?;
            bar.finish_and_clear();
            print(cli.json, &report, || report.to_string())?;
            Ok(true)
        }
        Cmd::Kek(Kek::Rotate) => {
            let report =
                replay_tool::personal::rotate_kek(&pool, &keys, cli.batch_size, &progress).await?;
            bar.finish_and_clear();
            print(cli.json, &report, || report.to_string())?;
            Ok(true)
        }
        Cmd::Kek(Kek::Status) => {
            bar.finish_and_clear();
            let mut conn = pool.acquire().await?;
            let census = platform::personal::DataKeys::census(&mut conn).await?;
            let current = keys.keyring().current_id().to_owned();
            print(
                cli.json,
                &serde_json::json!({"current_kek": current, "keys": census}),
                || {
                    let mut text = format!("current KEK: {current}\n");
                    for (kek, n) in &census {
                        text.push_str(&format!("  {kek}: {n}\n"));
                    }
                    text
                },
            )?;
            Ok(true)
        }
        Cmd::Kek(Kek::Generate) => unreachable!("answered before connecting"),
        Cmd::DeadLetters(DeadLetters::Retry { ids }) => {
            bar.finish_and_clear();
            let ids = (!ids.is_empty()).then_some(ids);
            let report = dead_letters::retry(&pool, &keys, ids.as_deref()).await?;
            print(cli.json, &report, || {
                format!(
                    "{} resolved, {} still failing\n",
                    report.resolved, report.still_failing
                )
            })?;
            Ok(report.still_failing == 0)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    platform::telemetry::run("replay-tool", serve(cli))
}

async fn serve(cli: Cli) -> ExitCode {
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("replay-tool: {e:#}");
            ExitCode::from(3)
        }
    }
}
