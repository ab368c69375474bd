use clap::Parser;
use projection_service::{App, ProjectionConfig};

/// The Ventros projection service: JetStream → contacts, sessions, domain_event_logs → queries.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: ProjectionConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = platform::telemetry::init("projection-service");
    let app = App::build(cli.config).await?;
    tracing::info!(addr = %app.local_addr(), "projection-service listening");
    platform::shutdown::cancel_on_signal(app.shutdown_token());
    app.run_until_stopped().await?;
    tracing::info!("projection-service stopped");
    Ok(())
}
