//! The closed set of domain events and how they are named and (de)serialised.
//!
//! An event is stored as `(event_type, event_version, event_data)`. Names are `<aggregate>.<verb>`
//! and never change; a payload that must change shape gets a new version and an upcaster
//! ([`Payload::from_stored`] for `v1` → `v2`), so stored rows are never rewritten (the one
//! sanctioned exception, sealing the personal fields of `v1` rows, is `replay-tool
//! encrypt-history`).

use serde::de::value::MapDeserializer;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::aggregate::AggregateType;
use crate::contact::ContactEvent;
use crate::error::{value_free, EventDecodeError};
use crate::personal::Payload;
use crate::project::ProjectEvent;
use crate::session::SessionEvent;

/// The version new events are stored at: `v2`, personal fields sealed (see [`crate::personal`]).
pub const CURRENT_EVENT_VERSION: &str = "v2";

/// The version of events stored with every field in the clear. Read (and upcast by
/// [`Payload::from_stored`]), never written: such rows become `v2` when
/// `replay-tool encrypt-history` seals them, or when their contact is forgotten and they are
/// redacted.
pub const PLAIN_EVENT_VERSION: &str = "v1";

/// Every event type's stored name, as [`DomainEvent::event_type`] gives it.
pub const EVENT_TYPES: [&str; 29] = [
    "contact.created",
    "contact.name_changed",
    "contact.email_set",
    "contact.phone_set",
    "contact.external_id_set",
    "contact.language_changed",
    "contact.timezone_set",
    "contact.source_channel_set",
    "contact.tag_added",
    "contact.tag_removed",
    "contact.tags_cleared",
    "contact.profile_picture_updated",
    "contact.session_opened",
    "contact.session_closed",
    "contact.deleted",
    "contact.forgotten",
    "session.started",
    "session.message_recorded",
    "session.agent_assigned",
    "session.summarized",
    "session.escalated",
    "session.resolved",
    "session.converted",
    "session.outcome_tagged",
    "session.ended",
    "project.api_key_created",
    "project.api_key_revoked",
    "project.member_role_set",
    "project.member_removed",
];

/// An event of any stream: what a decision yields, and what a stored event decodes to.
#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    /// An event of a contact's stream.
    Contact(ContactEvent),
    /// An event of a session's stream.
    Session(SessionEvent),
    /// An event of a project's stream (who may call it).
    Project(ProjectEvent),
}

/// An event decided but not yet stored: the stream it goes to, and the event.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    /// The stream it goes to: the contact's id for a contact event, the session's for a session
    /// event. Its `sequence_number` is given when it is appended.
    pub aggregate_id: Uuid,
    /// The event, every field in the clear; its personal fields are sealed when it is appended.
    pub event: DomainEvent,
}

impl DomainEvent {
    /// The kind of stream the event belongs to.
    pub fn aggregate_type(&self) -> AggregateType {
        match self {
            Self::Contact(_) => AggregateType::Contact,
            Self::Session(_) => AggregateType::Session,
            Self::Project(_) => AggregateType::Project,
        }
    }

    /// The event's stored name (`contact.<verb>`, `session.<verb>` or `project.<verb>`).
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Contact(e) => e.event_type(),
            Self::Session(e) => e.event_type(),
            Self::Project(e) => e.event_type(),
        }
    }

    /// The version the event is stored at: always [`CURRENT_EVENT_VERSION`], as nothing writes any
    /// other.
    pub fn event_version(&self) -> &'static str {
        CURRENT_EVENT_VERSION
    }

    /// The payload alone, every field in the clear: what the event adds, without the envelope.
    pub fn data(&self) -> Value {
        match self {
            Self::Contact(e) => split_data(e),
            Self::Session(e) => split_data(e),
            Self::Project(e) => split_data(e),
        }
    }

    /// The payload in the current shape, its personal fields apart and in the clear, ready to be
    /// sealed and stored.
    pub fn payload(&self) -> Payload {
        Payload::split(self.event_type(), self.data())
    }

    /// Decodes a stored payload of any version whose personal fields are in the clear (`v1`) or
    /// that has none; a sealed one must be opened first ([`DomainEvent::from_payload`]).
    pub fn decode(
        aggregate_type: AggregateType,
        event_type: &str,
        event_version: &str,
        data: Value,
    ) -> Result<Self, EventDecodeError> {
        let payload =
            Payload::from_stored(event_type, event_version, data).map_err(|e| match e {
                EventDecodeError::UnknownVersion { .. } => EventDecodeError::Unknown {
                    aggregate_type,
                    event_type: event_type.to_owned(),
                    event_version: event_version.to_owned(),
                },
                other => other,
            })?;
        Self::from_payload(aggregate_type, &payload)
    }

    /// The typed event of a payload in the current shape whose personal fields are in the clear
    /// or redacted (then `None`: see the event types).
    pub fn from_payload(
        aggregate_type: AggregateType,
        payload: &Payload,
    ) -> Result<Self, EventDecodeError> {
        Self::from_owned_payload(aggregate_type, payload.clone())
    }

    /// [`DomainEvent::from_payload`], taking the payload apart instead of copying it.
    pub fn from_owned_payload(
        aggregate_type: AggregateType,
        payload: Payload,
    ) -> Result<Self, EventDecodeError> {
        let (event_type, joined) = payload.into_joined();
        let event_type = event_type.as_str();
        let Some(data) = joined else {
            return Err(EventDecodeError::Sealed {
                event_type: event_type.to_owned(),
            });
        };
        match aggregate_type {
            AggregateType::Contact if event_type.starts_with("contact.") => {
                join_data(event_type, data).map(Self::Contact)
            }
            AggregateType::Session if event_type.starts_with("session.") => {
                join_data(event_type, data).map(Self::Session)
            }
            AggregateType::Project if event_type.starts_with("project.") => {
                join_data(event_type, data).map(Self::Project)
            }
            _ => Err(EventDecodeError::Unknown {
                aggregate_type,
                event_type: event_type.to_owned(),
                event_version: CURRENT_EVENT_VERSION.to_owned(),
            }),
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
    // The tag first: serde then reads the data straight into its variant. (A JSON object would
    // sort "data" before "type", and serde would buffer the whole payload to find the tag.)
    let tagged = [
        ("type", Value::String(event_type.to_owned())),
        ("data", data),
    ];
    E::deserialize(MapDeserializer::<_, serde_json::Error>::new(
        tagged.into_iter(),
    ))
    .map_err(|source| EventDecodeError::Payload {
        event_type: event_type.to_owned(),
        reason: value_free(&source.to_string()),
    })
}
