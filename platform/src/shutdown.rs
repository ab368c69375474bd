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

/// Runs `attempt` again after each failure until one ends without error or `shutdown` is
/// cancelled: the background loops that lead by an advisory lock (the outbox relay, the
/// retention sweepers) stand for election again this way. `failed` is told of each failure
/// before the pause, which starts at 200 ms and doubles up to `max_backoff`.
pub async fn retry_until_stopped<A, Fut>(
    shutdown: &CancellationToken,
    max_backoff: std::time::Duration,
    mut attempt: A,
    mut failed: impl FnMut(&anyhow::Error),
) where
    A: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut backoff = std::time::Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match attempt().await {
            Ok(()) => return,
            Err(e) => {
                failed(&e);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}
