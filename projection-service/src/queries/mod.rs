//! The read-model query endpoints of API.md, under `/v1/projects/{project_id}`. They read only
//! the projection tables (and, for a contact's history, the store), always scoped by the caller's
//! tenant: a row of another tenant is 404, exactly like a row that does not exist.

mod access;
mod changes;
mod contacts;
mod event_log;
mod messages;
pub mod ops;
mod sessions;
mod webhooks;

use std::time::Duration;

use axum::extract::FromRef;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use platform::event_store::EventStore;
use platform::ApiError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

#[derive(Clone)]
pub struct QueryState {
    /// Where the queries read: `QUERY_DATABASE_URL` (a read replica) when set.
    pub pool: PgPool,
    pub store: EventStore,
    /// The primary (`DATABASE_URL`): asked whether an aggregate exists at all when a
    /// `min_version` read finds no row, so that a replica that lags makes the read wait, not 404.
    pub primary: PgPool,
    /// Opens the personal fields of stored events (`/contacts/{id}/events`, `/event-log`).
    pub keys: platform::personal::DataKeys,
    /// Checks the API key of each request (looked up where the queries read).
    pub auth: platform::auth::Authenticator,
    /// Wakes a waiting `min_version` read when a batch naming its aggregate commits.
    pub projected: crate::projected::Projected,
    /// Cancelled when the service stops: the change feeds end, so that a stop does not wait on
    /// them.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// What the operator routes read.
    pub ops: ops::Ops,
}

impl QueryState {
    /// A read transaction in the caller's tenant: row-level security shows its rows only.
    pub async fn tx(
        &self,
        tenant_id: &str,
    ) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, ApiError> {
        platform::db::tenant_tx(&self.pool, tenant_id)
            .await
            .map_err(ApiError::internal)
    }
}

impl FromRef<QueryState> for PgPool {
    fn from_ref(state: &QueryState) -> Self {
        state.pool.clone()
    }
}

impl FromRef<QueryState> for platform::auth::Authenticator {
    fn from_ref(state: &QueryState) -> Self {
        state.auth.clone()
    }
}

/// The query routes, documented: a route cannot be served here without being in the OpenAPI
/// document.
pub fn router(state: QueryState) -> OpenApiRouter {
    OpenApiRouter::new()
        .nest(
            "/v1/projects/{project_id}",
            contacts::router()
                .merge(sessions::router())
                .merge(messages::router())
                .merge(event_log::router())
                .merge(access::router())
                .merge(webhooks::router())
                .merge(changes::router())
                .merge(ops::router()),
        )
        .with_state(state)
}

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;
const DEFAULT_WAIT_MS: u64 = 2_000;
/// Below the 30 s request timeout, so a wait always ends in this handler's own answer.
const MAX_WAIT_MS: u64 = 25_000;

/// `?limit=&cursor=`: the cursor is the last id of the previous page (ids are time-ordered
/// UUIDv7s, and every list is ordered by id).
#[derive(Debug, Deserialize)]
pub struct PageParams {
    pub limit: Option<i64>,
    pub cursor: Option<Uuid>,
}

impl PageParams {
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::BadRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            ))),
        }
    }
}

/// A page of a list; `next_cursor` is the `cursor` of the next page (absent on the last).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A list that is one answer (its size is bounded where its rows are made): a page without a
/// next cursor.
pub fn whole_list<T: Serialize>(items: Vec<T>) -> Response {
    with_etag(
        Page {
            items,
            next_cursor: None,
        },
        None,
    )
}

/// Cuts a `limit + 1` fetch into a page and its next cursor.
pub fn page<T>(mut rows: Vec<T>, limit: i64, id: impl Fn(&T) -> Uuid) -> Page<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|r| id(r).to_string())
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}

