//! The `sessions` projection: one row per session with every metric, folded with the domain's own
//! [`SessionView::apply`] (so the numbers are the aggregate's numbers).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, NaiveDateTime, Utc};
use event_model::values::SessionTimeout;
use event_model::{DomainEvent, EndReason, EventEnvelope, Sentiment, SessionStatus, SessionView};
use platform::event_store::EventStore;
use platform::personal::KeySet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::projection::{decode, Decoded, ProjectionError};

/// A `sessions` row, column for column (read with `to_jsonb`, written with
/// `jsonb_populate_recordset`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: Uuid,
    pub contact_id: Option<Uuid>,
    pub tenant_id: String,
    pub channel_type_id: Option<i64>,
    pub pipeline_id: Option<Uuid>,
    pub started_at: NaiveDateTime,
    pub ended_at: Option<NaiveDateTime>,
    pub status: Option<String>,
    pub end_reason: Option<String>,
    /// Nanoseconds, as the inventory has it.
    pub timeout_duration: Option<i64>,
    pub last_activity_at: NaiveDateTime,
    pub message_count: Option<i64>,
    pub messages_from_contact: Option<i64>,
    pub messages_from_agent: Option<i64>,
    pub duration_seconds: Option<i64>,
    pub first_contact_message_at: Option<NaiveDateTime>,
    pub first_agent_response_at: Option<NaiveDateTime>,
    pub agent_response_time_seconds: Option<i64>,
    pub contact_wait_time_seconds: Option<i64>,
    pub agent_ids: Option<Vec<Uuid>>,
    pub agent_transfers: Option<i64>,
    pub summary: Option<String>,
    pub sentiment: Option<Sentiment>,
    pub sentiment_score: Option<f64>,
    pub topics: Option<Vec<String>>,
    pub next_steps: Option<Vec<String>>,
    pub key_entities: Option<Value>,
    pub resolved: Option<bool>,
    pub escalated: Option<bool>,
    pub converted: Option<bool>,
    pub outcome_tags: Option<Vec<String>>,
    pub version: i64,
    pub created_at: Option<NaiveDateTime>,
    pub updated_at: Option<NaiveDateTime>,
    pub deleted_at: Option<NaiveDateTime>,
}

pub(super) const COLUMNS: &[&str] = &[
    "id",
    "contact_id",
    "tenant_id",
    "channel_type_id",
    "pipeline_id",
    "started_at",
    "ended_at",
    "status",
    "end_reason",
    "timeout_duration",
    "last_activity_at",
    "message_count",
    "messages_from_contact",
    "messages_from_agent",
    "duration_seconds",
    "first_contact_message_at",
    "first_agent_response_at",
    "agent_response_time_seconds",
    "contact_wait_time_seconds",
    "agent_ids",
    "agent_transfers",
    "summary",
    "sentiment",
    "sentiment_score",
    "topics",
    "next_steps",
    "key_entities",
    "resolved",
    "escalated",
    "converted",
    "outcome_tags",
    "version",
    "created_at",
    "updated_at",
    "deleted_at",
];

fn naive(at: Option<DateTime<Utc>>) -> Option<NaiveDateTime> {
    at.map(|t| t.naive_utc())
}

fn utc(at: Option<NaiveDateTime>) -> Option<DateTime<Utc>> {
    at.map(|t| t.and_utc())
}

impl SessionRecord {
    fn view(&self) -> SessionView {
        SessionView {
            contact_id: self.contact_id.unwrap_or_default(),
            channel_type_id: self.channel_type_id.unwrap_or_default(),
            pipeline_id: self.pipeline_id,
            status: match self.status.as_deref() {
                Some("active") => SessionStatus::Active,
                Some("ended") => SessionStatus::Ended,
                _ => SessionStatus::New,
            },
            started_at: Some(self.started_at.and_utc()),
            ended_at: utc(self.ended_at),
            end_reason: self
                .end_reason
                .as_deref()
                .and_then(|r| serde_json::from_value(Value::String(r.into())).ok()),
            // A row without one (written by something else) times out as the sweeper reads it.
            timeout_seconds: self
                .timeout_duration
                .map_or(SessionTimeout::DEFAULT, SessionTimeout::from_nanos)
                .seconds(),
            last_activity_at: Some(self.last_activity_at.and_utc()),
            message_count: self.message_count.unwrap_or_default(),
            messages_from_contact: self.messages_from_contact.unwrap_or_default(),
            messages_from_agent: self.messages_from_agent.unwrap_or_default(),
            duration_seconds: self.duration_seconds.unwrap_or_default(),
            first_contact_message_at: utc(self.first_contact_message_at),
            first_agent_response_at: utc(self.first_agent_response_at),
            agent_response_time_seconds: self.agent_response_time_seconds,
            contact_wait_time_seconds: self.contact_wait_time_seconds,
            agent_ids: self.agent_ids.clone().unwrap_or_default(),
            agent_transfers: self.agent_transfers.unwrap_or_default(),
            summary: self.summary.clone(),
            sentiment: self.sentiment,
            sentiment_score: self.sentiment_score,
            topics: self.topics.clone(),
            next_steps: self.next_steps.clone(),
            key_entities: self.key_entities.clone(),
            resolved: self.resolved.unwrap_or_default(),
            escalated: self.escalated.unwrap_or_default(),
            converted: self.converted.unwrap_or_default(),
            outcome_tags: self.outcome_tags.clone().unwrap_or_default(),
        }
    }

