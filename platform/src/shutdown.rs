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

/// The first pause of [`retry_until_stopped`].
const FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_millis(200);

/// An attempt that ran this long before it failed had been working (leading for hours, say,
/// until its connection was lost): its failure starts a new series of pauses, at the shortest.
const FRESH_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `attempt` again after each failure until one ends without error or `shutdown` is
/// cancelled: the background loops that lead by an advisory lock (the outbox relay, the
/// retention sweepers) stand for election again this way. `failed` is told of each failure
/// before the pause, which starts at 200 ms and doubles up to `max_backoff` while attempts keep
/// failing at once; a failure after an attempt that ran for a while ([`FRESH_AFTER`]) pauses
/// 200 ms again.
pub async fn retry_until_stopped<A, Fut>(
    shutdown: &CancellationToken,
    max_backoff: std::time::Duration,
    mut attempt: A,
    mut failed: impl FnMut(&anyhow::Error),
) where
    A: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut backoff = FIRST_BACKOFF;
    while !shutdown.is_cancelled() {
        let started = tokio::time::Instant::now();
        match attempt().await {
            Ok(()) => return,
            Err(e) => {
                if started.elapsed() >= FRESH_AFTER {
                    backoff = FIRST_BACKOFF;
                }
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pauses_double_while_attempts_fail_at_once_and_start_over_after_one_that_ran() {
        let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let shutdown = CancellationToken::new();
        let attempt = || {
            let starts = starts.clone();
            async move {
                let n = {
                    let mut starts = starts.lock().unwrap();
                    starts.push(Instant::now());
                    starts.len()
                };
                match n {
                    // Led for a minute, then lost its connection.
                    4 => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        anyhow::bail!("connection lost")
                    }
                    6 => Ok(()),
                    _ => anyhow::bail!("refused"),
                }
            }
        };
        let mut failures = 0;
        retry_until_stopped(&shutdown, Duration::from_secs(5), attempt, |_| {
            failures += 1
        })
        .await;

        let starts = starts.lock().unwrap();
        let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(failures, 5);
        assert_eq!(
            gaps,
            [
                Duration::from_millis(200),
                Duration::from_millis(400),
                Duration::from_millis(800),
                Duration::from_secs(60) + Duration::from_millis(200),
                Duration::from_millis(400),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_pause_never_exceeds_the_longest_given() {
        let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let shutdown = CancellationToken::new();
        let attempt = || {
            let starts = starts.clone();
            async move {
                let mut starts = starts.lock().unwrap();
                starts.push(Instant::now());
                if starts.len() < 8 {
                    anyhow::bail!("refused")
                }
                Ok(())
            }
        };
        retry_until_stopped(&shutdown, Duration::from_secs(1), attempt, |_| {}).await;
        let starts = starts.lock().unwrap();
        let longest = starts.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert_eq!(longest, Duration::from_secs(1));
    }
}
