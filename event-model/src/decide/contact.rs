//! The contact's commands and what they decide: the profile and tags, erasure, and the sessions
//! that start and end through the contact's stream (at most one active per channel type).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::profile::{create, profile_picture_url, update_profile};
use super::session::room_for_agent;
use crate::contact::{Contact, ContactEvent, NewContact, ProfilePatch};
use crate::context::Context;
use crate::error::DomainError;
use crate::event::{DomainEvent, PendingEvent};
use crate::session::{EndReason, NewMessage, Session, SessionEvent};
use crate::values::{self, MAX_TAGS, MAX_TEXT_LEN};

/// A command addressed to one contact's stream, its values not yet checked: [`decide_contact`]
/// validates and normalises them.
#[derive(Debug, Clone, PartialEq)]
pub enum ContactCommand {
    /// Create the contact; refused if its stream has any event already.
    Create(NewContact),
    /// Change profile fields: one event per field that really changes, none for a field given its
    /// current value.
    UpdateProfile(ProfilePatch),
    /// Add a tag; a tag already there decides nothing.
    AddTag {
        /// The tag as sent; trimmed, it must be 1 to 64 characters, and the contact may hold at
        /// most 200.
        tag: String,
    },
    /// Remove a tag; a tag not there decides nothing.
    RemoveTag {
        /// The tag as sent; trimmed and checked like a new tag before it is looked up.
        tag: String,
    },
    /// Set the profile picture's URL; the URL already set decides nothing.
    SetProfilePicture {
        /// An http(s) URL; trimmed, at most 2,048 characters, no whitespace or control characters.
        url: String,
        /// When the picture was fetched; kept to the microsecond.
        fetched_at: DateTime<Utc>,
    },
    /// Soft-delete the contact: its active sessions end (`system_close`), and later commands on it
    /// or its sessions are refused, except forgetting it.
    Delete {
        /// Why, free text of at most 1,000 characters; personal. `None`: not given.
        reason: Option<String>,
    },
    /// Erasure: end the active sessions, delete the contact if it is not yet, and record
    /// `contact.forgotten` (the store destroys the contact's data key with it). Forgetting a
    /// forgotten contact decides nothing.
    Forget {
        /// Why the contact is forgotten, at most 1,000 characters. It stays readable after the
        /// erasure, so it must say why (a ticket, a legal basis), never who. `None`: not given.
        reason: Option<String>,
    },
    /// Start a session on a channel type; refused while the contact has one active there.
    StartSession {
        /// The id of the new session; the caller makes it, as the decider has no source of ids.
        session_id: Uuid,
        /// The channel type to start it on: a positive `channel_types` id.
        channel_type_id: i64,
        /// The pipeline to put the session in; `None`: none.
        pipeline_id: Option<Uuid>,
    },
    /// Inbound traffic: a message for this contact on a channel. Goes to the active session on
    /// that channel; one is started (with `new_session_id`) when there is none, or when the
    /// active one has been idle for longer than its timeout.
    RecordMessage {
        /// The channel type the message came on: a positive `channel_types` id.
        channel_type_id: i64,
        /// The pipeline for a session this message starts; unused when the message goes to an
        /// active one.
        pipeline_id: Option<Uuid>,
        /// Who sent the message, and when.
        message: NewMessage,
        /// The id a session started by this message gets; unused when the message goes to an active
        /// one.
        new_session_id: Uuid,
    },
}

/// What a contact command may read: the contact and its active sessions.
#[derive(Debug, Clone, Copy)]
pub struct ContactScope<'a> {
    /// The contact's id: the stream every contact event decided goes to.
    pub contact_id: Uuid,
    /// The contact's state, folded up to its latest event.
    pub contact: &'a Contact,
    /// Its active sessions' states by id; every session of `contact.active_sessions` is expected
    /// here. An inbound message takes one missing for gone and starts a new session on that channel
    /// type.
    pub sessions: &'a BTreeMap<Uuid, Session>,
}

