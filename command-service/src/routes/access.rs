//! `/api-keys` and `/members`: who may call the project, changed through the API.
//!
//! The request login may not touch the identity tables (migration 0023): each change is one
//! security-definer function bound to the project (0032), called in the tenant's transaction,
//! which also appends the change to the project's stream (`project.*`, 0033) with its outbox
//! row: the audit log gets it as it gets every event, naming the acting user and key. The
//! transaction first locks the project's row, so one project's changes queue.
//! The route's permission (manage_keys, manage_members) is checked by the extractor; the rules
//! that need the target are checked here: a key gets at most its creator's role, and only an
//! owner gives, changes or takes the admin and owner roles.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use event_model::{AggregateType, DomainEvent, ProjectEvent};
use platform::auth::access::ApiKeyView;
use platform::auth::{generate_api_key, hash_api_key, AuthContext, Permission, Role};
use platform::body::JsonBody;
use platform::db::tenant_tx;
use platform::event_store::{EventStore, NewEvent};
use platform::http::Path;
use platform::openapi::CommandErrors;
use platform::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use sqlx::{Postgres, Transaction};

use super::{field_error, AppState, CommandHeaders};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_key))
        .routes(routes!(revoke_key))
        .routes(routes!(set_member, remove_member))
}

/// The most keys a project holds at once: a list of them is one answer.
pub const MAX_KEYS_PER_PROJECT: i64 = 500;
/// The most members a project holds at once.
pub const MAX_MEMBERS_PER_PROJECT: i64 = 1_000;
/// How far ahead a key may expire at most.
const MAX_KEY_LIFETIME_DAYS: i64 = 5 * 366;
/// How many characters of a key its lists show.
const PREFIX_LEN: usize = 10;

/// The role a body names; any other text is a 422 for `field`.
fn role_of(field: &str, raw: &str) -> Result<Role, ApiError> {
    Role::parse(raw).ok_or_else(|| {
        field_error(
            field,
            "must be one of owner, admin, supervisor, agent, viewer",
        )
    })
}

/// Giving, changing or taking the admin or owner role is an owner's.
fn may_manage(auth: &AuthContext, roles: &[Role]) -> Result<(), ApiError> {
    if roles.iter().any(|r| *r >= Role::Admin) {
        auth.require(Permission::ManageAdmins)?;
    }
    Ok(())
}

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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MemberRole {
    /// owner, admin, supervisor, agent or viewer.
    role: String,
}

/// A member's role, as changed.
#[derive(Debug, Serialize, ToSchema)]
struct MemberChanged {
    user_id: Uuid,
    role: String,
    /// Their role before (none: they were not a member).
    previous_role: Option<String>,
}

