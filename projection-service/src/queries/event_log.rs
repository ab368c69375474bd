//! `GET /event-log`: the `domain_event_logs` audit trail.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, Utc};
use platform::auth::AuthContext;
use platform::http::Query;
use platform::openapi::QueryErrors;
use platform::personal;
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
    /// The event's data, personal fields in the clear, or `null` once its contact was forgotten.
    #[schema(value_type = Option<Object>)]
    payload: Option<Value>,
    /// The personal fields are gone for good (the contact was forgotten).
    redacted: bool,
    occurred_at: DateTime<Utc>,
    published_at: DateTime<Utc>,
}

#[utoipa::path(get, path = "/event-log", operation_id = "list_event_log", tag = "event-log", summary = "The audit trail: one row per event", params(("project_id" = Uuid, Path, description = "The project"), Filters), responses((status = 200, description = "OK; ETag carries the version (one resource) or a content hash (a list)", body = Page<Entry>), QueryErrors), security(("api_key" = [])))]
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
    // The log keeps each payload as stored, personal fields sealed: open them with the keys of
    // the contacts the page names, as those keys are now.
    let mut contacts: Vec<Uuid> = rows
        .iter()
        .filter_map(|r| r.payload.as_ref().and_then(personal::sealed_contact))
        .collect();
    contacts.sort_unstable();
    contacts.dedup();
    let keys = state
        .keys
        .load(&mut tx, &contacts)
        .await
        .map_err(ApiError::internal)?;
    let items: Vec<Entry> = rows
        .into_iter()
        .map(|r| {
            let (payload, redacted) = match r.payload {
                Some(stored) => {
                    let contact = personal::sealed_contact(&stored);
                    let opened = personal::logged_payload(&r.event_type, stored)
                        .and_then(|p| keys.open_payload(r.id, contact, p))
                        .map_err(ApiError::internal)?;
                    (opened.joined(), opened.is_redacted())
                }
                None => (None, false),
            };
            Ok(Entry {
                id: r.id,
                event_type: r.event_type,
                aggregate_id: r.aggregate_id,
                aggregate_type: r.aggregate_type,
                project_id: r.project_id,
                user_id: r.user_id,
                payload,
                redacted,
                occurred_at: r.occurred_at.and_utc(),
                published_at: r.published_at.and_utc(),
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(with_etag(page(items, limit, |e| e.id), None))
}