/// A JSON answer with its `ETag`: the version for one aggregate, a content hash for a list.
pub fn with_etag(body: impl Serialize, version: Option<i64>) -> Response {
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let etag = match version {
        Some(v) => format!("\"{v}\""),
        None => format!("W/\"{}\"", &hex::encode(Sha256::digest(&bytes))[..16]),
    };
    let mut response = ([(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// `?min_version=&wait_ms=`: read-your-writes for one aggregate.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadParams {
    pub min_version: Option<i64>,
    /// How long to wait for `min_version`, in milliseconds: 0 to 25000 (default 2000).
    #[param(minimum = 0, maximum = 25000)]
    pub wait_ms: Option<u64>,
}

/// A single read's parameters: `?min_version=&wait_ms=` (read-your-writes), or one of
/// `?as_of_version=` / `?as_of=` (the row as it stood then, folded from the store).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OneParams {
    pub min_version: Option<i64>,
    /// How long to wait for `min_version`, in milliseconds: 0 to 25000 (default 2000).
    #[param(minimum = 0, maximum = 25000)]
    pub wait_ms: Option<u64>,
    /// The row as it stood right after this version, folded from the event store (404 before
    /// the first or beyond the last).
    #[param(minimum = 0)]
    pub as_of_version: Option<i64>,
    /// The row as it stood at this instant (RFC 3339): the last version whose event occurred
    /// at or before it (404 before the first).
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
}

impl OneParams {
    /// Where in the past to read; `None`: the read model now.
    pub fn at(&self) -> Result<Option<crate::projections::as_of::At>, ApiError> {
        use crate::projections::as_of::At;
        let at = match (self.as_of_version, self.as_of) {
            (Some(_), Some(_)) => {
                return Err(parameter_rule(
                    "as_of",
                    "give as_of_version or as_of, not both",
                ))
            }
            (Some(v), None) if v < 0 => {
                return Err(ApiError::BadRequest(
                    "as_of_version must be at least 0".into(),
                ))
            }
            (Some(v), None) => Some(At::Version(v)),
            (None, Some(t)) => Some(At::Instant(t)),
            (None, None) => None,
        };
        if at.is_some() && (self.min_version.is_some() || self.wait_ms.is_some()) {
            return Err(parameter_rule(
                "min_version",
                "min_version and wait_ms read the present: not with as_of_version or as_of",
            ));
        }
        Ok(at)
    }

    pub fn read(&self) -> ReadParams {
        ReadParams {
            min_version: self.min_version,
            wait_ms: self.wait_ms,
        }
    }
}

/// A 422 for query parameters that exclude each other (each is valid alone).
pub fn parameter_rule(field: &str, message: &str) -> ApiError {
    ApiError::Unprocessable {
        detail: "the request breaks a parameter rule".into(),
        errors: vec![platform::FieldProblem {
            field: field.into(),
            message: message.into(),
        }],
    }
}

/// A time-travel read's answer: the row, or 404 for a version or instant the aggregate did not
/// have (or a forgotten contact).
pub fn as_of_found<T>(
    found: Result<
        Result<crate::projections::as_of::AsOf<T>, crate::projections::as_of::Absent>,
        crate::projections::ProjectionError,
    >,
) -> Result<crate::projections::as_of::AsOf<T>, ApiError> {
    match found.map_err(ApiError::internal)? {
        Ok(found) => Ok(found),
        Err(_) => Err(not_found()),
    }
}

/// Reads a row until it holds at least `min_version`, with a deadline: it re-reads when a
/// projected batch names the aggregate (and every [`crate::projected::RECHECK`] in case a
/// notification was missed), holding no connection in between. Without `min_version` it reads
/// once. An aggregate (of this type) that is not in this tenant's store is
/// 404 at once. At the deadline, a read model still behind a version the store holds is 503 with
/// `Retry-After`; a version the store does not hold yet is 404.
pub async fn read_at_least<T, F, Fut>(
    state: &QueryState,
    tenant_id: &str,
    aggregate_type: &str,
    id: Uuid,
    params: &ReadParams,
    version_of: impl Fn(&T) -> i64,
    read: F,
) -> Result<T, ApiError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, sqlx::Error>>,
{
    // Out of bounds is refused even where nothing waits: the request says what it means.
    let wait_ms = params.wait_ms.unwrap_or(DEFAULT_WAIT_MS);
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::BadRequest(format!(
            "wait_ms must be at most {MAX_WAIT_MS}"
        )));
    }
    let Some(wanted) = params.min_version else {
        return read()
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(not_found);
    };
    let wait = Duration::from_millis(wait_ms);
    let deadline = tokio::time::Instant::now() + wait;
    // The store is the truth: the last version it holds of this aggregate (of this type). Asked
    // of the primary: a replica that lags makes the read wait, not 404.
    let stored_version = || async {
        let mut tx = platform::db::tenant_tx(&state.primary, tenant_id)
            .await
            .map_err(ApiError::internal)?;
        EventStore::stream_version(&mut *tx, tenant_id, id, aggregate_type)
            .await
            .map_err(ApiError::internal)
    };
    let mut checked_store = false;
    let mut projected = state.projected.subscribe(id);
    loop {
        if let Some(row) = read().await.map_err(ApiError::internal)? {
            if version_of(&row) >= wanted {
                return Ok(row);
            }
        }
        if !checked_store {
            // An aggregate the store does not hold is 404 at once, and so is a version beyond the
            // next one: only a command in flight can still make the next version, nothing can
            // make one further off (waiting for it would hold a connection for nothing).
            match stored_version().await? {
                None => return Err(not_found()),
                Some(last) if wanted > last.saturating_add(1) => {
                    return Err(ApiError::NotFound(format!(
                        "no version {wanted} of this resource: its last is {last}"
                    )))
                }
                Some(_) => {}
            }
            checked_store = true;
        }
        if tokio::time::Instant::now() >= deadline {
            // Lagging behind a version the store holds is the service's to catch up (503,
            // retry); a version the store does not hold yet is nothing to retry for (404). It
            // may still come (the caller waited for a later command, or the sweeper), so the
            // wait happens either way.
            return Err(match stored_version().await? {
                Some(last) if last < wanted => ApiError::NotFound(format!(
                    "no version {wanted} of this resource yet: its last is {last}"
                )),
                _ => ApiError::Unavailable {
                    detail: format!("the read model has not reached version {wanted} yet"),
                    retry_after_secs: 1,
                },
            });
        }
        let recheck = tokio::time::Instant::now() + crate::projected::RECHECK;
        projected.advanced(recheck.min(deadline)).await;
    }
}

pub fn not_found() -> ApiError {
    ApiError::NotFound("no such resource in this project".into())
}

/// `ilike` pattern for a prefix, with the user's `%`, `_` and `\` taken literally.
pub fn prefix_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}
