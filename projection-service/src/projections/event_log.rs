//! The `domain_event_logs` projection: the audit trail, one row per event, keyed by the event's
//! id (so a second delivery inserts nothing).
//!
//! `published_at` is when the event was committed to the store (`recorded_at`): the moment it
//! became a fact others can see. It is taken from the store, not from the clock, so a rebuild
//! writes the very rows the live path wrote.

use chrono::NaiveDateTime;
use event_model::{ContactEvent, DomainEvent};
use serde::Serialize;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{Decoded, ProjectionError};

/// A `domain_event_logs` row, borrowed from its event (field names are the columns).
#[derive(Serialize)]
struct LogRow<'a> {
    id: Uuid,
    event_type: &'a str,
    aggregate_id: Uuid,
    aggregate_type: &'a str,
    tenant_id: &'a str,
    project_id: Uuid,
    user_id: Option<Uuid>,
    payload: &'a serde_json::Value,
    occurred_at: NaiveDateTime,
    published_at: NaiveDateTime,
    created_at: NaiveDateTime,
}

pub async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    events: &[Decoded<'_>],
) -> Result<Vec<Uuid>, ProjectionError> {
    let rows: Vec<LogRow<'_>> = events
        .iter()
        .map(|d| {
            let e = d.envelope;
            LogRow {
                id: e.event_id,
                event_type: &e.event_type,
                aggregate_id: e.aggregate_id,
                aggregate_type: e.aggregate_type.as_str(),
                tenant_id: &e.tenant_id,
                project_id: e.project_id,
                user_id: e.user_id,
                payload: &e.data,
                occurred_at: e.occurred_at.naive_utc(),
                published_at: e.recorded_at.naive_utc(),
                created_at: e.recorded_at.naive_utc(),
            }
        })
        .collect();
    sqlx::query(
        "insert into domain_event_logs \
             (id, event_type, aggregate_id, aggregate_type, tenant_id, project_id, user_id, payload, \
              occurred_at, published_at, created_at) \
         select id, event_type, aggregate_id, aggregate_type, tenant_id, project_id, user_id, payload, \
                occurred_at, published_at, created_at \
           from jsonb_populate_recordset(null::domain_event_logs, $1) \
         on conflict (id) do nothing",
    )
    .bind(sqlx::types::Json(&rows))
    .execute(&mut **tx)
    .await?;
    // A forgotten contact's rows that were written from messages published in the clear (by the
    // previous release) take the store's redacted form, which a rebuild would write.
    let forgotten: Vec<Uuid> = events
        .iter()
        .filter(|d| {
            matches!(
                d.event,
                DomainEvent::Contact(ContactEvent::Forgotten { .. })
            )
        })
        .map(|d| d.envelope.contact_id)
        .collect();
    if !forgotten.is_empty() {
        platform::history::sync_log_copies_of(tx, &forgotten).await?;
    }
    Ok(events.iter().map(|d| d.envelope.event_id).collect())
}
