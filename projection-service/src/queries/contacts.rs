//! `GET /contacts`, `/contacts/{id}`, `/contacts/{id}/sessions`, `/contacts/{id}/events`.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use event_model::AggregateType;
use platform::auth::AuthContext;
use platform::event_store::EventStore;
use platform::http::{Path, Query};
use platform::openapi::{ParameterRule, QueryErrors};
use platform::ApiError;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::QueryBuilder;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::sessions::SessionDto;
use super::sessions::SessionFilters;
use super::{
    page, prefix_pattern, read_at_least, with_etag, OneParams, Page, PageParams, QueryState,
};
use crate::projections::as_of::{self, AsOf};
use crate::projections::contacts::ContactRecord;

pub fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(one))
        .routes(routes!(sessions))
        .routes(routes!(events))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContactDto {
    pub id: Uuid,
    pub project_id: Option<Uuid>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub external_id: Option<String>,
    pub source_channel: Option<String>,
    pub language: Option<String>,
    pub timezone: Option<String>,
    pub tags: Vec<String>,
    pub profile_picture_url: Option<String>,
    pub profile_picture_fetched_at: Option<DateTime<Utc>>,
    pub first_interaction_at: Option<DateTime<Utc>>,
    pub last_interaction_at: Option<DateTime<Utc>>,
    pub version: i64,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// Forgotten (erased): every personal field is null for good.
    pub forgotten: bool,
    /// The version this is the contact as of (`as_of_version` / `as_of` reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of_version: Option<i64>,
}

