//! `GET /webhooks`, `GET /webhooks/{id}` and `GET /webhooks/{id}/deliveries`: the project's
//! subscriptions (never their secrets) and each one's delivery log. A project holds at most 100
//! subscriptions, so their list is one answer; deliveries come in pages, newest first.

use axum::extract::State;
use axum::response::Response;
use platform::auth::AuthContext;
use platform::http::{Path, Query};
use platform::openapi::QueryErrors;
use platform::webhooks::{self, DeliveryView, SubscriptionView};
use platform::ApiError;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{page, whole_list, with_etag, Page, PageParams, QueryState};

pub fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(one))
        .routes(routes!(deliveries))
}

#[utoipa::path(get, path = "/webhooks", operation_id = "list_webhooks", tag = "webhooks", summary = "The project's webhook subscriptions, oldest first (without their secrets)", params(("project_id" = Uuid, Path, description = "The project")), responses((status = 200, description = "Every subscription of the project (next_cursor is always null)", body = Page<SubscriptionView>), QueryErrors), security(("api_key" = [])))]
async fn list(State(state): State<QueryState>, auth: AuthContext) -> Result<Response, ApiError> {
    let mut tx = state.tx(&auth.tenant_id).await?;
    let items = webhooks::list_subscriptions(&mut tx, auth.project_id)
        .await
        .map_err(ApiError::internal)?;
    Ok(whole_list(items))
}

#[utoipa::path(get, path = "/webhooks/{webhook_id}", operation_id = "get_webhook", tag = "webhooks", summary = "A webhook subscription, with its delivery counts", params(("project_id" = Uuid, Path, description = "The project"), ("webhook_id" = Uuid, Path, description = "The subscription")), responses((status = 200, description = "The subscription", body = SubscriptionView), QueryErrors), security(("api_key" = [])))]
async fn one(
    State(state): State<QueryState>,
    auth: AuthContext,
    Path((_, id)): Path<(Uuid, Uuid)>,
) -> Result<Response, ApiError> {
    let mut tx = state.tx(&auth.tenant_id).await?;
    let subscription = webhooks::read_subscription(&mut tx, auth.project_id, id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound("no such webhook subscription in this project".into()))?;
    Ok(with_etag(subscription, None))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveryFilters {
    /// Only deliveries in this state: pending, delivered or failed.
    #[param(pattern = "^(pending|delivered|failed)$")]
    status: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page: deliveries older than it.
    cursor: Option<Uuid>,
}

#[utoipa::path(get, path = "/webhooks/{webhook_id}/deliveries", operation_id = "list_webhook_deliveries", tag = "webhooks", summary = "A subscription's deliveries, newest first: attempts, last status and error, next attempt", params(("project_id" = Uuid, Path, description = "The project"), ("webhook_id" = Uuid, Path, description = "The subscription"), DeliveryFilters), responses((status = 200, description = "A page of deliveries", body = Page<DeliveryView>), QueryErrors), security(("api_key" = [])))]
async fn deliveries(
    State(state): State<QueryState>,
    auth: AuthContext,
    Path((_, id)): Path<(Uuid, Uuid)>,
    Query(f): Query<DeliveryFilters>,
) -> Result<Response, ApiError> {
    let limit = PageParams {
        limit: f.limit,
        cursor: f.cursor,
    }
    .limit()?;
    if let Some(status) = &f.status {
        if !["pending", "delivered", "failed"].contains(&status.as_str()) {
            return Err(ApiError::BadRequest(
                "status must be pending, delivered or failed".into(),
            ));
        }
    }
    let mut tx = state.tx(&auth.tenant_id).await?;
    webhooks::read_subscription(&mut tx, auth.project_id, id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound("no such webhook subscription in this project".into()))?;
    let rows = webhooks::list_deliveries(
        &mut tx,
        auth.project_id,
        id,
        f.status.as_deref(),
        f.cursor,
        limit + 1,
    )
    .await
    .map_err(ApiError::internal)?;
    Ok(with_etag(page(rows, limit, |d| d.id), None))
}
