//! The Contact aggregate: a person the project talks to, their profile and tags, and which
//! sessions are open with them (at most one per channel type, enforced here because every session
//! start and end passes through the contact's stream).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::DomainError;
use crate::event::{DomainEvent, PendingEvent};
use crate::session::{EndReason, NewMessage, Session, SessionEvent};
use crate::values::{self, Checks, MAX_TAGS, MAX_TEXT_LEN};
use crate::Context;

pub const DEFAULT_LANGUAGE: &str = "en";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ContactEvent {
    /// Personal fields (see [`crate::personal::fields`]) are `Option`s even where a command
    /// requires them: a forgotten contact's events decode with them redacted (`None`).
    #[serde(rename = "contact.created")]
    Created {
        name: Option<String>,
        email: Option<String>,
        phone: Option<String>,
        external_id: Option<String>,
        source_channel: Option<String>,
        language: String,
        timezone: Option<String>,
        tags: Vec<String>,
    },
    #[serde(rename = "contact.name_changed")]
    NameChanged {
        name: Option<String>,
        previous: Option<String>,
    },
    #[serde(rename = "contact.email_set")]
    EmailSet {
        email: Option<String>,
        previous: Option<String>,
    },
    #[serde(rename = "contact.phone_set")]
    PhoneSet {
        phone: Option<String>,
        previous: Option<String>,
    },
    #[serde(rename = "contact.external_id_set")]
    ExternalIdSet {
        external_id: Option<String>,
        previous: Option<String>,
    },
    #[serde(rename = "contact.language_changed")]
    LanguageChanged { language: String, previous: String },
    #[serde(rename = "contact.timezone_set")]
    TimezoneSet {
        timezone: Option<String>,
        previous: Option<String>,
    },
    #[serde(rename = "contact.source_channel_set")]
    SourceChannelSet {
        source_channel: Option<String>,
        previous: Option<String>,
    },
    #[serde(rename = "contact.tag_added")]
    TagAdded { tag: String },
    #[serde(rename = "contact.tag_removed")]
    TagRemoved { tag: String },
    #[serde(rename = "contact.tags_cleared")]
    TagsCleared { tags: Vec<String> },
    #[serde(rename = "contact.profile_picture_updated")]
    ProfilePictureUpdated {
        url: Option<String>,
        fetched_at: DateTime<Utc>,
    },
    #[serde(rename = "contact.session_opened")]
    SessionOpened {
        session_id: Uuid,
        channel_type_id: i64,
    },
    #[serde(rename = "contact.session_closed")]
    SessionClosed {
        session_id: Uuid,
        channel_type_id: i64,
    },
    #[serde(rename = "contact.deleted")]
    Deleted { reason: Option<String> },
    /// The contact's personal data is to be unreadable for good: its data key is destroyed in
    /// the transaction that stores this event, and every read row drops its personal columns.
    /// Always after `contact.deleted`; the last event of the contact.
    #[serde(rename = "contact.forgotten")]
    Forgotten { reason: Option<String> },
}

impl ContactEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Created { .. } => "contact.created",
            Self::NameChanged { .. } => "contact.name_changed",
            Self::EmailSet { .. } => "contact.email_set",
            Self::PhoneSet { .. } => "contact.phone_set",
            Self::ExternalIdSet { .. } => "contact.external_id_set",
            Self::LanguageChanged { .. } => "contact.language_changed",
            Self::TimezoneSet { .. } => "contact.timezone_set",
            Self::SourceChannelSet { .. } => "contact.source_channel_set",
            Self::TagAdded { .. } => "contact.tag_added",
            Self::TagRemoved { .. } => "contact.tag_removed",
            Self::TagsCleared { .. } => "contact.tags_cleared",
            Self::ProfilePictureUpdated { .. } => "contact.profile_picture_updated",
            Self::SessionOpened { .. } => "contact.session_opened",
            Self::SessionClosed { .. } => "contact.session_closed",
            Self::Deleted { .. } => "contact.deleted",
            Self::Forgotten { .. } => "contact.forgotten",
        }
    }
}

/// The contact as a reader sees it: the columns of the `contacts` read table that the contact's
/// own events determine. The aggregate and the `contacts` projection fold it with the same
/// [`ContactView::apply`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactView {
    /// `None` only once redacted: a forgotten contact's.
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub external_id: Option<String>,
    pub source_channel: Option<String>,
    pub language: String,
    pub timezone: Option<String>,
    pub tags: BTreeSet<String>,
    pub profile_picture_url: Option<String>,
    pub profile_picture_fetched_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub forgotten_at: Option<DateTime<Utc>>,
}