/// Decides a contact command against the contact's current state: the events it causes, in the
/// order they are to be appended (on the contact's stream and on its sessions'), or the rule it
/// breaks. An empty list means the command changes nothing. Pure: the time and the session timeout
/// come from `ctx`.
pub fn decide_contact(
    scope: ContactScope<'_>,
    command: ContactCommand,
    ctx: &Context,
) -> Result<Vec<PendingEvent>, DomainError> {
    let contact = scope.contact;
    if let ContactCommand::Create(new) = command {
        if contact.exists() {
            return Err(DomainError::ContactAlreadyExists);
        }
        return create(new).map(|e| vec![on_contact(scope, e)]);
    }
    if !contact.exists() {
        return Err(DomainError::ContactNotFound);
    }
    if let ContactCommand::Forget { reason } = command {
        return forget(scope, reason, ctx);
    }
    if contact.is_deleted() {
        return Err(DomainError::ContactDeleted);
    }
    match command {
        ContactCommand::Create(_) | ContactCommand::Forget { .. } => {
            unreachable!("handled above")
        }
        ContactCommand::UpdateProfile(patch) => update_profile(&contact.view, patch)
            .map(|events| events.into_iter().map(|e| on_contact(scope, e)).collect()),
        ContactCommand::AddTag { tag } => add_tag(scope, &tag),
        ContactCommand::RemoveTag { tag } => remove_tag(scope, &tag),
        ContactCommand::SetProfilePicture { url, fetched_at } => {
            set_profile_picture(scope, &url, fetched_at)
        }
        ContactCommand::Delete { reason } => {
            let reason = optional_reason(reason)?;
            let mut events = end_active_sessions(scope, ctx);
            events.push(on_contact(scope, ContactEvent::Deleted { reason }));
            Ok(events)
        }
        ContactCommand::StartSession {
            session_id,
            channel_type_id,
            pipeline_id,
        } => start_session(scope, session_id, channel_type_id, pipeline_id, ctx),
        ContactCommand::RecordMessage {
            channel_type_id,
            pipeline_id,
            message,
            new_session_id,
        } => record_message(
            scope,
            Inbound {
                channel_type_id,
                pipeline_id,
                new_session_id,
            },
            message,
            ctx,
        ),
    }
}

fn on_contact(scope: ContactScope<'_>, event: ContactEvent) -> PendingEvent {
    PendingEvent {
        aggregate_id: scope.contact_id,
        event: DomainEvent::Contact(event),
    }
}

/// A tag already there decides nothing.
fn add_tag(scope: ContactScope<'_>, tag: &str) -> Result<Vec<PendingEvent>, DomainError> {
    let tag = values::tag("tag", tag).map_err(|e| DomainError::Invalid(vec![e]))?;
    let tags = &scope.contact.view.tags;
    if tags.contains(&tag) {
        return Ok(vec![]);
    }
    if tags.len() >= MAX_TAGS {
        return Err(DomainError::invalid(
            "tag",
            format!("a contact has at most {MAX_TAGS} tags"),
        ));
    }
    Ok(vec![on_contact(scope, ContactEvent::TagAdded { tag })])
}

/// A tag not there decides nothing.
fn remove_tag(scope: ContactScope<'_>, tag: &str) -> Result<Vec<PendingEvent>, DomainError> {
    let tag = values::tag("tag", tag).map_err(|e| DomainError::Invalid(vec![e]))?;
    Ok(if scope.contact.view.tags.contains(&tag) {
        vec![on_contact(scope, ContactEvent::TagRemoved { tag })]
    } else {
        vec![]
    })
}

/// The picture already set decides nothing.
fn set_profile_picture(
    scope: ContactScope<'_>,
    url: &str,
    fetched_at: DateTime<Utc>,
) -> Result<Vec<PendingEvent>, DomainError> {
    let url = profile_picture_url(url)?;
    if scope.contact.view.profile_picture_url.as_deref() == Some(url.as_str()) {
        return Ok(vec![]);
    }
    Ok(vec![on_contact(
        scope,
        ContactEvent::ProfilePictureUpdated {
            url: Some(url),
            fetched_at: values::instant(fetched_at),
        },
    )])
}

/// At most one active session per channel type.
fn start_session(
    scope: ContactScope<'_>,
    session_id: Uuid,
    channel_type_id: i64,
    pipeline_id: Option<Uuid>,
    ctx: &Context,
) -> Result<Vec<PendingEvent>, DomainError> {
    check_channel(channel_type_id)?;
    if let Some(&active) = scope.contact.active_sessions.get(&channel_type_id) {
        return Err(DomainError::SessionAlreadyActive {
            session_id: active,
            channel_type_id,
        });
    }
    let started_at = values::instant(ctx.now);
    Ok(open_session(
        scope.contact_id,
        session_id,
        channel_type_id,
        pipeline_id,
        started_at,
        ctx,
    ))
}

