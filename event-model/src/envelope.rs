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
    pub event_id: Uuid,
    pub aggregate_id: Uuid,
    pub aggregate_type: AggregateType,
    pub event_type: String,
    pub event_version: String,
    pub sequence_number: i64,
    /// Global order in the store (`contact_event_store.position`).
    pub position: i64,
    pub tenant_id: String,
    pub project_id: Uuid,
    pub contact_id: Uuid,
    /// The acting user (kept in the store's `metadata`).
    pub user_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    /// When the store committed the event (`contact_event_store.created_at`).
    pub recorded_at: DateTime<Utc>,
    pub causation_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
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
