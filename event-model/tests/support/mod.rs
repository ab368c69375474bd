//! A small given/when/then harness over the pure domain: events already in the streams, a
//! command, and the events (or the refusal) it must produce.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use event_model::{
    decide_contact, decide_session, Contact, ContactCommand, ContactScope, Context, DomainError,
    DomainEvent, EventEnvelope, PendingEvent, Session, SessionCommand,
};
use uuid::Uuid;

pub fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_225_600 + secs, 0).unwrap()
}

pub fn ctx_at(secs: i64) -> Context {
    Context {
        now: t(secs),
        session_timeout: event_model::values::SessionTimeout::from_minutes(30),
    }
}

/// The streams of one contact: the contact's and its sessions'.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub contact_id: Uuid,
    pub contact: Contact,
    pub sessions: BTreeMap<Uuid, Session>,
    pub history: Vec<PendingEvent>,
    /// The history as the store would give it back: each event's data through JSON, with its
    /// stream position and time.
    pub stored: Vec<EventEnvelope>,
}

impl World {
    pub fn new() -> Self {
        Self {
            contact_id: Uuid::now_v7(),
            ..Self::default()
        }
    }

    pub fn apply(&mut self, pending: &PendingEvent, at: DateTime<Utc>) {
        let sequence_number = match &pending.event {
            DomainEvent::Contact(e) => {
                assert_eq!(
                    pending.aggregate_id, self.contact_id,
                    "contact event on a foreign stream"
                );
                let next = self.contact.version + 1;
                self.contact.apply(next, e, at);
                next
            }
            DomainEvent::Session(e) => {
                let session = self.sessions.entry(pending.aggregate_id).or_default();
                let next = session.version + 1;
                session.apply(next, e);
                next
            }
            DomainEvent::Project(_) => panic!("no decision yields a project's event"),
        };
        let data = serde_json::to_vec(&pending.event.data()).expect("event data serialises");
        self.stored.push(EventEnvelope {
            event_id: Uuid::now_v7(),
            aggregate_id: pending.aggregate_id,
            aggregate_type: pending.event.aggregate_type(),
            event_type: pending.event.event_type().to_owned(),
            // The plain form (every field in the clear): these tests hold no data keys.
            event_version: event_model::event::PLAIN_EVENT_VERSION.to_owned(),
            sequence_number,
            position: self.stored.len() as i64 + 1,
            tenant_id: "t".into(),
            project_id: Uuid::nil(),
            contact_id: self.contact_id,
            user_id: None,
            occurred_at: at,
            recorded_at: at,
            causation_id: None,
            correlation_id: None,
            data: serde_json::from_slice(&data).expect("event data parses"),
        });
        self.history.push(pending.clone());
    }

    pub fn active_sessions(&self) -> BTreeMap<Uuid, Session> {
        self.contact
            .active_sessions
            .values()
            .filter_map(|id| self.sessions.get(id).map(|s| (*id, s.clone())))
            .collect()
    }

    pub fn when_contact(
        &self,
        command: ContactCommand,
        ctx: &Context,
    ) -> Result<Vec<PendingEvent>, DomainError> {
        let sessions = self.active_sessions();
        decide_contact(
            ContactScope {
                contact_id: self.contact_id,
                contact: &self.contact,
                sessions: &sessions,
            },
            command,
            ctx,
        )
    }

    pub fn when_session(
        &self,
        session_id: Uuid,
        command: SessionCommand,
        ctx: &Context,
    ) -> Result<Vec<PendingEvent>, DomainError> {
        let session = self.sessions.get(&session_id).cloned().unwrap_or_default();
        decide_session(session_id, &session, &self.contact, command, ctx)
    }

    /// Decides and, on success, applies: the world after the command.
    pub fn run_contact(
        &mut self,
        command: ContactCommand,
        ctx: &Context,
    ) -> Result<Vec<PendingEvent>, DomainError> {
        let events = self.when_contact(command, ctx)?;
        for e in &events {
            self.apply(e, ctx.now);
        }
        Ok(events)
    }

    pub fn run_session(
        &mut self,
        session_id: Uuid,
        command: SessionCommand,
        ctx: &Context,
    ) -> Result<Vec<PendingEvent>, DomainError> {
        let events = self.when_session(session_id, command, ctx)?;
        for e in &events {
            self.apply(e, ctx.now);
        }
        Ok(events)
    }
}

#[allow(dead_code)] // used by domain.rs, not by invariants.rs
pub fn types(events: &[PendingEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.event.event_type()).collect()
}
