//! `GET /event-log`: the `domain_event_logs` audit trail.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, Utc};
use platform::auth::AuthContext;
use platform::http::Query;
use platform::openapi::QueryErrors;
use platform::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::QueryBuilder;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{page, with_etag, Page, PageParams, QueryState};

pub fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Filters {
    aggregate_id: Option<Uuid>,
    aggregate_type: Option<String>,
    event_type: Option<String>,
    occurred_after: Option<DateTime<Utc>>,
    occurred_before: Option<DateTime<Utc>>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    cursor: Option<Uuid>,
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: Uuid,
    event_type: String,
    aggregate_id: Uuid,
    aggregate_type: String,
    project_id: Option<Uuid>,
    user_id: Option<Uuid>,
    payload: Option<Value>,
    occurred_at: NaiveDateTime,
    published_at: NaiveDateTime,
}

#[derive(Debug, Serialize, ToSchema)]
struct Entry {
    id: Uuid,
    event_type: String,
    aggregate_id: Uuid,
    aggregate_type: String,
    project_id: Option<Uuid>,
    user_id: Option<Uuid>,
    #[schema(value_type = Option<Object>)]
    payload: Option<Value>,
    occurred_at: DateTime<Utc>,
    published_at: DateTime<Utc>,
}

#[utoipa::path(get, path = "/event-log", tag = "event-log", summary = "The audit trail: one row per event", params(("project_id" = Uuid, Path, description = "The project"), Filters), responses((status = 200, description = "OK; ETag carries the version (one resource) or a content hash (a list)", body = Page<Entry>), QueryErrors), security(("api_key" = [])))]
async fn list(
    State(state): State<QueryState>,
    auth: AuthContext,
    Query(f): Query<Filters>,
) -> Result<Response, ApiError> {
    let limit = PageParams {
        limit: f.limit,
        cursor: f.cursor,
    }
    .limit()?;
    let mut sql = QueryBuilder::new(
        "select id, event_type, aggregate_id, aggregate_type, project_id, user_id, payload, occurred_at, published_at \
           from domain_event_logs where deleted_at is null and tenant_id = ",
    );
    sql.push_bind(&auth.tenant_id);
    if let Some(id) = f.aggregate_id {
        sql.push(" and aggregate_id = ").push_bind(id);
    }
    if let Some(t) = &f.aggregate_type {
        sql.push(" and aggregate_type = ").push_bind(t);
    }
    if let Some(t) = &f.event_type {
        sql.push(" and event_type = ").push_bind(t);
    }
    if let Some(after) = f.occurred_after {
        sql.push(" and occurred_at >= ")
            .push_bind(after.naive_utc());
    }
    if let Some(before) = f.occurred_before {
        sql.push(" and occurred_at < ")
            .push_bind(before.naive_utc());
    }
    if let Some(cursor) = f.cursor {
        sql.push(" and id > ").push_bind(cursor);
    }
    sql.push(" order by id limit ").push_bind(limit + 1);
    let mut tx = state.tx(&auth.tenant_id).await?;
    let rows: Vec<Row> = sql
        .build_query_as()
        .fetch_all(&mut *tx)
        .await
        .map_err(ApiError::internal)?;
    let items: Vec<Entry> = rows
        .into_iter()
        .map(|r| Entry {
            id: r.id,
            event_type: r.event_type,
            aggregate_id: r.aggregate_id,
            aggregate_type: r.aggregate_type,
            project_id: r.project_id,
            user_id: r.user_id,
            payload: r.payload,
            occurred_at: r.occurred_at.and_utc(),
            published_at: r.published_at.and_utc(),
        })
        .collect();
    Ok(with_etag(page(items, limit, |e| e.id), None))
}
