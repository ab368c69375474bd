//! The `domain_event_logs` projection: the audit trail, one row per event, keyed by the event's
//! id (so a second delivery inserts nothing).
//!
//! `published_at` is when the event was committed to the store (`recorded_at`): the moment it
//! became a fact others can see. It is taken from the store, not from the clock, so a rebuild
//! writes the very rows the live path wrote.

use chrono::NaiveDateTime;
use serde::Serialize;
use uuid::Uuid;

use super::Decoded;

/// A `domain_event_logs` row, borrowed from its event (field names are the columns).
#[derive(Serialize)]
pub struct LogRow<'a> {
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

/// The columns a batch's write inserts ([`super::write`]; a second delivery inserts nothing).
pub(super) const COLUMNS: &[&str] = &[
    "id",
    "event_type",
    "aggregate_id",
    "aggregate_type",
    "tenant_id",
    "project_id",
    "user_id",
    "payload",
    "occurred_at",
    "published_at",
    "created_at",
];

/// The audit rows of `events`, one each.
pub fn rows<'a>(events: &[Decoded<'a>]) -> Vec<LogRow<'a>> {
    events
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
        .collect()
}
