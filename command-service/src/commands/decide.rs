//! A command decided: the pure domain's events given their places in their streams, sealed with
//! the contact's key, with the snapshots that fall due and the streams to check, as one
//! [`Write`] for the group writer and the answer it gives once stored.

use std::collections::BTreeMap;

use event_model::{
    decide_contact, decide_session, AggregateType, ContactScope, Context, DomainError, DomainEvent,
    PendingEvent, SessionEvent, Snapshot,
};
use platform::crypto::DataKey;
use platform::event_store::{NewEvent, StoreError};
use platform::personal::{self, KeyState, NewKey};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    Actor, Command, CommandError, CommandHandler, CommandMeta, Loaded, Outcome, Replayable,
};
use crate::writer::Write;

/// A command decided: what it writes, the states it leaves once written, and its answer.
pub(super) struct Decided {
    /// The loaded streams with the new events folded in.
    pub(super) loaded: Loaded,
    pub(super) write: Write,
    pub(super) outcome: Outcome,
    /// A key made for this command: cached once its write has committed.
    pub(super) new_key: Option<DataKey>,
}

/// Where a decision finds its contact's data key.
pub(super) enum KeySource<'c> {
    /// The keys this instance saw committed; nothing else.
    Cache,
    /// The cache, else `contact_data_keys` in the command's transaction.
    Store(&'c mut PgConnection),
}

impl CommandHandler {
    /// Decides `command` on `loaded`: the write it makes, and the answer once that is stored.
    /// `None` when the contact's key is needed and `keys` cannot give it (only the cache can
    /// fail to).
    pub(super) async fn decide(
        &self,
        keys: &mut KeySource<'_>,
        mut loaded: Loaded,
        actor: &Actor,
        meta: CommandMeta,
        command: Command,
        replayable: Option<Replayable<'_>>,
    ) -> Result<Option<Decided>, CommandError> {
        let target = command.target();
        let current = precondition(&loaded, &command, meta.if_match)?;
        may_end(&loaded, &command, actor)?;
        let ctx = Context {
            now: event_model::values::instant((self.clock)()),
            session_timeout: actor.session_timeout,
        };
        let pending = decide_on(&loaded, command, &ctx)?;
        let before = loaded.versions();
        // The contact's data key, when something is to be sealed with it (it is made with the
        // contact, or on first need for a contact of the previous release).
        let mut sealing = None;
        if pending.iter().any(|p| seals(&p.event)) {
            let Some(key) = self.sealing_key(keys, loaded.contact_id).await? else {
                return Ok(None);
            };
            sealing = Some(key);
        }
        let sealed_with = sealing.as_ref().map(|(key, _)| key);
        let events = self.sequence(actor, meta, &ctx, &mut loaded, &pending, sealed_with)?;
        let snapshots_due = self.due_snapshots(&loaded, &before);
        if !snapshots_due.is_empty() && !events.is_empty() && sealing.is_none() {
            let Some(key) = self.sealing_key(keys, loaded.contact_id).await? else {
                return Ok(None);
            };
            sealing = Some(key);
        }
        let outcome = outcome_of(target, &loaded, &events, current);
        let snapshots = match (&sealing, events.is_empty()) {
            (Some((key, _)), false) => seal_snapshots(key, loaded.contact_id, snapshots_due),
            _ => Vec::new(),
        };
        let (new_key, stored_key) = made(sealing);
        let write = Write {
            tenant_id: actor.tenant_id.clone(),
            contact_id: loaded.contact_id,
            new_key: stored_key,
            read_only: read_only(before, &events),
            forget: pending.iter().any(|p| forgets(&p.event)),
            events,
            snapshots,
            idempotency: replayable
                .map(|r| (actor.project_id, r.slot.clone(), (r.render)(&outcome))),
        };
        Ok(Some(Decided {
            loaded,
            write,
            outcome,
            new_key,
        }))
    }

