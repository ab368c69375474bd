//! A service running in this process: on the test's runtime, or on a runtime of its own.
//!
//! In production each service is a process with its own tokio runtime. The tests share the
//! test's runtime, which is cheaper and enough for behaviour; the benchmark can give each service
//! a runtime of its own (`BENCH_SERVICE_THREADS`) to see what sharing the worker threads with
//! the load generator costs the latency.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What a started service hands back: its address, how to stop it, and the future that serves
/// until it is stopped.
pub struct Started {
    pub addr: String,
    pub token: CancellationToken,
    pub serve: BoxFuture<'static, anyhow::Result<()>>,
}

/// A service serving in the background; told to stop when dropped (a service on a runtime of
/// its own would otherwise outlive its test or benchmark scenario).
pub struct Running {
    token: CancellationToken,
    /// Ends when the service has stopped (and, on a runtime of its own, that runtime is shut).
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Stops the service and waits (at most 30 s) until it has.
    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(handle) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), handle).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Starts a service with `start` (which builds it and binds its listener) and serves it in the
/// background: on the caller's runtime when `threads` is `None`, else on a multi-threaded
/// runtime of its own with that many worker threads, where everything the service builds (its
/// pools, its broker connection, its listener) is driven by that runtime.
pub async fn launch<F>(threads: Option<usize>, start: F) -> (String, Running)
where
    F: Future<Output = Started> + Send + 'static,
{
    let Some(threads) = threads else {
        let Started { addr, token, serve } = start.await;
        let handle = Some(tokio::spawn(serve));
        return (addr, Running { token, handle });
    };
    let (started_tx, started_rx) = oneshot::channel();
    let (ended_tx, ended_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("service-runtime".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()
                .expect("a service's runtime");
            let ended = runtime.block_on(async move {
                let Started { addr, token, serve } = start.await;
                let _ = started_tx.send((addr, token));
                serve.await
            });
            // Tasks the service left behind (e.g. a pool's maintenance) are dropped here.
            runtime.shutdown_timeout(Duration::from_secs(5));
            let _ = ended_tx.send(ended);
        })
        .expect("a service's runtime thread");
    let (addr, token) = started_rx
        .await
        .expect("the service panicked while it started");
    let handle = Some(tokio::spawn(async move {
        ended_rx
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the service's runtime panicked")))
    }));
    (addr, Running { token, handle })
}
