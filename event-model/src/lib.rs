//! The Ventros contact & session domain: events, commands, aggregates and their pure decision and
//! fold logic.
//!
//! Everything here is synchronous and free of I/O: the command service loads state, calls
//! [`decide_contact`] or [`decide_session`], and appends what comes back; the projections and the
//! aggregates fold the same events with the same `apply` code ([`ContactView::apply`],
//! [`SessionView::apply`]), so a rule lives in exactly one place and a replay gives the numbers the
//! live path gave.
//!
//! Whatever a decision needs from outside (the current time, the project's session timeout, ids for
//! things it may create) arrives in the command or in [`Context`].

#![warn(missing_docs)]

pub mod aggregate;
pub mod contact;
pub mod context;
pub mod decide;
pub mod envelope;
pub mod error;
pub mod event;
pub mod personal;
pub mod project;
pub mod session;
pub mod snapshot;
pub mod values;

pub use aggregate::AggregateType;
pub use contact::{Contact, ContactEvent, ContactView, NewContact, ProfilePatch};
pub use context::Context;
pub use decide::{decide_contact, decide_session, ContactCommand, ContactScope, SessionCommand};
pub use envelope::EventEnvelope;
pub use error::{DomainError, EventDecodeError, FieldError};
pub use event::{DomainEvent, PendingEvent, EVENT_TYPES};
pub use personal::{Payload, Personal};
pub use project::ProjectEvent;
pub use session::{
    EndReason, NewMessage, NewSummary, Outcome, Sentiment, Session, SessionEvent, SessionStatus,
    SessionView,
};
pub use snapshot::{Snapshot, SnapshotError};

/// An event-sourced aggregate: a default (empty) state, folded one stored event at a time.
pub trait Aggregate: Default + Snapshot {
    /// Folds a stored event, already decoded (its personal fields opened or redacted). An event
    /// of another aggregate type is a decode error.
    fn apply_event(
        &mut self,
        envelope: &EventEnvelope,
        event: &DomainEvent,
    ) -> Result<(), EventDecodeError>;

    /// Folds a stored event that has no sealed personal fields (see [`EventEnvelope::decode`]).
    fn apply_envelope(&mut self, envelope: &EventEnvelope) -> Result<(), EventDecodeError> {
        self.apply_event(envelope, &envelope.decode()?)
    }
}

fn wrong_aggregate(aggregate_type: AggregateType, envelope: &EventEnvelope) -> EventDecodeError {
    EventDecodeError::Unknown {
        aggregate_type,
        event_type: envelope.event_type.clone(),
        event_version: envelope.event_version.clone(),
    }
}

impl Aggregate for Contact {
    fn apply_event(
        &mut self,
        envelope: &EventEnvelope,
        event: &DomainEvent,
    ) -> Result<(), EventDecodeError> {
        match event {
            DomainEvent::Contact(event) => {
                self.apply(envelope.sequence_number, event, envelope.occurred_at);
                Ok(())
            }
            DomainEvent::Session(_) | DomainEvent::Project(_) => {
                Err(wrong_aggregate(AggregateType::Contact, envelope))
            }
        }
    }
}

impl Aggregate for Session {
    fn apply_event(
        &mut self,
        envelope: &EventEnvelope,
        event: &DomainEvent,
    ) -> Result<(), EventDecodeError> {
        match event {
            DomainEvent::Session(event) => {
                self.apply(envelope.sequence_number, event);
                Ok(())
            }
            DomainEvent::Contact(_) | DomainEvent::Project(_) => {
                Err(wrong_aggregate(AggregateType::Session, envelope))
            }
        }
    }
}
