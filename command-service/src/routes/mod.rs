//! The command routes of API.md, under `/v1/projects/{project_id}`.
//!
//! Handlers only translate: HTTP in (auth, headers, body) → a domain command → the shared
//! [`CommandHandler`] → HTTP out. Every rule is in `event-model`.

mod access;
mod contacts;
mod content;
mod sessions;
mod webhooks;

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use dashmap::DashSet;
use platform::auth::{AuthContext, Permission};
use platform::{ApiError, FieldProblem};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::commands::{
    Actor, Answered, Command, CommandError, CommandHandler, CommandMeta, Outcome, Replayable,
};
use crate::idempotency::{IdempotencySlot, StoredResponse};

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// Checks the API key of each request.
    pub auth: platform::auth::Authenticator,
    pub handler: CommandHandler,
    /// Channel types known to exist (the catalogue only grows; a miss is checked in the database).
    pub channel_types: Arc<DashSet<i64>>,
    /// `WEBHOOK_ALLOW_PRIVATE_TARGETS`: subscriptions may name private addresses.
    pub allow_private_webhooks: bool,
    /// The KEK that seals the webhooks' signing secrets at rest.
    pub keyring: Arc<platform::crypto::Keyring>,
}

impl FromRef<AppState> for PgPool {
    fn from_ref(state: &AppState) -> Self {
        state.pool.clone()
    }
}

impl FromRef<AppState> for platform::auth::Authenticator {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// The command routes, documented: a route cannot be served here without being in the OpenAPI
/// document.
pub fn router(state: AppState) -> OpenApiRouter {
    OpenApiRouter::new()
        .nest(
            "/v1/projects/{project_id}",
            contacts::router()
                .merge(sessions::router())
                .merge(access::router())
                .merge(webhooks::router()),
        )
        .with_state(state)
}

pub static CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The optional command headers: `If-Match`, `Idempotency-Key`, `X-Correlation-Id`.
pub struct CommandHeaders {
    pub if_match: Option<i64>,
    pub idempotency_key: Option<String>,
    /// As sent (echoed back), and as the UUID stored in `correlation_id`.
    pub correlation: (String, Uuid),
}

impl CommandHeaders {
    fn parse(headers: &HeaderMap) -> Result<Self, ApiError> {
        let text = |name: &HeaderName| -> Result<Option<String>, ApiError> {
            headers
                .get(name)
                .map(|v| {
                    v.to_str()
                        .map(|s| s.trim().to_owned())
                        .map_err(|_| ApiError::BadRequest(format!("{name} must be visible ASCII")))
                })
                .transpose()
        };
        let if_match = match text(&header::IF_MATCH)? {
            None => None,
            Some(v) if v == "*" => None,
            Some(v) => Some(
                v.trim_start_matches("W/")
                    .trim_matches('"')
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| {
                        ApiError::BadRequest("If-Match must be an ETag such as \"3\"".into())
                    })?,
            ),
        };
        let idempotency_key = text(&IDEMPOTENCY_KEY)?;
        if let Some(key) = &idempotency_key {
            if key.is_empty() || key.len() > 255 {
                return Err(ApiError::BadRequest(
                    "Idempotency-Key must be 1 to 255 characters".into(),
                ));
            }
        }
        let correlation = match text(&CORRELATION_ID)? {
            Some(raw) if !raw.is_empty() && raw.len() <= 255 => {
                // Any string is accepted; one that is not a UUID is mapped to a stable UUID (v5).
                let id = Uuid::parse_str(&raw)
                    .unwrap_or_else(|_| Uuid::new_v5(&Uuid::NAMESPACE_OID, raw.as_bytes()));
                (raw, id)
            }
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "X-Correlation-Id must be 1 to 255 characters".into(),
                ))
            }
            None => {
                let id = Uuid::now_v7();
                (id.to_string(), id)
            }
        };
        tracing::Span::current().record("correlation_id", correlation.0.as_str());
        Ok(Self {
            if_match,
            idempotency_key,
            correlation,
        })
    }
}

/// Everything a handler needs to run one command, resolved before the body is read: the caller
/// (401/404 first), the command headers, and the request line for the idempotency hash.
pub struct CommandContext {
    state: AppState,
    auth: AuthContext,
    headers: CommandHeaders,
    method: Method,
    path: String,
}

impl FromRequestParts<AppState> for CommandContext {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let auth = AuthContext::from_request_parts(parts, state).await?;
        let headers = CommandHeaders::parse(&parts.headers)?;
        Ok(Self {
            state: state.clone(),
            auth,
            headers,
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
        })
    }
}

/// How a successful command is answered.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// 200 with the addressed aggregate.
    Updated,
    /// 201 with the addressed aggregate (a new contact).
    CreatedContact,
    /// 201 with the session the command opened.
    CreatedSession,
}

/// A command's answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CommandBody {
    id: Uuid,
    version: i64,
    event_ids: Vec<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_version: Option<i64>,
}

fn render_with(answer: Answer, outcome: &Outcome) -> StoredResponse {
    let (status, id, version) = match (answer, outcome.session) {
        (Answer::CreatedSession, Some((sid, sv))) => (StatusCode::CREATED, sid, sv),
        (Answer::CreatedContact, _) => (StatusCode::CREATED, outcome.aggregate_id, outcome.version),
        _ => (StatusCode::OK, outcome.aggregate_id, outcome.version),
    };
    let session = outcome.session.filter(|(sid, _)| *sid != id);
    let body = CommandBody {
        id,
        version,
        event_ids: outcome.event_ids.clone(),
        session_id: session.map(|s| s.0),
        session_version: session.map(|s| s.1),
    };
    StoredResponse {
        status: status.as_u16(),
        body: json!(body),
    }
}