    fn from_view(id: Uuid, tenant_id: &str, view: SessionView, version: i64) -> Self {
        let started_at = view.started_at.unwrap_or_default().naive_utc();
        Self {
            id,
            contact_id: Some(view.contact_id),
            tenant_id: tenant_id.to_owned(),
            channel_type_id: Some(view.channel_type_id),
            pipeline_id: view.pipeline_id,
            started_at,
            ended_at: naive(view.ended_at),
            status: Some(view.status.as_str().to_owned()),
            end_reason: view.end_reason.map(|r: EndReason| r.as_str().to_owned()),
            timeout_duration: Some(SessionTimeout::from_seconds(view.timeout_seconds).nanos()),
            last_activity_at: view.last_activity_at.map_or(started_at, |t| t.naive_utc()),
            message_count: Some(view.message_count),
            messages_from_contact: Some(view.messages_from_contact),
            messages_from_agent: Some(view.messages_from_agent),
            duration_seconds: Some(view.duration_seconds),
            first_contact_message_at: naive(view.first_contact_message_at),
            first_agent_response_at: naive(view.first_agent_response_at),
            agent_response_time_seconds: view.agent_response_time_seconds,
            contact_wait_time_seconds: view.contact_wait_time_seconds,
            agent_ids: Some(view.agent_ids),
            agent_transfers: Some(view.agent_transfers),
            summary: view.summary,
            sentiment: view.sentiment,
            sentiment_score: view.sentiment_score,
            topics: view.topics,
            next_steps: view.next_steps,
            key_entities: view.key_entities,
            resolved: Some(view.resolved),
            escalated: Some(view.escalated),
            converted: Some(view.converted),
            outcome_tags: Some(view.outcome_tags),
            version,
            created_at: None,
            updated_at: None,
            deleted_at: None,
        }
    }
}

/// The fold: one session event into the session's row (`None` until `session.started`). Pure.
pub fn fold(
    record: Option<SessionRecord>,
    envelope: &EventEnvelope,
    event: &DomainEvent,
) -> Option<SessionRecord> {
    let DomainEvent::Session(e) = event else {
        return record;
    };
    let (mut view, created_at) = match &record {
        Some(r) => (r.view(), r.created_at),
        None => (
            SessionView::default(),
            Some(envelope.occurred_at.naive_utc()),
        ),
    };
    view.apply(e);
    if view.status == SessionStatus::New {
        return record; // nothing before `session.started` makes a row
    }
    let mut next = SessionRecord::from_view(
        envelope.aggregate_id,
        &envelope.tenant_id,
        view,
        envelope.sequence_number,
    );
    next.created_at = created_at;
    next.updated_at = Some(envelope.occurred_at.naive_utc());
    next.deleted_at = record.and_then(|r| r.deleted_at);
    Some(next)
}

/// Folds session events into the `sessions` rows (`rows`: the batch's, as loaded); returns the
/// rows it changed and the ids of every event it took care of. The batch writes the rows
/// ([`super::write`]).
pub async fn apply(
    conn: &mut PgConnection,
    store: &EventStore,
    keys: &KeySet,
    events: &[Decoded<'_>],
    rows: HashMap<Uuid, SessionRecord>,
) -> Result<(Vec<SessionRecord>, Vec<Uuid>), ProjectionError> {
    let mut rows: HashMap<Uuid, Option<SessionRecord>> =
        rows.into_iter().map(|(k, v)| (k, Some(v))).collect();
    let mut dirty = BTreeSet::new();
    let mut handled = Vec::with_capacity(events.len());
    for d in events {
        let envelope = d.envelope;
        handled.push(envelope.event_id);
        if !matches!(d.event, DomainEvent::Session(_)) {
            continue;
        }
        let id = envelope.aggregate_id;
        let slot = rows.entry(id).or_insert(None);
        let version = slot.as_ref().map_or(0, |r| r.version);
        if envelope.sequence_number <= version {
            continue; // already applied
        }
        if envelope.sequence_number > version + 1 {
            for earlier in store
                .read_range(&mut *conn, id, version + 1, envelope.sequence_number - 1)
                .await?
            {
                let earlier_event = decode(keys, &earlier)?;
                *slot = fold(slot.take(), &earlier, &earlier_event.event);
                handled.push(earlier.event_id);
            }
        }
        *slot = fold(slot.take(), envelope, &d.event);
        dirty.insert(id);
    }
    let changed = dirty
        .iter()
        .filter_map(|id| rows.remove(id).flatten())
        .collect();
    Ok((changed, handled))
}

/// Nulls the personal columns of forgotten contacts' sessions (the events' personal fields, see
/// `event_model::personal::fields`): what a fold of their now-redacted events gives. Run after the
/// batch's write, which may have written those sessions.
pub async fn forget_personal_columns(
    tx: &mut Transaction<'_, Postgres>,
    contact_ids: &[Uuid],
) -> Result<(), ProjectionError> {
    sqlx::query!(
        "update sessions set summary = null, topics = null, next_steps = null, key_entities = null \
          where contact_id = any($1) \
            and (summary, topics, next_steps, key_entities) is distinct from (null, null, null, null)",
        contact_ids,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_without_a_timeout_folds_with_the_default_timeout_the_sweeper_applies() {
        let row: SessionRecord = serde_json::from_value(serde_json::json!({
            "id": Uuid::nil(),
            "tenant_id": "tenant-a",
            "started_at": "2026-12-01T10:00:00",
            "last_activity_at": "2026-12-01T10:05:00",
            "version": 3,
        }))
        .unwrap();
        assert_eq!(row.timeout_duration, None);
        assert_eq!(
            row.view().timeout_seconds,
            SessionTimeout::DEFAULT.seconds(),
            "a fold must not write back a timeout of 0 s, which the sweeper would end at once"
        );
        let five_minutes = SessionRecord {
            timeout_duration: Some(SessionTimeout::from_minutes(5).nanos()),
            ..row
        };
        assert_eq!(five_minutes.view().timeout_seconds, 300);
    }
}