    /// Gives each decided event its place in its stream, folding it into the loaded state so that
    /// snapshots and the answer see the new versions.
    fn sequence(
        &self,
        actor: &Actor,
        meta: CommandMeta,
        ctx: &Context,
        loaded: &mut Loaded,
        pending: &[PendingEvent],
        sealing: Option<&DataKey>,
    ) -> Result<Vec<NewEvent>, CommandError> {
        let traceparent = platform::telemetry::traceparent(&tracing::Span::current());
        pending
            .iter()
            .map(|p| {
                let sequence_number = match &p.event {
                    DomainEvent::Contact(e) => {
                        let next = loaded.contact.version + 1;
                        loaded.contact.apply(next, e, ctx.now);
                        next
                    }
                    DomainEvent::Session(e) => {
                        let session = loaded.sessions.entry(p.aggregate_id).or_default();
                        let next = session.version + 1;
                        session.apply(next, e);
                        next
                    }
                    // The deciders yield contact and session events only; a project's events
                    // are recorded by the access routes.
                    DomainEvent::Project(_) => unreachable!("a decision yielded a project's event"),
                };
                let event_id = event_id_of(actor, &p.event);
                let data = match sealing {
                    Some(key) => personal::seal_event(key, loaded.contact_id, event_id, &p.event)?,
                    // Nothing personal in these events (see `needs_key` in `decide`).
                    None => p
                        .event
                        .payload()
                        .into_stored()
                        .map_err(personal::PersonalError::from)?,
                };
                Ok(NewEvent {
                    event_id,
                    aggregate_id: p.aggregate_id,
                    aggregate_type: p.event.aggregate_type(),
                    event_type: p.event.event_type(),
                    event_version: p.event.event_version(),
                    sequence_number,
                    data,
                    contact_id: loaded.contact_id,
                    user_id: actor.user_id,
                    occurred_at: ctx.now,
                    tenant_id: actor.tenant_id.clone(),
                    project_id: actor.project_id,
                    causation_id: Some(meta.causation_id),
                    correlation_id: Some(meta.correlation_id),
                    traceparent: traceparent.clone(),
                })
            })
            .collect()
    }

    /// The key to seal a contact's new events and snapshots with: its stored key, or a new one
    /// that the write stores (a new contact, or one of the previous release). `None` when
    /// `keys` is the cache and does not hold it.
    async fn sealing_key(
        &self,
        keys: &mut KeySource<'_>,
        contact_id: Uuid,
    ) -> Result<Option<(DataKey, Option<NewKey>)>, CommandError> {
        let state = match keys {
            KeySource::Cache => return Ok(self.keys.cached(contact_id).map(|key| (key, None))),
            KeySource::Store(conn) => self.keys.current(conn, contact_id).await?,
        };
        match state {
            Some(KeyState::Active(key)) => Ok(Some((key, None))),
            None => {
                let (key, new) = self.keys.make(contact_id);
                Ok(Some((key, Some(new))))
            }
            Some(KeyState::Destroyed) => Err(CommandError::Store(StoreError::Corrupt {
                event_id: Uuid::nil(),
                reason: format!(
                    "contact {contact_id} was forgotten, yet a command decided personal data for it"
                ),
            })),
        }
    }

    /// A snapshot (unsealed state) for every stream that crossed a multiple of `snapshot_every`.
    fn due_snapshots(
        &self,
        loaded: &Loaded,
        before: &BTreeMap<Uuid, i64>,
    ) -> Vec<(Uuid, Value, i64)> {
        let due = |id: &Uuid, version: i64| {
            let old = before.get(id).copied().unwrap_or(0);
            version > old && version / self.snapshot_every > old / self.snapshot_every
        };
        let mut snapshots = Vec::new();
        if due(&loaded.contact_id, loaded.contact.version) {
            snapshots.push((
                loaded.contact_id,
                loaded.contact.encode(),
                loaded.contact.version,
            ));
        }
        for (id, session) in &loaded.sessions {
            if due(id, session.version) {
                snapshots.push((*id, session.encode(), session.version));
            }
        }
        snapshots
    }
}

fn outcome_of(target: Uuid, loaded: &Loaded, events: &[NewEvent], unchanged: i64) -> Outcome {
    let version_of = |id: Uuid| {
        if id == loaded.contact_id {
            Some(loaded.contact.version)
        } else {
            loaded.sessions.get(&id).map(|s| s.version)
        }
    };
    // The session a contact-route message went to (or opened) is the last session event's.
    let session = events
        .iter()
        .rev()
        .find(|e| e.aggregate_type == AggregateType::Session)
        .map(|e| e.aggregate_id)
        .or_else(|| loaded.sessions.contains_key(&target).then_some(target))
        .and_then(|id| version_of(id).map(|v| (id, v)));
    Outcome {
        aggregate_id: target,
        version: version_of(target).unwrap_or(unchanged),
        event_ids: events.iter().map(|e| e.event_id).collect(),
        session,
    }
}

