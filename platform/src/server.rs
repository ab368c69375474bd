//! Serving a router on a listener with limits a client cannot talk its way past: how long it may
//! take to send a request's headers, how long a connection may sit idle, how many connections may
//! be open and how many requests may be in flight. Both services serve through [`serve`].
//!
//! hyper's own header-read timeout is not used: it starts as soon as a keep-alive connection waits
//! for its next request, so it would also be the idle timeout. Here a watchdog per connection
//! keeps the two apart: the header clock starts at a request's first byte, the idle clock at the
//! last byte moved while no handler runs.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::problem::ApiError;

/// The HTTP server's limits (both services).
#[derive(Debug, Clone, clap::Args)]
pub struct HttpLimits {
    /// How long a client may take to send a request's headers, from their first byte, in
    /// milliseconds; past it the connection is closed (a client trickling a header byte by byte
    /// holds a connection no longer). 0: no limit.
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// How long a connection may stay open with no request running and no byte moving, in
    /// milliseconds (a keep-alive connection between requests, or a client that stopped reading
    /// its answer); past it the connection is closed. 0: no limit.
    #[arg(long, env = "HTTP_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// Connections open at once; one more is accepted and closed at once, unserved. 0: no limit.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Requests handled at once; one more is answered 503 problem+json with `Retry-After` at
    /// once, without any work (`/healthz`, `/readyz` and `/metrics` have an allowance of their
    /// own). 0: no limit.
    #[arg(long, env = "HTTP_MAX_IN_FLIGHT", default_value_t = 1_024)]
    pub max_in_flight: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        crate::defaults::defaults()
    }
}

impl HttpLimits {
    fn header_read_timeout(&self) -> Option<Duration> {
        (self.header_read_timeout_ms > 0)
            .then(|| Duration::from_millis(self.header_read_timeout_ms))
    }

    fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_ms > 0).then(|| Duration::from_millis(self.idle_timeout_ms))
    }
}

/// Requests the operators' routes may have in flight at once, apart from `HTTP_MAX_IN_FLIGHT`:
/// a probe or a scrape is answered while the API sheds load, and a flood of them (they need no
/// key) cannot use them to get past the limit.
const PROBES_IN_FLIGHT: usize = 32;

/// The operators' routes: they never wait behind the API's requests.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, lets the requests in flight finish and returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let router = shed_over(router, limits.max_in_flight);
    let connections =
        (limits.max_connections > 0).then(|| Arc::new(Semaphore::new(limits.max_connections)));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.timer(TokioTimer::new()).header_read_timeout(None);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Past the cap a connection is accepted and closed at once rather than left in the
        // kernel's backlog: the client learns at once (a load balancer tries another instance),
        // the refusal is counted, and the probes of an orchestrator are not queued behind it.
        let permit = match &connections {
            Some(connections) => match connections.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    metrics::counter!("http_connections_refused_total").increment(1);
                    drop(stream);
                    continue;
                }
            },
            None => None,
        };
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let service = {
            let (router, activity) = (router.clone(), activity.clone());
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let running = activity.request_started();
                let answer = router.clone().oneshot(request.map(axum::body::Body::new));
                async move {
                    let answer = answer.await;
                    drop(running);
                    answer
                }
            })
        };
        let connection = graceful.watch(http1.serve_connection(io, service));
        let (header, idle) = (limits.header_read_timeout(), limits.idle_timeout());
        tokio::spawn(async move {
            let _permit = permit;
            metrics::gauge!("http_connections_open").increment(1.0);
            tokio::select! {
                served = connection => {
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                reason = activity.expired(header, idle) => {
                    tracing::debug!(reason, "closing a connection");
                    metrics::counter!("http_connections_closed_total", "reason" => reason).increment(1);
                }
            }
            metrics::gauge!("http_connections_open").decrement(1.0);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// As `axum::serve` does: a connection the peer gave up on before it was accepted is nothing; out
/// of file descriptors (or the like), pause before accepting again rather than spin.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed; pausing 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The load-shedding layer: at most `max_in_flight` requests (0: no limit) run at once.
fn shed_over(router: Router, max_in_flight: usize) -> Router {
    if max_in_flight == 0 {
        return router;
    }
    let permits = Arc::new(InFlight {
        requests: Arc::new(Semaphore::new(max_in_flight)),
        probes: Arc::new(Semaphore::new(PROBES_IN_FLIGHT)),
    });
    router.layer(middleware::from_fn_with_state(permits, shed))
}

struct InFlight {
    requests: Arc<Semaphore>,
    probes: Arc<Semaphore>,
}

/// Over the limit a request is answered at once: queued, it would only wait behind the requests
/// that made the service slow, and hold its connection meanwhile.
async fn shed(State(in_flight): State<Arc<InFlight>>, request: Request, next: Next) -> Response {
    let permits = if is_probe(request.uri().path()) {
        &in_flight.probes
    } else {
        &in_flight.requests
    };
    let Ok(_permit) = permits.clone().try_acquire_owned() else {
        metrics::counter!("http_shed_requests_total").increment(1);
        return ApiError::Unavailable {
            detail: "the service is handling as many requests as it may; retry shortly".into(),
            retry_after_secs: 1,
        }
        .into_response();
    };
    next.run(request).await
}

/// What a connection's watchdog knows: when a byte last moved, when the request head being read
/// began, and whether a handler runs. Times are milliseconds since the connection opened.
struct Activity {
    opened: Instant,
    last_io: AtomicU64,
    head_started: AtomicU64,
    running: AtomicUsize,
    changed: Notify,
}

const NO_HEAD: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_io: AtomicU64::new(0),
            head_started: AtomicU64::new(NO_HEAD),
            running: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        // Bytes while no handler runs are a request head (its first byte starts the clock).
        if self.running.load(Ordering::Acquire) == 0
            && self
                .head_started
                .compare_exchange(NO_HEAD, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    fn request_started(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NO_HEAD, Ordering::Release);
        self.changed.notify_one();
        Running(self.clone())
    }

    /// Completes when the connection is past a limit, with the limit's name; never while a
    /// handler runs (a handler is bounded by the request timeout).
    async fn expired(&self, header: Option<Duration>, idle: Option<Duration>) -> &'static str {
        loop {
            let changed = self.changed.notified();
            let deadline = if self.running.load(Ordering::Acquire) > 0 {
                None
            } else {
                match self.head_started.load(Ordering::Acquire) {
                    NO_HEAD => {
                        idle.map(|i| (self.last_io.load(Ordering::Relaxed), i, "idle_timeout"))
                    }
                    started => header.map(|h| (started, h, "header_read_timeout")),
                }
            };
            match deadline {
                Some((from, limit, reason)) => {
                    let at = self.opened + Duration::from_millis(from) + limit;
                    if Instant::now() >= at {
                        return reason;
                    }
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// A handler running on the connection; dropped when its answer is ready.
struct Running(Arc<Activity>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.wrote();
        self.0.running.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

/// A connection's socket, telling its [`Activity`] when bytes move.
struct Watched {
    inner: tokio::net::TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
