//! The contact's commands and what they decide: the profile and tags, erasure, and the sessions
//! that start and end through the contact's stream (at most one active per channel type).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::contact::{
    Contact, ContactEvent, ContactView, NewContact, ProfilePatch, DEFAULT_LANGUAGE,
};
use crate::context::Context;
use crate::error::DomainError;
use crate::event::{DomainEvent, PendingEvent};
use crate::session::{EndReason, NewMessage, Session, SessionEvent};
use crate::values::{self, Checks, MAX_TAGS, MAX_TEXT_LEN};

#[derive(Debug, Clone, PartialEq)]
pub enum ContactCommand {
    Create(NewContact),
    UpdateProfile(ProfilePatch),
    AddTag {
        tag: String,
    },
    RemoveTag {
        tag: String,
    },
    SetProfilePicture {
        url: String,
        fetched_at: DateTime<Utc>,
    },
    Delete {
        reason: Option<String>,
    },
    /// Erasure: end the active sessions, delete the contact if it is not yet, and record
    /// `contact.forgotten` (the store destroys the contact's data key with it). Forgetting a
    /// forgotten contact decides nothing.
    Forget {
        reason: Option<String>,
    },
    StartSession {
        session_id: Uuid,
        channel_type_id: i64,
        pipeline_id: Option<Uuid>,
    },
    /// Inbound traffic: a message for this contact on a channel. Goes to the active session on
    /// that channel; one is started (with `new_session_id`) when there is none, or when the
    /// active one has been idle for longer than its timeout.
    RecordMessage {
        channel_type_id: i64,
        pipeline_id: Option<Uuid>,
        message: NewMessage,
        new_session_id: Uuid,
    },
}

/// What a contact command may read: the contact and its active sessions.
#[derive(Debug, Clone, Copy)]
pub struct ContactScope<'a> {
    pub contact_id: Uuid,
    pub contact: &'a Contact,
    pub sessions: &'a BTreeMap<Uuid, Session>,
}

