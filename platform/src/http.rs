//! Extractors whose rejections are problem+json, the fallbacks, and the layers every router gets.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::problem::ApiError;

/// Default request body limit (API.md: 256 KiB).
pub const BODY_LIMIT: usize = 256 * 1024;

/// How long a request may take. One that takes longer is answered 503, problem+json, and its
/// handler is dropped (an open transaction rolls back; a command caught at its commit may have
/// taken effect, so the answer says to retry with the same `Idempotency-Key`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `axum::extract::Path`, with bad ids answered as problem+json 400.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query`, with bad parameters answered as problem+json 400.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// A NUL (`%00`) in the path or the query is refused before any handler runs: no text column
/// of PostgreSQL can hold or be compared with it (the database would answer an error, a 500).
async fn refuse_nul(request: Request, next: Next) -> Response {
    let uri = request.uri();
    let has_nul = |s: &str| s.as_bytes().windows(3).any(|w| w == b"%00");
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return ApiError::BadRequest("the path and query must not contain NUL (%00)".into())
            .into_response();
    }
    next.run(request).await
}

/// The span of a request: its route, a correlation id the handler fills in, and, when the caller
/// sent a W3C `traceparent`, the caller's trace as parent.
fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str());
    let span = tracing::info_span!(
        "request",
        method = method_label(request.method()),
        route,
        correlation_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    if let Some(parent) = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        crate::telemetry::continue_trace(&span, parent);
    }
    if let Some(trace_id) = crate::telemetry::trace_id(&span) {
        span.record("trace_id", trace_id);
    }
    span
}

/// Counts every request and times it, by method, matched route (not the raw path, so ids do not
/// explode the label set) and status.
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = method_label(request.method()).to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// A request's method as a metric label: one of the methods HTTP defines, or `other`. A label
/// taken as sent would let any client, without a key, make a new time series per request.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

async fn deadline(
    axum::extract::State(timeout): axum::extract::State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout = ?timeout, "request timed out");
            ApiError::Unavailable {
                detail: format!(
                    "the request took longer than {} s and was abandoned; a command may or may \
                     not have taken effect: retry it with the same Idempotency-Key",
                    timeout.as_secs_f64()
                ),
                retry_after_secs: 1,
            }
            .into_response()
        }
    }
}

/// The layers and fallbacks every service's router gets, with the per-key rate limit.
pub fn finish_router(
    router: Router,
    limiter: Option<std::sync::Arc<crate::rate_limit::RateLimiter>>,
) -> Router {
    let router = match limiter {
        Some(limiter) => router.layer(middleware::from_fn_with_state(
            limiter,
            crate::rate_limit::limit,
        )),
        None => router,
    };
    finish_router_with(router, REQUEST_TIMEOUT)
}

/// [`finish_router`] with another request timeout (tests).
pub fn finish_router_with(router: Router, timeout: Duration) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(refuse_nul))
        .layer(middleware::from_fn_with_state(timeout, deadline))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .layer(middleware::from_fn(record_metrics))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use axum::http::StatusCode;

    use super::*;

    #[tokio::test]
    async fn a_request_over_the_timeout_is_answered_503_problem_json() {
        let router = finish_router_with(
            Router::new()
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        "done"
                    }),
                )
                .route("/fast", get(|| async { "done" })),
            Duration::from_millis(100),
        );
        let slow = router
            .clone()
            .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(slow.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            slow.headers()["content-type"],
            "application/problem+json",
            "{:?}",
            slow.headers()
        );
        assert_eq!(slow.headers()["retry-after"], "1");
        let body = axum::body::to_bytes(slow.into_body(), usize::MAX)
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["status"], 503);
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("Idempotency-Key")),
            "{problem}"
        );

        let fast = router
            .oneshot(Request::get("/fast").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(fast.status(), StatusCode::OK);
    }
}
