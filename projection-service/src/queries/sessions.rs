//! `GET /sessions` and `/sessions/{id}`: every metric column of the `sessions` table.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use event_model::Sentiment;
use platform::auth::AuthContext;
use platform::http::{Path, Query};
use platform::openapi::{ParameterRule, QueryErrors};
use platform::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::QueryBuilder;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{page, read_at_least, with_etag, OneParams, Page, PageParams, QueryState};
use crate::projections::as_of::{self, AsOf};
use crate::projections::sessions::SessionRecord;

pub fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(one))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionDto {
    pub id: Uuid,
    pub contact_id: Option<Uuid>,
    pub channel_type_id: Option<i64>,
    pub pipeline_id: Option<Uuid>,
    pub status: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<String>,
    /// `timeout_duration` in nanoseconds, as stored.
    pub timeout_duration: Option<i64>,
    pub last_activity_at: DateTime<Utc>,
    pub message_count: i64,
    pub messages_from_contact: i64,
    pub messages_from_agent: i64,
    pub duration_seconds: i64,
    pub first_contact_message_at: Option<DateTime<Utc>>,
    pub first_agent_response_at: Option<DateTime<Utc>>,
    pub agent_response_time_seconds: Option<i64>,
    pub contact_wait_time_seconds: Option<i64>,
    pub agent_ids: Vec<Uuid>,
    pub agent_transfers: i64,
    pub summary: Option<String>,
    #[schema(value_type = Option<String>)]
    pub sentiment: Option<Sentiment>,
    pub sentiment_score: Option<f64>,
    pub topics: Option<Vec<String>>,
    pub next_steps: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub key_entities: Option<Value>,
    pub resolved: bool,
    pub escalated: bool,
    pub converted: bool,
    pub outcome_tags: Vec<String>,
    pub version: i64,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// The version this is the session as of (`as_of_version` / `as_of` reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of_version: Option<i64>,
}

