//! A stored event's row, and how it becomes an envelope.

use chrono::NaiveDateTime;
use event_model::{AggregateType, EventEnvelope};
use serde_json::Value;
use uuid::Uuid;

use super::StoreError;

/// A stored event's row, as the store holds it.
#[derive(Debug, sqlx::FromRow)]
pub struct EventRow {
    /// The event's id: the envelope's `event_id`.
    pub id: Uuid,
    /// The stream it belongs to: a contact's id or a session's.
    pub aggregate_id: Uuid,
    /// `contact` or `session`; `None` reads as the column's default, `contact`.
    pub aggregate_type: Option<String>,
    /// Its stored name, e.g. `contact.created`.
    pub event_type: String,
    /// The form of `event_data` (`v1` in the clear, `v2` sealed); `None` reads as the column's
    /// default, `v1`.
    pub event_version: Option<String>,
    /// Its place in its stream, from 1, without gaps.
    pub sequence_number: i64,
    /// The payload as stored, in the form `event_version` names.
    pub event_data: Value,
    /// `user_id`, `contact_id`, `correlation_id` and `traceparent`, as the append writes them.
    /// `None` reads as empty: no user, and no contact, which makes a session's event
    /// [`StoreError::Corrupt`].
    pub metadata: Option<Value>,
    /// When the command was decided, in UTC.
    pub occurred_at: NaiveDateTime,
    /// When the store took the event in (the writing transaction's start), in UTC; `None` reads
    /// as `occurred_at`.
    pub created_at: Option<NaiveDateTime>,
    /// The tenant it belongs to.
    pub tenant_id: String,
    /// The project it was decided in; a row without one is [`StoreError::Corrupt`].
    pub project_id: Option<Uuid>,
    /// The command that decided it, if the row says.
    pub causation_id: Option<Uuid>,
    /// The request chain it belongs to, if the row says.
    pub correlation_id: Option<Uuid>,
    /// Its global order in the store, handed out at insert and not at commit (see
    /// [`EventStore::read_after`](super::EventStore::read_after)).
    pub position: i64,
}

/// The columns every read selects, in `EventRow`'s order.
pub const EVENT_COLUMNS: &str = "e.id, e.aggregate_id, e.aggregate_type, e.event_type, e.event_version, \
     e.sequence_number, e.event_data, e.metadata, e.occurred_at, e.created_at, e.tenant_id, e.project_id, \
     e.causation_id, e.correlation_id, e.position";

/// The acting user an event's metadata names: `Some(None)` when it names none. The audit copy
/// casts the same text to `uuid` in SQL (projection-service's `event_log`), so only the form
/// both read alike passes: 36 characters, hyphenated.
fn user_id(metadata: &Value) -> Option<Option<Uuid>> {
    match metadata.get("user_id") {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) if s.len() == 36 => Uuid::parse_str(s).ok().map(Some),
        Some(_) => None,
    }
}

impl EventRow {
    /// The W3C trace context the event was decided in, if any.
    pub fn traceparent(&self) -> Option<String> {
        self.metadata
            .as_ref()?
            .get("traceparent")?
            .as_str()
            .map(str::to_owned)
    }

    /// The envelope of the row, absent columns read as their defaults. [`StoreError::Corrupt`] for
    /// a row no append writes: an unknown aggregate type, no project, a session's event that names
    /// no contact, a `user_id` that is not a hyphenated UUID.
    pub fn into_envelope(self) -> Result<EventEnvelope, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            event_id: self.id,
            reason: reason.to_owned(),
        };
        let aggregate_type =
            AggregateType::parse(self.aggregate_type.as_deref().unwrap_or("contact"))
                .ok_or_else(|| corrupt("unknown aggregate_type"))?;
        let metadata = self.metadata.unwrap_or(Value::Null);
        let uuid_of = |key: &str| {
            metadata
                .get(key)
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
        };
        let contact_id = match aggregate_type {
            // A project's events are partitioned by the project's id.
            AggregateType::Contact | AggregateType::Project => self.aggregate_id,
            AggregateType::Session => {
                uuid_of("contact_id").ok_or_else(|| corrupt("session event without contact_id"))?
            }
        };
        Ok(EventEnvelope {
            event_id: self.id,
            aggregate_id: self.aggregate_id,
            aggregate_type,
            event_type: self.event_type,
            event_version: self.event_version.unwrap_or_else(|| "v1".to_owned()),
            sequence_number: self.sequence_number,
            position: self.position,
            tenant_id: self.tenant_id,
            project_id: self.project_id.ok_or_else(|| corrupt("no project_id"))?,
            contact_id,
            user_id: user_id(&metadata).ok_or_else(|| corrupt("user_id is not a uuid"))?,
            occurred_at: self.occurred_at.and_utc(),
            recorded_at: self.created_at.unwrap_or(self.occurred_at).and_utc(),
            causation_id: self.causation_id,
            correlation_id: self.correlation_id,
            data: self.event_data,
        })
    }
}
