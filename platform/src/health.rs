//! `/healthz` (the process is alive), `/readyz` (database and broker reachable) and `/metrics`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A readiness check of a service's own: the names of what is stuck (empty = fine).
pub type StuckCheck = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// What `/readyz` checks (the database, the broker and, where a service has one, its own
/// check), and what it shows of the data keys' protection.
#[derive(Clone)]
pub struct Probes {
    /// The pool `/readyz` asks (`pg_is_in_recovery()`): not ready unless it answers within 2 s.
    pub pool: PgPool,
    /// The broker connection: not ready unless it is connected.
    pub nats: async_nats::Client,
    /// projection-service: the consumers that stopped advancing while events wait.
    pub stalled: Option<StuckCheck>,
    /// How data keys are protected (`crate::personal::key_protection`): shown, never failing.
    pub key_protection: &'static str,
}

/// The process-wide Prometheus recorder (installed once, even when tests build many apps).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            let sizes = [
                1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 10000.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), &sizes))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_folded".into()), &sizes))
                .expect("non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder is already installed; then ours stays unused.
            let _ = metrics::set_global_recorder(recorder);
            describe_platform_metrics();
            handle
        })
        .clone()
}

/// The `# HELP` text of the families this crate records (`promtool check metrics` wants one on
/// every family; a dashboard shows it). Each service describes its own families the same way.
fn describe_platform_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by method, route and status"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time from receiving an HTTP request to answering it, by method, route and status"
    );
    describe_counter!(
        "http_shed_requests_total",
        "Requests answered 503 at once because the instance was at HTTP_MAX_IN_FLIGHT"
    );
    describe_counter!(
        "http_rate_limited_total",
        "Requests refused with 429: the API key was over its rate limit"
    );
    describe_gauge!("http_connections_open", "HTTP connections open now");
    describe_counter!(
        "http_connections_refused_total",
        "Connections closed unserved because the instance was at HTTP_MAX_CONNECTIONS"
    );
    describe_counter!(
        "http_connections_closed_total",
        "Connections the server closed, by reason (header_read_timeout, idle_timeout)"
    );
    describe_counter!(
        "auth_key_lookups_total",
        "API-key lookups, by result: granted_from_cache, refused_from_cache, found, unknown"
    );
    describe_counter!(
        "auth_cache_invalidations_total",
        "Times the API-key cache was emptied because keys, users or projects changed"
    );
    describe_gauge!(
        "database_login_privileged",
        "1 when a pool's database login is a superuser, owns the tables or bypasses row-level security"
    );
    describe_counter!(
        "database_host_switches_total",
        "Times a pool over several database hosts moved its new connections to another host"
    );
    describe_gauge!(
        "database_host_available",
        "1 while a host of a pool's database URL qualifies for its target_session_attrs, 0 while none does"
    );
    describe_counter!(
        "retention_rows_deleted_total",
        "Rows the retention sweepers deleted, by table"
    );
    describe_histogram!(
        "retention_sweep_seconds",
        Unit::Seconds,
        "Time one retention sweep of a table took"
    );
    describe_gauge!(
        "retention_oldest_age_seconds",
        Unit::Seconds,
        "Age of the oldest row retention governs in a table, after the last sweep"
    );
    describe_counter!(
        "retention_sweep_failures_total",
        "Retention sweeps that failed, by sweeper"
    );
}

/// `/healthz`, `/readyz`, `/metrics`, documented.
pub fn router(probes: Probes) -> OpenApiRouter {
    // Install the recorder now, before anything is counted (it is process-wide and lazy).
    metrics_handle();
    OpenApiRouter::new()
        .routes(routes!(alive))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .with_state(probes)
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", operation_id = "check_liveness", tag = "operations", responses((status = 200, description = "Alive")))]
async fn alive() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// The database and the broker are reachable; which database host the service writes to.
#[utoipa::path(get, path = "/readyz", operation_id = "check_readiness", tag = "operations", responses(
    (status = 200, description = "Ready: the body says `database` and `broker` are true, and `database_host` (`host:port`) is the server the service uses, `database_primary` whether it is a primary"),
    (status = 503, description = "Not ready: the body says which dependency is down"),
))]
async fn ready(State(probes): State<Probes>) -> impl IntoResponse {
    // The pool's own connection: on a URL of several hosts, the one a failover moved it to.
    let in_recovery = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar!(r#"select pg_is_in_recovery() as "in_recovery!""#)
            .fetch_one(&probes.pool),
    )
    .await
    .ok()
    .and_then(Result::ok);
    let database = in_recovery.is_some();
    let broker = probes.nats.connection_state() == async_nats::connection::State::Connected;
    let mut body = json!({
        "database": database,
        "database_host": crate::db::host_port(&probes.pool.connect_options()),
        "database_primary": in_recovery.map(|standby| !standby),
        "broker": broker,
        "data_keys": probes.key_protection,
    });
    let mut ready = database && broker;
    if let Some(stalled) = &probes.stalled {
        let stalled = stalled();
        ready &= stalled.is_empty();
        body["stalled_consumers"] = json!(stalled);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(get, path = "/metrics", operation_id = "get_metrics", tag = "operations", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
}