/// Where an inbound message arrives, and the id of the session it opens if it needs one.
struct Inbound {
    channel_type_id: i64,
    pipeline_id: Option<Uuid>,
    new_session_id: Uuid,
}

/// The message goes to the channel's active session; one is started when there is none, or
/// when the active one has been idle for longer than its timeout (then it is ended first, the
/// way the sweeper would have).
fn record_message(
    scope: ContactScope<'_>,
    inbound: Inbound,
    message: NewMessage,
    ctx: &Context,
) -> Result<Vec<PendingEvent>, DomainError> {
    let Inbound {
        channel_type_id,
        pipeline_id,
        new_session_id,
    } = inbound;
    check_channel(channel_type_id)?;
    let message = message.validated()?;
    let mut events = Vec::new();
    let active = scope.contact.active_sessions.get(&channel_type_id).copied();
    let target = match active.and_then(|sid| scope.sessions.get(&sid).map(|s| (sid, s))) {
        Some((sid, session)) if !session.view.idle_too_long_at(message.sent_at) => {
            if let Some(agent) = message.agent_id {
                room_for_agent(&session.view, agent, "agent_id")?;
            }
            sid
        }
        stale => {
            if let Some((sid, session)) = stale {
                events.push(PendingEvent {
                    aggregate_id: sid,
                    event: DomainEvent::Session(SessionEvent::Ended {
                        reason: EndReason::InactivityTimeout,
                        ended_at: session.view.times_out_at(),
                    }),
                });
                events.push(on_contact(
                    scope,
                    ContactEvent::SessionClosed {
                        session_id: sid,
                        channel_type_id,
                    },
                ));
            }
            events.extend(open_session(
                scope.contact_id,
                new_session_id,
                channel_type_id,
                pipeline_id,
                message.sent_at,
                ctx,
            ));
            new_session_id
        }
    };
    events.push(PendingEvent {
        aggregate_id: target,
        event: DomainEvent::Session(message.into_event(channel_type_id)),
    });
    Ok(events)
}

fn optional_reason(reason: Option<String>) -> Result<Option<String>, DomainError> {
    reason
        .map(|r| values::optional_text("reason", &r, MAX_TEXT_LEN))
        .transpose()
        .map_err(|e| DomainError::Invalid(vec![e]))
}

/// `session.ended` (system close) and `contact.session_closed` for every active session.
fn end_active_sessions(scope: ContactScope<'_>, ctx: &Context) -> Vec<PendingEvent> {
    let mut events = Vec::new();
    for (&channel_type_id, &session_id) in &scope.contact.active_sessions {
        events.push(PendingEvent {
            aggregate_id: session_id,
            event: DomainEvent::Session(SessionEvent::Ended {
                reason: EndReason::SystemClose,
                ended_at: values::instant(ctx.now),
            }),
        });
        events.push(on_contact(
            scope,
            ContactEvent::SessionClosed {
                session_id,
                channel_type_id,
            },
        ));
    }
    events
}

fn forget(
    scope: ContactScope<'_>,
    reason: Option<String>,
    ctx: &Context,
) -> Result<Vec<PendingEvent>, DomainError> {
    let reason = optional_reason(reason)?;
    if scope.contact.is_forgotten() {
        return Ok(vec![]);
    }
    let mut events = Vec::new();
    if !scope.contact.is_deleted() {
        events = end_active_sessions(scope, ctx);
        events.push(on_contact(scope, ContactEvent::Deleted { reason: None }));
    }
    events.push(on_contact(scope, ContactEvent::Forgotten { reason }));
    Ok(events)
}

fn open_session(
    contact_id: Uuid,
    session_id: Uuid,
    channel_type_id: i64,
    pipeline_id: Option<Uuid>,
    started_at: DateTime<Utc>,
    ctx: &Context,
) -> Vec<PendingEvent> {
    vec![
        PendingEvent {
            aggregate_id: session_id,
            event: DomainEvent::Session(SessionEvent::Started {
                contact_id,
                channel_type_id,
                pipeline_id,
                timeout_seconds: ctx.session_timeout.seconds(),
                started_at,
            }),
        },
        PendingEvent {
            aggregate_id: contact_id,
            event: DomainEvent::Contact(ContactEvent::SessionOpened {
                session_id,
                channel_type_id,
            }),
        },
    ]
}

fn check_channel(channel_type_id: i64) -> Result<(), DomainError> {
    if channel_type_id <= 0 {
        return Err(DomainError::invalid(
            "channel_type_id",
            "must be a positive channel type id",
        ));
    }
    Ok(())
}
