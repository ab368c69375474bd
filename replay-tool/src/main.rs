use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use projection_service::projections::Projection;

/// Rebuild and verify the Ventros read tables from the event history.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// PostgreSQL URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/ventros",
        global = true
    )]
    database_url: String,
    /// Events per batch.
    #[arg(long, default_value_t = 2_000, global = true)]
    batch_size: i64,
    /// Print the result as JSON (for scripts) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Rebuild projections from the event store (in one transaction).
    Rebuild {
        #[arg(long, value_enum, default_value = "all")]
        projection: Which,
        /// Only this tenant's rows.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Rebuild into a rolled-back transaction and compare with the live tables; exit 1 on any
    /// difference.
    Verify {
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Which {
    Contacts,
    Sessions,
    DomainEventLogs,
    All,
}

impl Which {
    fn projections(self) -> Vec<Projection> {
        match self {
            Self::Contacts => vec![Projection::Contacts],
            Self::Sessions => vec![Projection::Sessions],
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

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let _telemetry = platform::telemetry::init("replay-tool");
    let pool = platform::db::connect_and_migrate(&cli.database_url, 4).await?;
    let bar = progress_bar(cli.json);
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    match cli.command {
        Cmd::Rebuild { projection, tenant } => {
            let report = replay_tool::rebuild(
                &pool,
                &projection.projections(),
                tenant.as_deref(),
                cli.batch_size,
                &progress,
            )
            .await?;
            bar.finish_and_clear();
            if cli.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "rebuilt from {} events ({} projection updates)",
                    report.events, report.applied
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Verify { tenant } => {
            let diffs =
                replay_tool::verify(&pool, tenant.as_deref(), cli.batch_size, &progress).await?;
            bar.finish_and_clear();
            if cli.json {
                println!("{}", serde_json::to_string(&diffs)?);
            } else if diffs.is_empty() {
                println!("live read tables equal a rebuild from the store");
            } else {
                for d in &diffs {
                    println!(
                        "{}: {} live rows differ, {} rebuilt rows differ (e.g. {})",
                        d.table,
                        d.only_live,
                        d.only_rebuilt,
                        d.sample_ids.join(", ")
                    );
                }
            }
            Ok(if diffs.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
