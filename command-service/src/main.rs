use clap::{Parser, Subcommand};
use command_service::bootstrap::{bootstrap, BootstrapSpec};
use command_service::{App, CommandConfig};

/// The Ventros command service: HTTP commands → event store → outbox → NATS JetStream.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Seconds a shutdown may take to finish in-flight work before the process gives up.
    #[arg(
        long,
        env = "SHUTDOWN_DEADLINE_SECS",
        default_value_t = 25,
        global = true
    )]
    shutdown_deadline_secs: u64,
    #[command(flatten)]
    config: CommandConfig,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the HTTP API, relay the outbox and sweep idle sessions (the default).
    Serve,
    /// Create the database if missing and apply the migrations, then exit (a deploy's migration
    /// step; the services also migrate at start, serialised by sqlx's lock).
    Migrate,
    /// Create (idempotently) a user, a project with its tenant and an API key; print them as JSON.
    Bootstrap(BootstrapSpec),
}

impl Cli {
    fn shutdown_deadline(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_deadline_secs)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    platform::telemetry::run("command-service", serve(cli))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let deadline = cli.shutdown_deadline();
    match cli.command.unwrap_or(Cmd::Serve) {
        Cmd::Serve => {
            let app = App::build(cli.config).await?;
            tracing::info!(addr = %app.local_addr(), "command-service listening");
            let token = app.shutdown_token();
            platform::shutdown::cancel_on_signal(token.clone());
            platform::shutdown::run_with_deadline(app.run_until_stopped(), token, deadline).await?;
            tracing::info!("command-service stopped");
        }
        Cmd::Migrate => {
            cli.config.platform.migrate().await?;
            let applied = platform::db::MIGRATOR.iter().count();
            tracing::info!(migrations = applied, "database migrated");
        }
        Cmd::Bootstrap(spec) => {
            // Users, projects and keys are the owner's to create: the request role may not even
            // read them.
            let pool =
                platform::db::connect_and_migrate(cli.config.platform.migration_url(), 2).await?;
            let done = bootstrap(&pool, &spec).await?;
            println!("{}", serde_json::to_string_pretty(&done)?);
        }
    }
    Ok(())
}
