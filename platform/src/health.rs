//! `/healthz` (the process is alive), `/readyz` (database and broker reachable) and `/metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(Clone)]
pub struct Probes {
    pub pool: PgPool,
    pub nats: async_nats::Client,
}

/// The process-wide Prometheus recorder (installed once, even when tests build many apps).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder is already installed; then ours stays unused.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
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
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
async fn alive() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// The database and the broker are reachable.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready: the body says `database` and `broker` are true"),
    (status = 503, description = "Not ready: the body says which dependency is down"),
))]
async fn ready(State(probes): State<Probes>) -> impl IntoResponse {
    let database = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("select 1").execute(&probes.pool),
    )
    .await
    .map(|r| r.is_ok())
    .unwrap_or(false);
    let broker = probes.nats.connection_state() == async_nats::connection::State::Connected;
    let status = if database && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "database": database, "broker": broker })),
    )
}

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
}
