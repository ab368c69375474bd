//! `application/problem+json` (RFC 9457) errors: the one error type of the HTTP edge.
//!
//! Only this module knows statuses. A 5xx says little to the client; the log carries the cause.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::event_store::StoreError;

fn is_unreachable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
    ) || matches!(error, sqlx::Error::Database(e) if e.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")
        // read_only_sql_transaction: a connection left on a server that a failover made a
        // standby, until the pool's watcher moves it (see `db::failover`).
        || c == "25006"))
}

/// One broken field rule of a 422: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldProblem {
    /// The field: a path into the body such as `tags[2]` or `address.city`, `body` for the body
    /// itself, or a header's name (`Idempotency-Key`).
    pub field: String,
    /// What the rule wants, e.g. `must not contain the NUL character (\u0000)`.
    pub message: String,
}

/// A request's failure as the client gets it: a status, a problem+json body whose `detail` is
/// the error's text, and the headers some statuses carry (`WWW-Authenticate`, `Retry-After`,
/// `ETag`).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the path, the query or the body does not parse; the text says what is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// 401, with `WWW-Authenticate: Bearer`.
    #[error("missing, unknown, inactive or expired API key")]
    Unauthorized,
    /// 403: the caller sees the project, but its role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 403: the caller's role lacks the route's permission; the body names it (`permission`)
    /// and the role (`role`).
    #[error("the {role} role does not hold the permission {permission}")]
    MissingPermission {
        /// The permission the route needs (`Permission::as_str`).
        permission: &'static str,
        /// The caller's role, which lacks it (`Role::as_str`).
        role: &'static str,
    },
    /// 404: no such route, or nothing of that id the caller may see (a project of another
    /// tenant included: never 403, so that its existence leaks nothing).
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, for other methods.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 409: a domain rule refuses the command, or the aggregate kept changing under it.
    #[error("{0}")]
    Conflict(String),
    /// 412: `If-Match` names another version than the aggregate's.
    #[error("the resource is at version {current}, not the one in If-Match")]
    PreconditionFailed {
        /// The aggregate's version, sent back as the `ETag`.
        current: i64,
    },
    /// 413: a body over [`crate::http::BODY_LIMIT`].
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: a body that is not JSON by its `Content-Type`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: a field rule is broken, a value cannot be stored, or an `Idempotency-Key` was
    /// reused with another request.
    #[error("{detail}")]
    Unprocessable {
        /// The problem's `detail`.
        detail: String,
        /// The broken rules, field by field (empty when the database refused a value).
        errors: Vec<FieldProblem>,
    },
    /// 429: the API key is over its rate limit.
    #[error("this API key is over its rate limit; retry in {retry_after_secs} s")]
    TooManyRequests {
        /// Seconds until the key may ask again, sent as `Retry-After` (at least 1).
        retry_after_secs: u64,
    },
    /// 503: worth a retry (the database unreachable, a statement or the request past its
    /// timeout, the instance at its limit of requests in flight).
    #[error("{detail}")]
    Unavailable {
        /// The problem's `detail`.
        detail: String,
        /// Seconds, sent as `Retry-After`.
        retry_after_secs: u64,
    },
    /// 500: anything else. The cause is logged, and the client told nothing of it.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// An infrastructure failure: 503 when the database is unreachable (the client may retry),
    /// 500 otherwise.
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        let error = error.into();
        let database = error.downcast_ref::<sqlx::Error>().or_else(|| {
            match error.downcast_ref::<StoreError>() {
                Some(StoreError::Database(e)) => Some(e),
                _ => None,
            }
        });
        // A value the database refuses to hold (class 22, data exception: a NUL in text, a
        // character outside UTF-8, a number out of range) came from the request: 422, not 500.
        if let Some(sqlx::Error::Database(e)) = database {
            if e.code().is_some_and(|c| c.starts_with("22")) {
                // The code only: the database's message quotes the value, which may be personal.
                tracing::info!(code = ?e.code(), "a request value the database cannot hold");
                return Self::Unprocessable {
                    detail: "a value in the request cannot be stored or searched for".into(),
                    errors: Vec::new(),
                };
            }
        }
        // The request role's `statement_timeout` cancelled a statement: the service's limit, not
        // the caller's fault, and worth a retry (a page narrower, a moment later).
        if let Some(sqlx::Error::Database(e)) = database {
            if e.code().as_deref() == Some("57014") {
                tracing::warn!("a statement ran past the request statement timeout");
                return Self::Unavailable {
                    detail: "the request took longer than its statements may run; retry, or ask for less".into(),
                    retry_after_secs: 1,
                };
            }
        }
        if database.is_some_and(is_unreachable) {
            tracing::warn!(error = %error, "database unreachable");
            return Self::Unavailable {
                detail: "the database is unreachable; retry shortly".into(),
                retry_after_secs: 1,
            };
        }
        Self::Internal(error)
    }

    /// The HTTP status it is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::MissingPermission { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) | Self::MissingPermission { .. } => "forbidden",
            Self::NotFound(_) => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Conflict(_) => "conflict",
            Self::PreconditionFailed { .. } => "precondition-failed",
            Self::PayloadTooLarge(_) => "payload-too-large",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::Unprocessable { .. } => "validation-error",
            Self::TooManyRequests { .. } => "too-many-requests",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldProblem]>,
    /// For a 403 of a missing permission: the permission the route needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    permission: Option<&'static str>,
    /// For a 403 of a missing permission: the caller's role.
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(cause) = &self {
            tracing::error!(error = ?cause, "request failed");
        }
        let body = Problem {
            kind: format!("/problems/{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.to_string(),
            errors: match &self {
                Self::Unprocessable { errors, .. } => Some(errors),
                _ => None,
            },
            permission: match &self {
                Self::MissingPermission { permission, .. } => Some(*permission),
                _ => None,
            },
            role: match &self {
                Self::MissingPermission { role, .. } => Some(*role),
                _ => None,
            },
        };
        let mut response = (status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Unavailable {
                retry_after_secs, ..
            }
            | Self::TooManyRequests { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::PreconditionFailed { current } => {
                if let Ok(etag) = HeaderValue::from_str(&format!("\"{current}\"")) {
                    headers.insert(header::ETAG, etag);
                }
            }
            _ => {}
        }
        response
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::BadRequest(format!("invalid path: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        // A filter value may be personal (an e-mail searched for): never echoed.
        Self::BadRequest(format!(
            "invalid query: {}",
            event_model::error::value_free(&rejection.body_text())
        ))
    }
}