/// The addressed stream's version, refused when it is not the `If-Match` the caller sent.
fn precondition(
    loaded: &Loaded,
    command: &Command,
    if_match: Option<i64>,
) -> Result<i64, CommandError> {
    let current = match command {
        Command::Contact { .. } => loaded.contact.version,
        Command::Session { session_id, .. } => loaded.sessions[session_id].version,
    };
    match if_match {
        Some(expected) if expected != current => Err(CommandError::PreconditionFailed { current }),
        _ => Ok(current),
    }
}

/// The pure domain's decision on the loaded streams.
/// An agent ends only a session assigned to it or to no one.
fn may_end(loaded: &Loaded, command: &Command, actor: &Actor) -> Result<(), CommandError> {
    if let Command::Session {
        session_id,
        command: event_model::SessionCommand::End { .. },
    } = command
    {
        let assigned = loaded.sessions[session_id].current_agent;
        if !actor.ends_any_session && assigned.is_some() && assigned != actor.user_id {
            return Err(CommandError::Forbidden(
                "the session is assigned to another agent: ending it takes the permission end_any_session",
            ));
        }
    }
    Ok(())
}

fn decide_on(
    loaded: &Loaded,
    command: Command,
    ctx: &Context,
) -> Result<Vec<PendingEvent>, DomainError> {
    match command {
        Command::Contact {
            contact_id,
            command,
        } => decide_contact(
            ContactScope {
                contact_id,
                contact: &loaded.contact,
                sessions: &loaded.sessions,
            },
            command,
            ctx,
        ),
        Command::Session {
            session_id,
            command,
        } => decide_session(
            session_id,
            &loaded.sessions[&session_id],
            &loaded.contact,
            command,
            ctx,
        ),
    }
}

/// A key made for this command, as the handler caches it and as the write stores it.
fn made(sealing: Option<(DataKey, Option<NewKey>)>) -> (Option<DataKey>, Option<NewKey>) {
    match sealing {
        Some((key, Some(new))) => (Some(key), Some(new)),
        _ => (None, None),
    }
}

/// Whether an event has personal fields to seal with its contact's key.
/// Whether the event holds a personal value to seal (a message recorded for its metrics alone
/// does not).
fn seals(event: &DomainEvent) -> bool {
    matches!(event.payload().personal, event_model::Personal::Plain(_))
}

/// A new event's id: derived from the message's id on its channel for a message that has one,
/// so that the store's key holds a repeat of it once; otherwise new.
fn event_id_of(actor: &Actor, event: &DomainEvent) -> Uuid {
    match event {
        DomainEvent::Session(SessionEvent::MessageRecorded {
            channel_type_id: Some(channel),
            channel_message_id: Some(channel_message_id),
            ..
        }) => event_model::session::channel_message_event_id(
            actor.project_id,
            *channel,
            channel_message_id,
        ),
        _ => Uuid::now_v7(),
    }
}

fn forgets(event: &DomainEvent) -> bool {
    matches!(
        event,
        DomainEvent::Contact(event_model::ContactEvent::Forgotten { .. })
    )
}

/// The due snapshots, sealed: `(aggregate id, version, sealed state)`.
fn seal_snapshots(
    key: &DataKey,
    contact_id: Uuid,
    due: Vec<(Uuid, Value, i64)>,
) -> Vec<(Uuid, i64, Value)> {
    due.into_iter()
        .map(|(id, state, version)| {
            let sealed = personal::seal_snapshot(key, contact_id, id, version, &state);
            (id, version, sealed)
        })
        .collect()
}

/// The streams the decision read and writes nothing to, at the versions it read: the write
/// checks that they are still there.
fn read_only(before: BTreeMap<Uuid, i64>, events: &[NewEvent]) -> Vec<(Uuid, i64)> {
    before
        .into_iter()
        .filter(|(id, version)| *version > 0 && !events.iter().any(|e| e.aggregate_id == *id))
        .collect()
}
