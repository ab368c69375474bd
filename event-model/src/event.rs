//! The closed set of domain events and how they are named and (de)serialised.
//!
//! An event is stored as `(event_type, event_version, event_data)`. Names are `<aggregate>.<verb>`
//! and never change; a payload that must change shape gets a new version and an upcaster in
//! [`DomainEvent::decode`], so stored rows are never rewritten.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::contact::ContactEvent;
use crate::envelope::AggregateType;
use crate::session::SessionEvent;

pub const CURRENT_EVENT_VERSION: &str = "v1";

#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    Contact(ContactEvent),
    Session(SessionEvent),
}

/// An event decided but not yet stored: the stream it goes to, and the event.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    pub aggregate_id: Uuid,
    pub event: DomainEvent,
}

#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    #[error("unknown event {event_type} {event_version} for aggregate {aggregate_type}")]
    Unknown {
        aggregate_type: AggregateType,
        event_type: String,
        event_version: String,
    },
    #[error("event {event_type} has a payload that does not fit its type: {source}")]
    Payload {
        event_type: String,
        source: serde_json::Error,
    },
}

impl DomainEvent {
    pub fn aggregate_type(&self) -> AggregateType {
        match self {
            Self::Contact(_) => AggregateType::Contact,
            Self::Session(_) => AggregateType::Session,
        }
    }

    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Contact(e) => e.event_type(),
            Self::Session(e) => e.event_type(),
        }
    }

    pub fn event_version(&self) -> &'static str {
        CURRENT_EVENT_VERSION
    }

    /// The payload alone (`event_data`): what the event adds, without the envelope.
    pub fn data(&self) -> Value {
        match self {
            Self::Contact(e) => split_data(e),
            Self::Session(e) => split_data(e),
        }
    }

    pub fn decode(
        aggregate_type: AggregateType,
        event_type: &str,
        event_version: &str,
        data: Value,
    ) -> Result<Self, EventDecodeError> {
        // Upcasters go here, one arm per (type, old version), each turning the old payload into
        // the current one. Only v1 exists so far.
        if event_version != CURRENT_EVENT_VERSION {
            return Err(EventDecodeError::Unknown {
                aggregate_type,
                event_type: event_type.to_owned(),
                event_version: event_version.to_owned(),
            });
        }
        let unknown = || EventDecodeError::Unknown {
            aggregate_type,
            event_type: event_type.to_owned(),
            event_version: event_version.to_owned(),
        };
        match aggregate_type {
            AggregateType::Contact if event_type.starts_with("contact.") => {
                join_data(event_type, data).map(Self::Contact)
            }
            AggregateType::Session if event_type.starts_with("session.") => {
                join_data(event_type, data).map(Self::Session)
            }
            _ => Err(unknown()),
        }
    }
}

/// Events are serde enums tagged `{"type": ..., "data": ...}`; the store keeps the two apart.
fn split_data<E: Serialize>(event: &E) -> Value {
    match serde_json::to_value(event) {
        Ok(Value::Object(mut map)) => map.remove("data").unwrap_or_else(|| json!({})),
        // Every event is a struct variant; anything else is a programming error caught by tests.
        other => panic!("event did not serialise to a tagged object: {other:?}"),
    }
}

fn join_data<E: DeserializeOwned>(event_type: &str, data: Value) -> Result<E, EventDecodeError> {
    serde_json::from_value(json!({ "type": event_type, "data": data })).map_err(|source| {
        EventDecodeError::Payload {
            event_type: event_type.to_owned(),
            source,
        }
    })
}