impl ContactView {
    pub fn apply(&mut self, event: &ContactEvent, occurred_at: DateTime<Utc>) {
        match event {
            ContactEvent::Created {
                name,
                email,
                phone,
                external_id,
                source_channel,
                language,
                timezone,
                tags,
            } => {
                *self = ContactView {
                    name: name.clone(),
                    email: email.clone(),
                    phone: phone.clone(),
                    external_id: external_id.clone(),
                    source_channel: source_channel.clone(),
                    language: language.clone(),
                    timezone: timezone.clone(),
                    tags: tags.iter().cloned().collect(),
                    created_at: Some(occurred_at),
                    ..ContactView::default()
                };
            }
            ContactEvent::NameChanged { name, .. } => self.name = name.clone(),
            ContactEvent::EmailSet { email, .. } => self.email = email.clone(),
            ContactEvent::PhoneSet { phone, .. } => self.phone = phone.clone(),
            ContactEvent::ExternalIdSet { external_id, .. } => {
                self.external_id = external_id.clone()
            }
            ContactEvent::LanguageChanged { language, .. } => self.language = language.clone(),
            ContactEvent::TimezoneSet { timezone, .. } => self.timezone = timezone.clone(),
            ContactEvent::SourceChannelSet { source_channel, .. } => {
                self.source_channel = source_channel.clone()
            }
            ContactEvent::TagAdded { tag } => {
                self.tags.insert(tag.clone());
            }
            ContactEvent::TagRemoved { tag } => {
                self.tags.remove(tag);
            }
            ContactEvent::TagsCleared { .. } => self.tags.clear(),
            ContactEvent::ProfilePictureUpdated { url, fetched_at } => {
                self.profile_picture_url = url.clone();
                self.profile_picture_fetched_at = Some(*fetched_at);
            }
            ContactEvent::SessionOpened { .. } | ContactEvent::SessionClosed { .. } => {}
            ContactEvent::Deleted { .. } => self.deleted_at = Some(occurred_at),
            ContactEvent::Forgotten { .. } => {
                // Every personal field; the rest of the row (times, tags, language) stays.
                self.name = None;
                self.email = None;
                self.phone = None;
                self.external_id = None;
                self.profile_picture_url = None;
                self.forgotten_at = Some(occurred_at);
            }
        }
        self.updated_at = Some(occurred_at);
    }
}

/// The Contact aggregate's state: its view plus what only decisions need.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// The last applied `sequence_number` (0 = no such contact).
    pub version: i64,
    pub view: ContactView,
    /// The active session on each channel type.
    pub active_sessions: BTreeMap<i64, Uuid>,
}

impl Contact {
    pub fn exists(&self) -> bool {
        self.version > 0
    }

    pub fn is_deleted(&self) -> bool {
        self.view.deleted_at.is_some()
    }

    pub fn is_forgotten(&self) -> bool {
        self.view.forgotten_at.is_some()
    }

    /// Folds one stored event. Infallible: a stored event is a fact.
    pub fn apply(
        &mut self,
        sequence_number: i64,
        event: &ContactEvent,
        occurred_at: DateTime<Utc>,
    ) {
        self.view.apply(event, occurred_at);
        match event {
            ContactEvent::SessionOpened {
                session_id,
                channel_type_id,
            } => {
                self.active_sessions.insert(*channel_type_id, *session_id);
            }
            ContactEvent::SessionClosed {
                session_id,
                channel_type_id,
            } if self.active_sessions.get(channel_type_id) == Some(session_id) => {
                self.active_sessions.remove(channel_type_id);
            }
            _ => {}
        }
        self.version = sequence_number;
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewContact {
    pub contact_id: Uuid,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub external_id: Option<String>,
    pub source_channel: Option<String>,
    pub language: Option<String>,
    pub timezone: Option<String>,
    pub tags: Vec<String>,
}

/// A partial profile update. The outer `Option` is "field present", the inner one "not null".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfilePatch {
    pub name: Option<Option<String>>,
    pub email: Option<Option<String>>,
    pub phone: Option<Option<String>>,
    pub external_id: Option<Option<String>>,
    pub source_channel: Option<Option<String>>,
    pub language: Option<Option<String>>,
    pub timezone: Option<Option<String>>,
    pub tags: Option<Option<Vec<String>>>,
}

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
