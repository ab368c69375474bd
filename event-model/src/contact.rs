//! The Contact aggregate: a person the project talks to, their profile and tags, and which
//! sessions are open with them (at most one per channel type, enforced here because every session
//! start and end passes through the contact's stream).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