impl From<SessionRecord> for SessionDto {
    fn from(r: SessionRecord) -> Self {
        Self {
            id: r.id,
            contact_id: r.contact_id,
            channel_type_id: r.channel_type_id,
            pipeline_id: r.pipeline_id,
            status: r.status,
            started_at: r.started_at.and_utc(),
            ended_at: r.ended_at.map(|t| t.and_utc()),
            end_reason: r.end_reason,
            timeout_duration: r.timeout_duration,
            last_activity_at: r.last_activity_at.and_utc(),
            message_count: r.message_count.unwrap_or_default(),
            messages_from_contact: r.messages_from_contact.unwrap_or_default(),
            messages_from_agent: r.messages_from_agent.unwrap_or_default(),
            duration_seconds: r.duration_seconds.unwrap_or_default(),
            first_contact_message_at: r.first_contact_message_at.map(|t| t.and_utc()),
            first_agent_response_at: r.first_agent_response_at.map(|t| t.and_utc()),
            agent_response_time_seconds: r.agent_response_time_seconds,
            contact_wait_time_seconds: r.contact_wait_time_seconds,
            agent_ids: r.agent_ids.unwrap_or_default(),
            agent_transfers: r.agent_transfers.unwrap_or_default(),
            summary: r.summary,
            sentiment: r.sentiment,
            sentiment_score: r.sentiment_score,
            topics: r.topics,
            next_steps: r.next_steps,
            key_entities: r.key_entities,
            resolved: r.resolved.unwrap_or_default(),
            escalated: r.escalated.unwrap_or_default(),
            converted: r.converted.unwrap_or_default(),
            outcome_tags: r.outcome_tags.unwrap_or_default(),
            version: r.version,
            created_at: r.created_at.map(|t| t.and_utc()),
            updated_at: r.updated_at.map(|t| t.and_utc()),
            as_of_version: None,
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SessionFilters {
    #[serde(skip)]
    #[param(ignore)]
    pub contact_id: Option<Uuid>,
    #[param(inline, value_type = Option<StatusFilter>)]
    pub status: Option<String>,
    pub agent_id: Option<Uuid>,
    pub channel_type_id: Option<i64>,
    pub started_after: Option<DateTime<Utc>>,
    pub started_before: Option<DateTime<Utc>>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    pub cursor: Option<Uuid>,
}

/// The values of the `status` filter (any other is 400), for the document.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum StatusFilter {
    Active,
    Ended,
}

pub async fn list_sessions(
    state: &QueryState,
    tenant_id: &str,
    f: SessionFilters,
) -> Result<Page<SessionDto>, ApiError> {
    let limit = PageParams {
        limit: f.limit,
        cursor: f.cursor,
    }
    .limit()?;
    let mut sql = QueryBuilder::new("select to_jsonb(s) from sessions s where s.tenant_id = ");
    sql.push_bind(tenant_id.to_owned());
    if let Some(contact_id) = f.contact_id {
        sql.push(" and s.contact_id = ").push_bind(contact_id);
    }
    if let Some(status) = f.status {
        if !matches!(status.as_str(), "active" | "ended") {
            return Err(ApiError::BadRequest(
                "status must be active or ended".into(),
            ));
        }
        sql.push(" and s.status = ").push_bind(status);
    }
    if let Some(agent) = f.agent_id {
        sql.push(" and s.agent_ids ? ").push_bind(agent.to_string());
    }
    if let Some(channel) = f.channel_type_id {
        sql.push(" and s.channel_type_id = ").push_bind(channel);
    }
    if let Some(after) = f.started_after {
        sql.push(" and s.started_at >= ")
            .push_bind(after.naive_utc());
    }
    if let Some(before) = f.started_before {
        sql.push(" and s.started_at < ")
            .push_bind(before.naive_utc());
    }
    if let Some(cursor) = f.cursor {
        sql.push(" and s.id > ").push_bind(cursor);
    }
    sql.push(" and s.deleted_at is null order by s.id limit ")
        .push_bind(limit + 1);
    let mut tx = state.tx(tenant_id).await?;
    let rows: Vec<Json<SessionRecord>> = sql
        .build_query_scalar()
        .fetch_all(&mut *tx)
        .await
        .map_err(ApiError::internal)?;
    let items: Vec<SessionDto> = rows.into_iter().map(|r| r.0.into()).collect();
    Ok(page(items, limit, |s| s.id))
}

#[utoipa::path(get, path = "/sessions", operation_id = "list_sessions", tag = "sessions", summary = "List sessions", params(("project_id" = Uuid, Path, description = "The project"), SessionFilters), responses((status = 200, description = "OK; ETag carries the version (one resource) or a content hash (a list)", body = Page<SessionDto>), QueryErrors), security(("api_key" = [])))]
async fn list(
    State(state): State<QueryState>,
    auth: AuthContext,
    Query(filters): Query<SessionFilters>,
) -> Result<Response, ApiError> {
    Ok(with_etag(
        list_sessions(&state, &auth.tenant_id, filters).await?,
        None,
    ))
}

/// The `sessions` row of `id` in this tenant.
pub async fn read_session(
    state: &QueryState,
    tenant_id: &str,
    id: Uuid,
) -> Result<Option<SessionRecord>, sqlx::Error> {
    let mut tx = platform::db::tenant_tx(&state.pool, tenant_id).await?;
    let row = sqlx::query_scalar!(
        r#"select to_jsonb(s) as "row!: Json<SessionRecord>" from sessions s where s.id = $1 and s.tenant_id = $2"#,
        id,
        tenant_id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(|r| r.0))
}

#[utoipa::path(get, path = "/sessions/{session_id}", operation_id = "get_session", tag = "sessions", summary = "Read a session with every metric (min_version: read-your-writes)", params(("project_id" = Uuid, Path, description = "The project"), ("session_id" = Uuid, Path, description = "The session"), OneParams), responses((status = 200, description = "OK; ETag carries the version (one resource) or a content hash (a list)", body = SessionDto), ParameterRule, QueryErrors), security(("api_key" = [])))]
async fn one(
    State(state): State<QueryState>,
    auth: AuthContext,
    Path((_, session_id)): Path<(Uuid, Uuid)>,
    Query(params): Query<OneParams>,
) -> Result<Response, ApiError> {
    if let Some(at) = params.at()? {
        let mut tx = state.tx(&auth.tenant_id).await?;
        let found = as_of::session(
            &mut tx,
            &state.store,
            &state.keys,
            &auth.tenant_id,
            session_id,
            at,
        )
        .await;
        tx.commit().await.map_err(ApiError::internal)?;
        let AsOf { row, version } = super::as_of_found(found)?;
        let dto = SessionDto {
            as_of_version: Some(version),
            ..SessionDto::from(row)
        };
        return Ok(with_etag(dto, Some(version)));
    }
    let record = read_at_least(
        &state,
        &auth.tenant_id,
        "session",
        session_id,
        &params.read(),
        |r: &SessionRecord| r.version,
        || read_session(&state, &auth.tenant_id, session_id),
    )
    .await?;
    let version = record.version;
    Ok(with_etag(SessionDto::from(record), Some(version)))
}
