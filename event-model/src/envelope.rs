//! The event envelope: what travels with every event, in the store and on the wire.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::AggregateType;
use crate::error::EventDecodeError;
use crate::event::DomainEvent;
use crate::personal::Payload;

/// A stored event with everything around it. This is the JSON body published to JetStream and
/// the unit the projections fold.
///
/// `contact_id` is the partition key: a session's events carry their contact's id so that one
/// partition sees a contact and its sessions in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// The event's own id (`contact_event_store.id`, a UUIDv7); also its JetStream `Nats-Msg-Id`,
    /// so that the broker drops a republished copy.
    pub event_id: Uuid,
    /// The stream the event belongs to: a contact's id or a session's.
    pub aggregate_id: Uuid,
    /// Which kind of aggregate `aggregate_id` names.
    pub aggregate_type: AggregateType,
    /// The event's stored name, `<aggregate>.<verb>` (e.g. `contact.created`).
    pub event_type: String,
    /// The stored form of `data`: `v1` (every field in the clear) or `v2` (personal fields sealed);
    /// see [`crate::personal`].
    pub event_version: String,
    /// The event's place in its stream: 1 for the first, then one more for each, with no gaps.
    /// Unique per stream: the optimistic-concurrency guard.
    pub sequence_number: i64,
    /// Global order in the store (`contact_event_store.position`).
    pub position: i64,
    /// The tenant the event belongs to; every read filters by it.
    pub tenant_id: String,
    /// The project the event was decided in.
    pub project_id: Uuid,
    /// The contact the event concerns: `aggregate_id` for a contact's event, the session's contact
    /// for a session's (kept in the store's `metadata`). A project's event concerns no contact:
    /// its project's id stands here, as its partition key.
    pub contact_id: Uuid,
    /// The acting user (kept in the store's `metadata`); `None` for the system's own commands,
    /// such as the timeout sweeper's.
    pub user_id: Option<Uuid>,
    /// When the command that decided the event was decided ([`crate::Context::now`]), to the
    /// microsecond; the fold's time for the contact's `created_at`, `updated_at` and the like.
    pub occurred_at: DateTime<Utc>,
    /// When the store took the event in: `contact_event_store.created_at`, which is the start of
    /// the writing transaction (not its commit), or `occurred_at` when the row has none.
    pub recorded_at: DateTime<Utc>,
    /// The command that caused the event: every event one command decides carries its id. `None`
    /// when the stored row has none.
    pub causation_id: Option<Uuid>,
    /// Ties together everything one request caused: its `X-Correlation-Id` as a UUID, or a new id
    /// when it sent none (and for the system's own commands). `None` when the stored row has none.
    pub correlation_id: Option<Uuid>,
    /// The payload as stored (`event_data`), in the form `event_version` names: read it with
    /// [`EventEnvelope::payload`] or [`EventEnvelope::decode`].
    pub data: serde_json::Value,
}

impl EventEnvelope {
    /// The payload in the current shape (upcast from `v1` where need be), its personal fields
    /// still as stored.
    pub fn payload(&self) -> Result<Payload, EventDecodeError> {
        Payload::from_stored(&self.event_type, &self.event_version, self.data.clone())
    }

    /// The typed event, upcast to the current shape, when its personal fields are in the clear
    /// (`v1`) or it has none; a sealed one is opened with its contact's key instead
    /// (`platform::personal`).
    pub fn decode(&self) -> Result<DomainEvent, EventDecodeError> {
        DomainEvent::decode(
            self.aggregate_type,
            &self.event_type,
            &self.event_version,
            self.data.clone(),
        )
    }
}
