//! `GET /api-keys` and `GET /members`: who may call the project. A project holds at most 500
//! keys and 1,000 members, so each list is one answer.

use axum::extract::State;
use axum::response::Response;
use platform::auth::access::{self, ApiKeyView, MemberView};
use platform::auth::AuthContext;
use platform::openapi::QueryErrors;
use platform::ApiError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{whole_list, Page, QueryState};

pub fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new()
        .routes(routes!(keys))
        .routes(routes!(members))
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