impl From<ContactRecord> for ContactDto {
    fn from(r: ContactRecord) -> Self {
        Self {
            id: r.id,
            project_id: r.project_id,
            name: r.name,
            email: r.email,
            phone: r.phone,
            external_id: r.external_id,
            source_channel: r.source_channel,
            language: r.language,
            timezone: r.timezone,
            tags: r.tags.unwrap_or_default(),
            profile_picture_url: r.profile_picture_url,
            profile_picture_fetched_at: r.profile_picture_fetched_at.map(|t| t.and_utc()),
            first_interaction_at: r.first_interaction_at.map(|t| t.and_utc()),
            last_interaction_at: r.last_interaction_at.map(|t| t.and_utc()),
            version: r.version,
            created_at: r.created_at.map(|t| t.and_utc()),
            updated_at: r.updated_at.map(|t| t.and_utc()),
            deleted_at: r.deleted_at.map(|t| t.and_utc()),
            forgotten: r.forgotten_at.is_some(),
            as_of_version: None,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ContactFilters {
    q: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    external_id: Option<String>,
    tag: Option<String>,
    updated_since: Option<DateTime<Utc>>,
    #[serde(default)]
    include_deleted: bool,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    cursor: Option<Uuid>,
}

#[utoipa::path(get, path = "/contacts", operation_id = "list_contacts", tag = "contacts", summary = "List contacts", params(("project_id" = Uuid, Path, description = "The project"), ContactFilters), responses((status = 200, description = "OK; ETag carries the version (one resource) or a content hash (a list)", body = Page<ContactDto>), QueryErrors), security(("api_key" = [])))]
async fn list(
    State(state): State<QueryState>,
    auth: AuthContext,
    Query(f): Query<ContactFilters>,
) -> Result<Response, ApiError> {
    let limit = PageParams {
        limit: f.limit,
        cursor: f.cursor,
    }
    .limit()?;
    let mut sql = QueryBuilder::new("select to_jsonb(c) from contacts c where c.tenant_id = ");
    sql.push_bind(&auth.tenant_id);
    if let Some(q) = f.q.as_deref().filter(|q| !q.is_empty()) {
        let pattern = prefix_pattern(q);
        sql.push(" and (c.name ilike ").push_bind(pattern.clone());
        sql.push(" or c.email ilike ").push_bind(pattern.clone());
        sql.push(" or c.phone like ").push_bind(pattern).push(")");
    }
    if let Some(email) = &f.email {
        sql.push(" and c.email = ")
            .push_bind(email.trim().to_lowercase());
    }
    if let Some(phone) = &f.phone {
        sql.push(" and c.phone = ").push_bind(phone);
    }
    if let Some(external_id) = &f.external_id {
        sql.push(" and c.external_id = ").push_bind(external_id);
    }
    if let Some(tag) = &f.tag {
        sql.push(" and c.tags ? ").push_bind(tag);
    }
    if let Some(since) = f.updated_since {
        sql.push(" and c.updated_at >= ")
            .push_bind(since.naive_utc());
    }
    if !f.include_deleted {
        sql.push(" and c.deleted_at is null");
    }
    if let Some(cursor) = f.cursor {
        sql.push(" and c.id > ").push_bind(cursor);
    }
    sql.push(" order by c.id limit ").push_bind(limit + 1);
    let mut tx = state.tx(&auth.tenant_id).await?;
    let rows: Vec<Json<ContactRecord>> = sql
        .build_query_scalar()
        .fetch_all(&mut *tx)
        .await
        .map_err(ApiError::internal)?;
    let items: Vec<ContactDto> = rows.into_iter().map(|r| r.0.into()).collect();
    Ok(with_etag(page(items, limit, |c| c.id), None))
}

pub async fn read_contact(
    state: &QueryState,
    tenant_id: &str,
    id: Uuid,
) -> Result<Option<ContactRecord>, sqlx::Error> {
    let mut tx = platform::db::tenant_tx(&state.pool, tenant_id).await?;
    let row = sqlx::query_scalar!(
        r#"select to_jsonb(c) as "row!: Json<ContactRecord>" from contacts c where c.id = $1 and c.tenant_id = $2"#,
        id,
        tenant_id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(|r| r.0))
}

#[utoipa::path(get, path = "/contacts/{contact_id}", operation_id = "get_contact", tag = "contacts", summary = "Read a contact (min_version: read-your-writes)", params(("project_id" = Uuid, Path, description = "The project"), ("contact_id" = Uuid, Path, description = "The contact"), OneParams), responses((status = 200, description = "OK; ETag carries the version (one resource) or a content hash (a list)", body = ContactDto), ParameterRule, QueryErrors), security(("api_key" = [])))]
async fn one(
    State(state): State<QueryState>,
    auth: AuthContext,
    Path((_, contact_id)): Path<(Uuid, Uuid)>,
    Query(params): Query<OneParams>,
) -> Result<Response, ApiError> {
    if let Some(at) = params.at()? {
        let mut tx = state.tx(&auth.tenant_id).await?;
        let found = as_of::contact(
            &mut tx,
            &state.store,
            &state.keys,
            &auth.tenant_id,
            contact_id,
            at,
        )
        .await;
        tx.commit().await.map_err(ApiError::internal)?;
        let AsOf { row, version } = super::as_of_found(found)?;
        let dto = ContactDto {
            as_of_version: Some(version),
            ..ContactDto::from(row)
        };
        return Ok(with_etag(dto, Some(version)));
    }
    let record = read_at_least(
        &state,
        &auth.tenant_id,
        "contact",
        contact_id,
        &params.read(),
        |r: &ContactRecord| r.version,
        || read_contact(&state, &auth.tenant_id, contact_id),
    )
    .await?;
    if record.forgotten_at.is_some() {
        // Erased: listed only with `include_deleted`, as a row without personal data.
        return Err(super::not_found());
    }
    let version = record.version;
    Ok(with_etag(ContactDto::from(record), Some(version)))
}

#[utoipa::path(get, path = "/contacts/{contact_id}/sessions", operation_id = "list_contact_sessions", tag = "contacts", summary = "List a contact's sessions", params(("project_id" = Uuid, Path, description = "The project"), ("contact_id" = Uuid, Path, description = "The contact"), ContactSessionFilters), responses((status = 200, description = "OK; ETag carries the version (one resource) or a content hash (a list)", body = Page<SessionDto>), QueryErrors), security(("api_key" = [])))]
async fn sessions(
    State(state): State<QueryState>,
    auth: AuthContext,
    Path((_, contact_id)): Path<(Uuid, Uuid)>,
    Query(f): Query<ContactSessionFilters>,
) -> Result<Response, ApiError> {
    if read_contact(&state, &auth.tenant_id, contact_id)
        .await
        .map_err(ApiError::internal)?
        .is_none()
    {
        return Err(super::not_found());
    }
    let filters = SessionFilters {
        contact_id: Some(contact_id),
        status: f.status,
        limit: f.limit,
        cursor: f.cursor,
        ..SessionFilters::default()
    };
    let page = super::sessions::list_sessions(&state, &auth.tenant_id, filters).await?;
    Ok(with_etag(page, None))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ContactSessionFilters {
    #[param(inline, value_type = Option<super::sessions::StatusFilter>)]
    status: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    cursor: Option<Uuid>,
}

/// A page of stored events: each an event envelope with its `position`, its `data` with the
/// personal fields in the clear, or `null` with `"redacted": true` once the contact was
/// forgotten.
#[derive(Serialize, ToSchema)]
struct EventPage {
    #[schema(value_type = Vec<Object>)]
    items: Vec<serde_json::Value>,
    /// The `after_sequence` of the next page.
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventParams {
    /// The store position after which to read (each event carries its `position`).
    after_sequence: Option<i64>,
    /// Only the events that occurred at or before this instant (RFC 3339): the history as it
    /// stood then.
    as_of: Option<DateTime<Utc>>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/contacts/{contact_id}/events", operation_id = "list_contact_events", tag = "contacts", summary = "A contact's and its sessions' events, in store order", params(("project_id" = Uuid, Path, description = "The project"), ("contact_id" = Uuid, Path, description = "The contact"), EventParams), responses((status = 200, description = "OK; ETag carries the version (one resource) or a content hash (a list)", body = EventPage), QueryErrors), security(("api_key" = [])))]
async fn events(
    State(state): State<QueryState>,
    auth: AuthContext,
    Path((_, contact_id)): Path<(Uuid, Uuid)>,
    Query(p): Query<EventParams>,
) -> Result<Response, ApiError> {
    let limit = PageParams {
        limit: p.limit,
        cursor: None,
    }
    .limit()?;
    let mut tx = state.tx(&auth.tenant_id).await?;
    let version = EventStore::stream_version(
        &mut *tx,
        &auth.tenant_id,
        contact_id,
        AggregateType::Contact.as_str(),
    )
    .await
    .map_err(ApiError::internal)?;
    if version.is_none() {
        return Err(super::not_found());
    }
    let mut events = state
        .store
        .read_contact_history(
            &mut *tx,
            &auth.tenant_id,
            contact_id,
            p.after_sequence.unwrap_or(0),
            p.as_of,
            limit + 1,
        )
        .await
        .map_err(ApiError::internal)?;
    let more = events.len() as i64 > limit;
    events.truncate(limit as usize);
    let keys = state
        .keys
        .load(&mut tx, &[contact_id])
        .await
        .map_err(ApiError::internal)?;
    let next_cursor = if more {
        events.last().map(|e| e.position.to_string())
    } else {
        None
    };
    let items = events
        .into_iter()
        .map(|envelope| {
            let opened = keys.open(&envelope).map_err(ApiError::internal)?;
            let mut item = serde_json::to_value(&envelope).map_err(ApiError::internal)?;
            item["data"] = opened.data();
            item["redacted"] = opened.redacted().into();
            Ok(item)
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(with_etag(EventPage { items, next_cursor }, None))
}
