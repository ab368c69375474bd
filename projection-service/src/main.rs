use clap::Parser;
use projection_service::{App, ProjectionConfig};

/// The Ventros projection service: JetStream → contacts, sessions, domain_event_logs → queries.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Seconds a shutdown may take to finish in-flight work before the process gives up.
    #[arg(
        long,
        env = "SHUTDOWN_DEADLINE_SECS",
        default_value_t = 25,
        global = true
    )]
    shutdown_deadline_secs: u64,
    #[command(flatten)]
    config: ProjectionConfig,
}

impl Cli {
    fn shutdown_deadline(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_deadline_secs)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    platform::telemetry::run("projection-service", serve(cli))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let deadline = cli.shutdown_deadline();
    let app = App::build(cli.config).await?;
    tracing::info!(addr = %app.local_addr(), "projection-service listening");
    let token = app.shutdown_token();
    platform::shutdown::cancel_on_signal(token.clone());
    platform::shutdown::run_with_deadline(app.run_until_stopped(), token, deadline).await?;
    tracing::info!("projection-service stopped");
    Ok(())
}