fn render_updated(o: &Outcome) -> StoredResponse {
    render_with(Answer::Updated, o)
}
fn render_created_contact(o: &Outcome) -> StoredResponse {
    render_with(Answer::CreatedContact, o)
}
fn render_created_session(o: &Outcome) -> StoredResponse {
    render_with(Answer::CreatedSession, o)
}

impl CommandContext {
    fn actor(&self) -> Actor {
        Actor {
            tenant_id: self.auth.tenant_id.clone(),
            project_id: self.auth.project_id,
            user_id: Some(self.auth.user_id),
            session_timeout: self.auth.session_timeout,
            ends_any_session: self.auth.holds(Permission::EndAnySession),
        }
    }

    /// Runs the command and answers it.
    pub async fn run(
        self,
        body_sha256: [u8; 32],
        command: Command,
        answer: Answer,
    ) -> Result<Response, ApiError> {
        let meta = CommandMeta {
            correlation_id: self.headers.correlation.1,
            causation_id: Uuid::now_v7(),
            if_match: self.headers.if_match,
        };
        let slot = self.headers.idempotency_key.as_ref().map(|key| {
            let mut hash = Sha256::new();
            hash.update(self.method.as_str());
            hash.update([0]);
            hash.update(&self.path);
            hash.update([0]);
            hash.update(body_sha256);
            IdempotencySlot {
                key: key.clone(),
                request_hash: hex::encode(hash.finalize()),
            }
        });
        let render = match answer {
            Answer::Updated => render_updated,
            Answer::CreatedContact => render_created_contact,
            Answer::CreatedSession => render_created_session,
        };
        let actor = self.actor();
        let stored = match self
            .state
            .handler
            .execute(
                &actor,
                meta,
                command,
                slot.as_ref().map(|slot| Replayable { slot, render }),
            )
            .await
        {
            Ok(Answered::Now(outcome)) => render(&outcome),
            Ok(Answered::Replayed(previous)) => previous,
            Err(e) => return Err(api_error(e)),
        };
        Ok(self.respond(answer, stored))
    }

    fn respond(&self, answer: Answer, stored: StoredResponse) -> Response {
        let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
        let id = stored
            .body
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let version = stored
            .body
            .get("version")
            .and_then(|v| v.as_i64())
            .unwrap_or_default();
        let mut response = (status, axum::Json(stored.body)).into_response();
        let headers = response.headers_mut();
        if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
            headers.insert(header::ETAG, etag);
        }
        if let Ok(correlation) = HeaderValue::from_str(&self.headers.correlation.0) {
            headers.insert(CORRELATION_ID.clone(), correlation);
        }
        let location = match answer {
            Answer::CreatedContact => Some(format!(
                "/v1/projects/{}/contacts/{id}",
                self.auth.project_id
            )),
            Answer::CreatedSession => Some(format!(
                "/v1/projects/{}/sessions/{id}",
                self.auth.project_id
            )),
            Answer::Updated => None,
        };
        if let Some(Ok(location)) = location.map(|l| HeaderValue::from_str(&l)) {
            headers.insert(header::LOCATION, location);
        }
        response
    }
}

/// The HTTP face of a command failure. Only the edge knows statuses.
/// A 422 for one field.
fn field_error(field: &str, message: &str) -> ApiError {
    ApiError::Unprocessable {
        detail: "the request breaks a field rule".into(),
        errors: vec![FieldProblem {
            field: field.into(),
            message: message.into(),
        }],
    }
}

pub fn api_error(error: CommandError) -> ApiError {
    use event_model::DomainError as D;
    match error {
        CommandError::Domain(D::Invalid(fields)) => ApiError::Unprocessable {
            detail: "the request breaks a field rule".into(),
            errors: fields
                .into_iter()
                .map(|f| FieldProblem {
                    field: f.field,
                    message: f.message,
                })
                .collect(),
        },
        CommandError::Domain(D::ContactNotFound) => {
            ApiError::NotFound("no such contact in this project".into())
        }
        CommandError::Domain(D::SessionNotFound) => {
            ApiError::NotFound("no such session in this project".into())
        }
        CommandError::Domain(refusal) => ApiError::Conflict(refusal.to_string()),
        CommandError::NotFound(what) => {
            ApiError::NotFound(format!("no such {what} in this project"))
        }
        CommandError::PreconditionFailed { current } => ApiError::PreconditionFailed { current },
        CommandError::Conflict => {
            ApiError::Conflict("the aggregate kept changing under the command; retry".into())
        }
        CommandError::Forbidden(why) => ApiError::Forbidden(why.into()),
        CommandError::IdempotencyMismatch => ApiError::Unprocessable {
            detail: "this Idempotency-Key was already used with another request".into(),
            errors: vec![FieldProblem {
                field: "Idempotency-Key".into(),
                message: "reused with another request".into(),
            }],
        },
        CommandError::Store(e) => ApiError::internal(e),
    }
}

/// Refuses an unknown or inactive channel type (422), before anything is loaded.
pub async fn check_channel_type(state: &AppState, channel_type_id: i64) -> Result<(), ApiError> {
    if state.channel_types.contains(&channel_type_id) {
        return Ok(());
    }
    let known = sqlx::query_scalar!(
        r#"select exists (select 1 from channel_types where id = $1 and deleted_at is null and coalesce(active, true)) as "known!""#,
        channel_type_id,
    )
    .fetch_one(&state.pool)
    .await
    .map_err(ApiError::internal)?;
    if !known {
        return Err(ApiError::Unprocessable {
            detail: "the request breaks a field rule".into(),
            errors: vec![FieldProblem {
                field: "channel_type_id".into(),
                message: "no such channel type".into(),
            }],
        });
    }
    state.channel_types.insert(channel_type_id);
    Ok(())
}