#[utoipa::path(put, path = "/members/{user_id}", operation_id = "set_member", tag = "access", summary = "Add a user to the project, or change their role", description = "Only an owner gives, changes or takes the admin and owner roles. The last owner cannot stop being one (409). Takes effect on the member's next request.", params(("project_id" = Uuid, Path, description = "The project"), ("user_id" = Uuid, Path, description = "The user")), request_body = MemberRole, responses((status = 200, description = "Their role changed", body = MemberChanged), (status = 201, description = "Added", body = MemberChanged), CommandErrors), security(("api_key" = [])))]
async fn set_member(
    auth: AuthContext,
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
    Path((_, user_id)): Path<(Uuid, Uuid)>,
    body: JsonBody<MemberRole>,
) -> Result<Response, ApiError> {
    let correlation = correlation_of(&headers)?;
    let role = role_of("role", &body.value.role)?;
    may_manage(&auth, &[role])?;
    let mut tx = access_tx(&state, &auth).await?;
    // What they are now decides whether an admin may change it: read under the project's lock
    // that the change takes too.
    let current = member_role(&mut tx, auth.project_id, user_id).await?;
    if let Some(current) = current {
        may_manage(&auth, &[current])?;
    }
    let changed = sqlx::query!(
        r#"select outcome as "outcome!", previous_role from set_project_member($1, $2, $3, $4, $5)"#,
        auth.project_id,
        user_id,
        role.as_str(),
        auth.user_id.to_string(),
        MAX_MEMBERS_PER_PROJECT,
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(ApiError::internal)?;
    match changed.outcome.as_str() {
        "done" => {}
        "last_owner" => {
            return Err(ApiError::Conflict(
                "the project's last owner cannot stop being one; make another owner first".into(),
            ))
        }
        "too_many" => {
            return Err(ApiError::Conflict(
                "the project has as many members as it may hold".into(),
            ))
        }
        _ => return Err(ApiError::NotFound("no such user".into())),
    }
    record(
        &mut tx,
        &auth,
        correlation,
        ProjectEvent::MemberRoleSet {
            user_id,
            role: role.as_str().to_owned(),
            previous_role: changed.previous_role.clone(),
            by_key_id: auth.key_id,
        },
    )
    .await?;
    tx.commit().await.map_err(ApiError::internal)?;
    let status = if changed.previous_role.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = MemberChanged {
        user_id,
        role: role.as_str().to_owned(),
        previous_role: changed.previous_role,
    };
    Ok((status, Json(body)).into_response())
}

#[utoipa::path(delete, path = "/members/{user_id}", operation_id = "remove_member", tag = "access", summary = "Remove a user from the project, and revoke their keys for it", description = "Only an owner removes an admin or an owner. The last owner cannot be removed (409). Their next request is refused.", params(("project_id" = Uuid, Path, description = "The project"), ("user_id" = Uuid, Path, description = "The user")), responses((status = 204, description = "Removed"), CommandErrors), security(("api_key" = [])))]
async fn remove_member(
    auth: AuthContext,
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
    Path((_, user_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    let correlation = correlation_of(&headers)?;
    let mut tx = access_tx(&state, &auth).await?;
    let Some(current) = member_role(&mut tx, auth.project_id, user_id).await? else {
        return Err(ApiError::NotFound("no such member of this project".into()));
    };
    may_manage(&auth, &[current])?;
    let outcome = sqlx::query_scalar!(
        r#"select outcome as "outcome!" from remove_project_member($1, $2)"#,
        auth.project_id,
        user_id,
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(ApiError::internal)?;
    match outcome.as_str() {
        "done" => {
            record(
                &mut tx,
                &auth,
                correlation,
                ProjectEvent::MemberRemoved {
                    user_id,
                    previous_role: current.as_str().to_owned(),
                    by_key_id: auth.key_id,
                },
            )
            .await?;
            tx.commit().await.map_err(ApiError::internal)?;
            Ok(StatusCode::NO_CONTENT)
        }
        "last_owner" => Err(ApiError::Conflict(
            "the project's last owner cannot be removed; make another owner first".into(),
        )),
        _ => Err(ApiError::NotFound("no such member of this project".into())),
    }
}

/// A user's role in the project now (none: not a member), read under the lock on the project's
/// row that every change of its members takes, so that it cannot change before this
/// transaction's own change.
async fn member_role(
    tx: &mut sqlx::PgConnection,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<Option<Role>, ApiError> {
    let role = sqlx::query_scalar!(
        "select lock_project_member_role($1, $2)",
        project_id,
        user_id
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(ApiError::internal)?;
    Ok(role.as_deref().and_then(Role::parse))
}

/// The request's `X-Correlation-Id` as the audit event carries it (the command headers are read
/// as every command reads them).
fn correlation_of(headers: &HeaderMap) -> Result<Uuid, ApiError> {
    Ok(CommandHeaders::parse(headers)?.correlation.1)
}

/// The change's transaction: in the tenant, the project's row locked (every change of its keys
/// and members takes the lock first, so they queue and the project's stream is appended in
/// order).
async fn access_tx<'a>(
    state: &'a AppState,
    auth: &AuthContext,
) -> Result<Transaction<'a, Postgres>, ApiError> {
    let mut tx = tenant_tx(&state.pool, &auth.tenant_id)
        .await
        .map_err(ApiError::internal)?;
    sqlx::query!("select lock_project_access($1)", auth.project_id)
        .execute(&mut *tx)
        .await
        .map_err(ApiError::internal)?;
    Ok(tx)
}

/// Appends the change to the project's stream (and the outbox), in the change's transaction.
async fn record(
    tx: &mut Transaction<'_, Postgres>,
    auth: &AuthContext,
    correlation_id: Uuid,
    event: ProjectEvent,
) -> Result<(), ApiError> {
    let version = sqlx::query_scalar!(
        r#"select coalesce(max(sequence_number), 0) as "version!"
             from contact_event_store where aggregate_id = $1"#,
        auth.project_id
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(ApiError::internal)?;
    let event = DomainEvent::Project(event);
    let data = event.payload().into_stored().map_err(ApiError::internal)?;
    let new = NewEvent {
        event_id: Uuid::now_v7(),
        aggregate_id: auth.project_id,
        aggregate_type: AggregateType::Project,
        event_type: event.event_type(),
        event_version: event.event_version(),
        sequence_number: version + 1,
        data,
        contact_id: auth.project_id,
        user_id: Some(auth.user_id),
        occurred_at: Utc::now(),
        tenant_id: auth.tenant_id.clone(),
        project_id: auth.project_id,
        causation_id: Some(Uuid::now_v7()),
        correlation_id: Some(correlation_id),
        traceparent: platform::telemetry::traceparent(&tracing::Span::current()),
    };
    EventStore::append(tx, &[&new])
        .await
        .map_err(ApiError::internal)?;
    Ok(())
}
