//! `GET /api-keys` and `GET /members`: who may call the project. A project holds at most 500
//! keys and 1,000 members, so each list is one answer. `GET /me`: what the caller may do (the
//! console shows only what the key may use).

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use platform::auth::access::{self, ApiKeyView, MemberView};
use platform::auth::{AuthContext, Permission};
use platform::openapi::QueryErrors;
use platform::ApiError;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{whole_list, Page, QueryState};

pub fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new()
        .routes(routes!(keys))
        .routes(routes!(members))
        .routes(routes!(me))
}

/// The caller, as the key in hand makes it.
#[derive(Debug, Serialize, ToSchema)]
struct Caller {
    user_id: Uuid,
    key_id: Uuid,
    project_id: Uuid,
    /// The role the key acts with (its user's, capped by the key's own).
    role: &'static str,
    /// Every permission that role holds, weakest first.
    permissions: Vec<&'static str>,
}

#[utoipa::path(get, path = "/me", operation_id = "get_caller", tag = "access", summary = "The caller: its user, key, role and permissions in this project", params(("project_id" = Uuid, Path, description = "The project")), responses((status = 200, description = "OK", body = Caller), QueryErrors), security(("api_key" = [])))]
async fn me(auth: AuthContext) -> Json<Caller> {
    Json(Caller {
        user_id: auth.user_id,
        key_id: auth.key_id,
        project_id: auth.project_id,
        role: auth.role.as_str(),
        permissions: Permission::ALL
            .into_iter()
            .filter(|p| auth.role.grants(*p))
            .map(Permission::as_str)
            .collect(),
    })
}

#[utoipa::path(get, path = "/api-keys", operation_id = "list_api_keys", tag = "access", summary = "The project's API keys, oldest first, without their secrets", params(("project_id" = Uuid, Path, description = "The project")), responses((status = 200, description = "Every key of the project that is not revoked (next_cursor is always null)", body = Page<ApiKeyView>), QueryErrors), security(("api_key" = [])))]
async fn keys(State(state): State<QueryState>, auth: AuthContext) -> Result<Response, ApiError> {
    let mut tx = state.tx(&auth.tenant_id).await?;
    let items = access::list_keys(&mut tx, auth.project_id)
        .await
        .map_err(ApiError::internal)?;
    Ok(whole_list(items))
}

#[utoipa::path(get, path = "/members", operation_id = "list_members", tag = "access", summary = "The project's members and their roles, in the order they joined", params(("project_id" = Uuid, Path, description = "The project")), responses((status = 200, description = "Every member of the project (next_cursor is always null)", body = Page<MemberView>), QueryErrors), security(("api_key" = [])))]
async fn members(State(state): State<QueryState>, auth: AuthContext) -> Result<Response, ApiError> {
    let mut tx = state.tx(&auth.tenant_id).await?;
    let items = access::list_members(&mut tx, auth.project_id)
        .await
        .map_err(ApiError::internal)?;
    Ok(whole_list(items))
}
