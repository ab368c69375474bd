//! Shutdown: SIGTERM or Ctrl-C cancels a token every long-running task watches.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on SIGTERM or Ctrl-C.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
            _ = term => tracing::info!("SIGTERM received, shutting down"),
        }
        token.cancel();
    });
}

/// Runs a service until it stops by itself, or until `token` is cancelled and it finishes its
/// in-flight work; past `deadline` after the cancel it is abandoned with an error (an orchestrator
/// would kill it anyway).
pub async fn run_with_deadline(
    service: impl std::future::Future<Output = anyhow::Result<()>>,
    token: CancellationToken,
    deadline: std::time::Duration,
) -> anyhow::Result<()> {
    tokio::pin!(service);
    tokio::select! {
        result = &mut service => result,
        _ = token.cancelled() => {
            match tokio::time::timeout(deadline, service).await {
                Ok(result) => result,
                Err(_) => anyhow::bail!("in-flight work did not finish within {deadline:?} of the shutdown signal"),
            }
        }
    }
}
