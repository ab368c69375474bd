//! `/members`: a user added to the project or given another role, and removed; the last owner
//! stays.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use event_model::ProjectEvent;
use platform::auth::{AuthContext, Permission, Role};
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
use crate::routes::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(set_member, remove_member))
}

/// The most members a project holds at once.
pub const MAX_MEMBERS_PER_PROJECT: i64 = 1_000;

/// Giving, changing or taking the admin or owner role is an owner's.
fn may_manage(auth: &AuthContext, roles: &[Role]) -> Result<(), ApiError> {
    if roles.iter().any(|r| *r >= Role::Admin) {
        auth.require(Permission::ManageAdmins)?;
    }
    Ok(())
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
