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

mod keys;
mod members;

use axum::http::HeaderMap;
use chrono::Utc;
use event_model::{AggregateType, DomainEvent, ProjectEvent};
use platform::auth::{AuthContext, Role};
use platform::db::tenant_tx;
use platform::event_store::{EventStore, NewEvent};
use platform::ApiError;
use sqlx::{Postgres, Transaction};
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use super::{field_error, AppState, CommandHeaders};

pub fn router() -> OpenApiRouter<AppState> {
    keys::router().merge(members::router())
}

/// The role a body names; any other text is a 422 for `field`.
fn role_of(field: &str, raw: &str) -> Result<Role, ApiError> {
    Role::parse(raw).ok_or_else(|| {
        field_error(
            field,
            "must be one of owner, admin, supervisor, agent, viewer",
        )
    })
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