pub fn decide_contact(
    scope: ContactScope<'_>,
    command: ContactCommand,
    ctx: &Context,
) -> Result<Vec<PendingEvent>, DomainError> {
    let contact = scope.contact;
    let id = scope.contact_id;
    let on_contact = |e: ContactEvent| PendingEvent {
        aggregate_id: id,
        event: DomainEvent::Contact(e),
    };
    if let ContactCommand::Create(new) = command {
        if contact.exists() {
            return Err(DomainError::ContactAlreadyExists);
        }
        return create(new).map(|e| vec![on_contact(e)]);
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
            .map(|events| events.into_iter().map(on_contact).collect()),
        ContactCommand::AddTag { tag } => {
            let tag = values::tag("tag", &tag).map_err(|e| DomainError::Invalid(vec![e]))?;
            if contact.view.tags.contains(&tag) {
                return Ok(vec![]);
            }
            if contact.view.tags.len() >= MAX_TAGS {
                return Err(DomainError::invalid(
                    "tag",
                    format!("a contact has at most {MAX_TAGS} tags"),
                ));
            }
            Ok(vec![on_contact(ContactEvent::TagAdded { tag })])
        }
        ContactCommand::RemoveTag { tag } => {
            let tag = values::tag("tag", &tag).map_err(|e| DomainError::Invalid(vec![e]))?;
            Ok(if contact.view.tags.contains(&tag) {
                vec![on_contact(ContactEvent::TagRemoved { tag })]
            } else {
                vec![]
            })
        }
        ContactCommand::SetProfilePicture { url, fetched_at } => {
            let url = profile_picture_url(&url)?;
            if contact.view.profile_picture_url.as_deref() == Some(url.as_str()) {
                return Ok(vec![]);
            }
            Ok(vec![on_contact(ContactEvent::ProfilePictureUpdated {
                url: Some(url),
                fetched_at: values::instant(fetched_at),
            })])
        }
        ContactCommand::Delete { reason } => {
            let reason = optional_reason(reason)?;
            let mut events = end_active_sessions(scope, ctx);
            events.push(on_contact(ContactEvent::Deleted { reason }));
            Ok(events)
        }
        ContactCommand::StartSession {
            session_id,
            channel_type_id,
            pipeline_id,
        } => {
            check_channel(channel_type_id)?;
            if let Some(&active) = contact.active_sessions.get(&channel_type_id) {
                return Err(DomainError::SessionAlreadyActive {
                    session_id: active,
                    channel_type_id,
                });
            }
            let started_at = values::instant(ctx.now);
            Ok(open_session(
                id,
                session_id,
                channel_type_id,
                pipeline_id,
                started_at,
                ctx,
            ))
        }
        ContactCommand::RecordMessage {
            channel_type_id,
            pipeline_id,
            message,
            new_session_id,
        } => {
            check_channel(channel_type_id)?;
            let message = message.validated()?;
            let mut events = Vec::new();
            let active = contact.active_sessions.get(&channel_type_id).copied();
            let target = match active.and_then(|sid| scope.sessions.get(&sid).map(|s| (sid, s))) {
                Some((sid, session)) if !session.view.idle_too_long_at(message.sent_at) => sid,
                stale => {
                    if let Some((sid, session)) = stale {
                        // The active session timed out before this message: close it the way the
                        // sweeper would have, then start a fresh one.
                        events.push(PendingEvent {
                            aggregate_id: sid,
                            event: DomainEvent::Session(SessionEvent::Ended {
                                reason: EndReason::InactivityTimeout,
                                ended_at: session.view.times_out_at(),
                            }),
                        });
                        events.push(on_contact(ContactEvent::SessionClosed {
                            session_id: sid,
                            channel_type_id,
                        }));
                    }
                    events.extend(open_session(
                        id,
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
                event: DomainEvent::Session(message.into_event()),
            });
            Ok(events)
        }
    }
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
        events.push(PendingEvent {
            aggregate_id: scope.contact_id,
            event: DomainEvent::Contact(ContactEvent::SessionClosed {
                session_id,
                channel_type_id,
            }),
        });
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
    let on_contact = |e: ContactEvent| PendingEvent {
        aggregate_id: scope.contact_id,
        event: DomainEvent::Contact(e),
    };
    let mut events = Vec::new();
    if !scope.contact.is_deleted() {
        events = end_active_sessions(scope, ctx);
        events.push(on_contact(ContactEvent::Deleted { reason: None }));
    }
    events.push(on_contact(ContactEvent::Forgotten { reason }));
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

fn profile_picture_url(raw: &str) -> Result<String, DomainError> {
    let url = raw.trim();
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 2_048
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(url.to_owned())
    } else {
        Err(DomainError::invalid(
            "url",
            "must be an http(s) URL of at most 2048 characters",
        ))
    }
}

fn optional_field(
    checks: &mut Checks,
    field: &str,
    value: Option<String>,
    parse: impl Fn(&str, &str) -> Result<String, crate::FieldError>,
) -> Option<String> {
    value.and_then(|v| checks.check(parse(field, &v)))
}

fn short_text(field: &str, raw: &str) -> Result<String, crate::FieldError> {
    values::required_text(field, raw, 255).map(|v| v.trim().to_owned())
}

fn create(new: NewContact) -> Result<ContactEvent, DomainError> {
    let mut checks = Checks::default();
    let name = checks
        .check(values::required_text("name", &new.name, MAX_TEXT_LEN).map(|n| n.trim().to_owned()));
    let email = optional_field(&mut checks, "email", new.email, values::email);
    let phone = optional_field(&mut checks, "phone", new.phone, values::phone);
    let external_id = optional_field(&mut checks, "external_id", new.external_id, short_text);
    let source_channel = optional_field(
        &mut checks,
        "source_channel",
        new.source_channel,
        short_text,
    );
    let language = optional_field(&mut checks, "language", new.language, language_tag);
    let timezone = optional_field(&mut checks, "timezone", new.timezone, short_text);
    let tags = tag_set(&mut checks, "tags", new.tags).unwrap_or_default();
    checks.finish()?;
    Ok(ContactEvent::Created {
        name: Some(name.unwrap_or_default()),
        email,
        phone,
        external_id,
        source_channel,
        language: language.unwrap_or_else(|| DEFAULT_LANGUAGE.to_owned()),
        timezone,
        tags: tags.into_iter().collect(),
    })
}

fn language_tag(field: &str, raw: &str) -> Result<String, crate::FieldError> {
    let value = raw.trim();
    let ok = (2..=35).contains(&value.len())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(value.to_owned())
    } else {
        Err(crate::FieldError::new(
            field,
            "must be a language tag such as en or pt-BR",
        ))
    }
}

/// Checks every tag of a list (each failing one is reported) and returns the set.
fn tag_set(checks: &mut Checks, field: &str, tags: Vec<String>) -> Option<BTreeSet<String>> {
    if tags.len() > MAX_TAGS {
        checks.push(crate::FieldError::new(
            field,
            format!("at most {MAX_TAGS} tags"),
        ));
        return None;
    }
    let mut set = BTreeSet::new();
    let mut ok = true;
    for (i, t) in tags.iter().enumerate() {
        match checks.check(values::tag(&format!("{field}[{i}]"), t)) {
            Some(tag) => {
                set.insert(tag);
            }
            None => ok = false,
        }
    }
    ok.then_some(set)
}

fn update_profile(
    view: &ContactView,
    patch: ProfilePatch,
) -> Result<Vec<ContactEvent>, DomainError> {
    let mut checks = Checks::default();
    let mut events = Vec::new();
    match patch.name {
        Some(Some(name)) => {
            if let Some(name) = checks.check(values::required_text("name", &name, MAX_TEXT_LEN)) {
                let name = name.trim().to_owned();
                if Some(&name) != view.name.as_ref() {
                    events.push(ContactEvent::NameChanged {
                        name: Some(name),
                        previous: view.name.clone(),
                    });
                }
            }
        }
        Some(None) => checks.push(crate::FieldError::new("name", "cannot be cleared")),
        None => {}
    }
    let mut optional =
        |field: &str,
         value: Option<Option<String>>,
         current: &Option<String>,
         parse: fn(&str, &str) -> Result<String, crate::FieldError>,
         make: fn(Option<String>, Option<String>) -> ContactEvent| {
            let Some(value) = value else { return };
            let new = match value {
                Some(v) => match checks.check(parse(field, &v)) {
                    Some(v) => Some(v),
                    None => return,
                },
                None => None,
            };
            if &new != current {
                events.push(make(new, current.clone()));
            }
        };
    optional(
        "email",
        patch.email,
        &view.email,
        values::email,
        |email, previous| ContactEvent::EmailSet { email, previous },
    );
    optional(
        "phone",
        patch.phone,
        &view.phone,
        values::phone,
        |phone, previous| ContactEvent::PhoneSet { phone, previous },
    );
    optional(
        "external_id",
        patch.external_id,
        &view.external_id,
        short_text,
        |external_id, previous| ContactEvent::ExternalIdSet {
            external_id,
            previous,
        },
    );
    optional(
        "source_channel",
        patch.source_channel,
        &view.source_channel,
        short_text,
        |source_channel, previous| ContactEvent::SourceChannelSet {
            source_channel,
            previous,
        },
    );
    optional(
        "timezone",
        patch.timezone,
        &view.timezone,
        short_text,
        |timezone, previous| ContactEvent::TimezoneSet { timezone, previous },
    );
    match patch.language {
        Some(Some(language)) => {
            if let Some(language) = checks.check(language_tag("language", &language)) {
                if language != view.language {
                    events.push(ContactEvent::LanguageChanged {
                        language,
                        previous: view.language.clone(),
                    });
                }
            }
        }
        Some(None) => checks.push(crate::FieldError::new("language", "cannot be cleared")),
        None => {}
    }
    if let Some(tags) = patch.tags {
        if let Some(wanted) = tag_set(&mut checks, "tags", tags.unwrap_or_default()) {
            if wanted.is_empty() {
                if !view.tags.is_empty() {
                    events.push(ContactEvent::TagsCleared {
                        tags: view.tags.iter().cloned().collect(),
                    });
                }
            } else {
                events.extend(
                    view.tags
                        .difference(&wanted)
                        .map(|tag| ContactEvent::TagRemoved { tag: tag.clone() }),
                );
                events.extend(
                    wanted
                        .difference(&view.tags)
                        .map(|tag| ContactEvent::TagAdded { tag: tag.clone() }),
                );
            }
        }
    }
    checks.finish()?;
    Ok(events)
}
