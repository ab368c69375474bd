//! `/api-keys`: keys made for this project (at most the creator's role) and revoked.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use event_model::ProjectEvent;
use platform::auth::access::ApiKeyView;
use platform::auth::{generate_api_key, hash_api_key, AuthContext, Role};
use platform::body::JsonBody;
use platform::http::Path;
use platform::openapi::CommandErrors;
use platform::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{access_tx, correlation_of, record, role_of};
use crate::routes::{field_error, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_key))
        .routes(routes!(revoke_key))
}

/// The most keys a project holds at once: a list of them is one answer.
pub const MAX_KEYS_PER_PROJECT: i64 = 500;
/// How far ahead a key may expire at most.
const MAX_KEY_LIFETIME_DAYS: i64 = 5 * 366;
/// How many characters of a key its lists show.
const PREFIX_LEN: usize = 10;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewKey {
    /// What the key is for, 1 to 100 characters.
    name: String,
    /// The most the key may do: owner, admin, supervisor, agent or viewer, at most the
    /// creator's own role.
    role: String,
    /// When it stops working (RFC 3339, in the future, at most five years ahead); never when
    /// absent.
    expires_at: Option<DateTime<Utc>>,
}

/// A key just made: its secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
struct CreatedKey {
    #[serde(flatten)]
    key: ApiKeyView,
    /// The secret, for `Authorization: Bearer`. Only its hash is kept: it cannot be shown again.
    secret: String,
}

#[utoipa::path(post, path = "/api-keys", operation_id = "create_api_key", tag = "access", summary = "Make an API key for this project, with at most the caller's role", description = "The key reaches this project only. The answer holds its secret, shown this once.", params(("project_id" = Uuid, Path, description = "The project")), request_body = NewKey, responses((status = 201, description = "The key, with its secret", body = CreatedKey), CommandErrors), security(("api_key" = [])))]
async fn create_key(
    auth: AuthContext,
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
    body: JsonBody<NewKey>,
) -> Result<Response, ApiError> {
    let correlation = correlation_of(&headers)?;
    let b = body.value;
    let name = b.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(field_error(
            "name",
            "must be 1 to 100 characters, none of them a control character",
        ));
    }
    let role = role_of("role", &b.role)?;
    if role > auth.role {
        return Err(ApiError::Forbidden(format!(
            "a key gets at most its creator's role ({}), not {role}",
            auth.role
        )));
    }
    let now = Utc::now();
    if let Some(at) = b.expires_at {
        if at <= now || at > now + Duration::days(MAX_KEY_LIFETIME_DAYS) {
            return Err(field_error(
                "expires_at",
                "must be in the future and at most five years ahead",
            ));
        }
    }
    let secret = generate_api_key();
    let prefix: String = secret.chars().take(PREFIX_LEN).collect();
    let mut tx = access_tx(&state, &auth).await?;
    let created = sqlx::query!(
        r#"select id as "id!", created_at as "created_at!"
             from create_project_api_key($1, $2, $3, $4, $5, $6, $7, $8, $9)"#,
        auth.project_id,
        auth.user_id,
        name,
        role.as_str(),
        b.expires_at.map(|at| at.naive_utc()),
        hash_api_key(&secret),
        &prefix,
        auth.key_id,
        MAX_KEYS_PER_PROJECT,
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(ApiError::internal)?;
    let Some(created) = created else {
        return Err(ApiError::Conflict(format!(
            "the project holds {MAX_KEYS_PER_PROJECT} keys, the most it may; revoke one first"
        )));
    };
    record(
        &mut tx,
        &auth,
        correlation,
        ProjectEvent::ApiKeyCreated {
            key_id: created.id,
            name: name.to_owned(),
            role: role.as_str().to_owned(),
            prefix: prefix.clone(),
            user_id: auth.user_id,
            expires_at: b.expires_at,
            by_key_id: auth.key_id,
        },
    )
    .await?;
    tx.commit().await.map_err(ApiError::internal)?;
    let body = CreatedKey {
        key: ApiKeyView {
            id: created.id,
            name: name.to_owned(),
            role: Some(role.as_str().to_owned()),
            prefix: Some(prefix),
            user_id: Some(auth.user_id),
            created_at: Some(created.created_at.and_utc()),
            last_used_at: None,
            expires_at: b.expires_at,
            created_by_key: Some(auth.key_id),
        },
        secret,
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    // The secret must not linger in a cache between the caller and us.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[utoipa::path(delete, path = "/api-keys/{key_id}", operation_id = "revoke_api_key", tag = "access", summary = "Revoke one of the project's keys: the next request with it is 401", description = "A key with a higher role than the caller's is refused (403).", params(("project_id" = Uuid, Path, description = "The project"), ("key_id" = Uuid, Path, description = "The key")), responses((status = 204, description = "Revoked"), CommandErrors), security(("api_key" = [])))]
async fn revoke_key(
    auth: AuthContext,
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
    Path((_, key_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    let correlation = correlation_of(&headers)?;
    let mut tx = access_tx(&state, &auth).await?;
    let allowed: Vec<String> = Role::ALL
        .into_iter()
        .filter(|r| *r <= auth.role)
        .map(|r| r.as_str().to_owned())
        .collect();
    let revoked = sqlx::query!(
        r#"select outcome as "outcome!", name, role from revoke_project_api_key($1, $2, $3)"#,
        auth.project_id,
        key_id,
        &allowed,
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(ApiError::internal)?;
    match revoked.outcome.as_str() {
        "done" => {
            record(
                &mut tx,
                &auth,
                correlation,
                ProjectEvent::ApiKeyRevoked {
                    key_id,
                    name: revoked.name.unwrap_or_default(),
                    role: revoked.role,
                    by_key_id: auth.key_id,
                },
            )
            .await?;
            tx.commit().await.map_err(ApiError::internal)?;
            Ok(StatusCode::NO_CONTENT)
        }
        "forbidden" => Err(ApiError::Forbidden(format!(
            "the key's role is above the caller's ({})",
            auth.role
        ))),
        _ => Err(ApiError::NotFound("no such API key in this project".into())),
    }
}
