//! The Contact aggregate: a person the project talks to, their profile and tags, and which
//! sessions are open with them (at most one per channel type, enforced here because every session
//! start and end passes through the contact's stream).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The language a contact is created with when the command names none (also the `contacts.language`
/// column's default).
pub const DEFAULT_LANGUAGE: &str = "en";

/// An event of a contact's stream. Serialised as `{"type": <event type>, "data": {...}}`; the store
/// keeps the type and the data apart (see [`crate::event`]). Stored names and fields never change:
/// a new shape is a new version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ContactEvent {
    /// `contact.created`: the contact exists, with its first profile. Always the first event of its
    /// stream.
    ///
    /// Personal fields (see [`crate::personal::fields`]) are `Option`s even where a command
    /// requires them: a forgotten contact's events decode with them redacted (`None`).
    #[serde(rename = "contact.created")]
    Created {
        /// The display name, trimmed, 1 to 1,000 characters; personal: `None` once the contact is
        /// forgotten.
        name: Option<String>,
        /// The e-mail address, lower-cased and checked ([`crate::values::email`]); `None` when none
        /// was given. Also personal: `None` once the contact is forgotten.
        email: Option<String>,
        /// The phone number in E.164 form ([`crate::values::phone`]); `None` when none was given.
        /// Also personal: `None` once the contact is forgotten.
        phone: Option<String>,
        /// The contact's id in the project's own system, trimmed, 1 to 255 characters; `None` when
        /// none was given. Also personal: `None` once the contact is forgotten.
        external_id: Option<String>,
        /// The channel the contact first came through, free text, trimmed, 1 to 255 characters;
        /// `None` when not given. Not personal.
        source_channel: Option<String>,
        /// A language tag such as `en` or `pt-BR` (2 to 35 ASCII letters, digits or `-`);
        /// [`DEFAULT_LANGUAGE`] when the command gave none.
        language: String,
        /// The contact's timezone, free text, trimmed, 1 to 255 characters (not checked against a
        /// time zone database); `None` when not given.
        timezone: Option<String>,
        /// The first tags: each checked by [`crate::values::tag`], sorted, without duplicates, at
        /// most 200.
        tags: Vec<String>,
    },
    /// `contact.name_changed`: the display name changed (a name can be changed, never cleared).
    #[serde(rename = "contact.name_changed")]
    NameChanged {
        /// The new name, trimmed, 1 to 1,000 characters; personal: `None` once the contact is
        /// forgotten.
        name: Option<String>,
        /// The name before, so that the audit log shows the change; personal: `None` once the
        /// contact is forgotten.
        previous: Option<String>,
    },
    /// `contact.email_set`: the e-mail address was set, changed or cleared.
    #[serde(rename = "contact.email_set")]
    EmailSet {
        /// The new address, lower-cased and checked; `None` when cleared. Also personal: `None`
        /// once the contact is forgotten.
        email: Option<String>,
        /// The address before, for the audit log; `None` when there was none. Also personal: `None`
        /// once the contact is forgotten.
        previous: Option<String>,
    },
    /// `contact.phone_set`: the phone number was set, changed or cleared.
    #[serde(rename = "contact.phone_set")]
    PhoneSet {
        /// The new number in E.164 form; `None` when cleared. Also personal: `None` once the
        /// contact is forgotten.
        phone: Option<String>,
        /// The number before, for the audit log; `None` when there was none. Also personal: `None`
        /// once the contact is forgotten.
        previous: Option<String>,
    },
    /// `contact.external_id_set`: the contact's id in the project's own system was set, changed or
    /// cleared.
    #[serde(rename = "contact.external_id_set")]
    ExternalIdSet {
        /// The new external id, trimmed, 1 to 255 characters; `None` when cleared. Also personal:
        /// `None` once the contact is forgotten.
        external_id: Option<String>,
        /// The external id before, for the audit log; `None` when there was none. Also personal:
        /// `None` once the contact is forgotten.
        previous: Option<String>,
    },
    /// `contact.language_changed`: the contact's language changed (it can be changed, never
    /// cleared).
    #[serde(rename = "contact.language_changed")]
    LanguageChanged {
        /// The new language tag, 2 to 35 ASCII letters, digits or `-`.
        language: String,
        /// The language tag before, for the audit log.
        previous: String,
    },
    /// `contact.timezone_set`: the timezone was set, changed or cleared.
    #[serde(rename = "contact.timezone_set")]
    TimezoneSet {
        /// The new timezone, free text, trimmed, 1 to 255 characters; `None` when cleared.
        timezone: Option<String>,
        /// The timezone before, for the audit log; `None` when there was none.
        previous: Option<String>,
    },
    /// `contact.source_channel_set`: the channel the contact first came through was set, changed or
    /// cleared.
    #[serde(rename = "contact.source_channel_set")]
    SourceChannelSet {
        /// The new source channel, free text, trimmed, 1 to 255 characters; `None` when cleared.
        source_channel: Option<String>,
        /// The source channel before, for the audit log; `None` when there was none.
        previous: Option<String>,
    },
    /// `contact.tag_added`: a tag joined the contact's tags (never one it already has).
    #[serde(rename = "contact.tag_added")]
    TagAdded {
        /// The tag, trimmed, 1 to 64 characters.
        tag: String,
    },
    /// `contact.tag_removed`: a tag left the contact's tags (only one it had).
    #[serde(rename = "contact.tag_removed")]
    TagRemoved {
        /// The tag, as the contact held it.
        tag: String,
    },
    /// `contact.tags_cleared`: a profile update set the tags to none.
    #[serde(rename = "contact.tags_cleared")]
    TagsCleared {
        /// Every tag the contact had, for the audit log; the fold clears the set whatever it lists.
        tags: Vec<String>,
    },
    /// `contact.profile_picture_updated`: the profile picture's URL changed (the same URL again
    /// decides nothing).
    #[serde(rename = "contact.profile_picture_updated")]
    ProfilePictureUpdated {
        /// The picture's http(s) URL, trimmed, at most 2,048 characters, no whitespace; personal:
        /// `None` once the contact is forgotten.
        url: Option<String>,
        /// When the picture was fetched, as the command says, to the microsecond.
        fetched_at: DateTime<Utc>,
    },
    /// `contact.session_opened`: a session started on a channel type. Appended with the session's
    /// `session.started` in one transaction, so that the contact's stream knows its active sessions
    /// and can refuse a second one on the same channel type.
    #[serde(rename = "contact.session_opened")]
    SessionOpened {
        /// The session that started (its own stream).
        session_id: Uuid,
        /// The channel type it is on (`channel_types.id`, positive).
        channel_type_id: i64,
    },
    /// `contact.session_closed`: a session ended. Appended with the session's `session.ended` in
    /// one transaction.
    #[serde(rename = "contact.session_closed")]
    SessionClosed {
        /// The session that ended.
        session_id: Uuid,
        /// Its channel type; the fold frees that channel type only if it still holds this session.
        channel_type_id: i64,
    },
    /// `contact.deleted`: a soft delete. Its active sessions end with it (`system_close`), and from
    /// then on every command on the contact or its sessions is refused, except forgetting it.
    #[serde(rename = "contact.deleted")]
    Deleted {
        /// Why, free text of at most 1,000 characters; personal. `None` when not given, when
        /// the deletion is part of forgetting the contact, or once the contact is forgotten.
        reason: Option<String>,
    },
    /// The contact's personal data is to be unreadable for good: its data key is destroyed in
    /// the transaction that stores this event, and every read row drops its personal columns.
    /// Always after `contact.deleted`; the last event of the contact.
    #[serde(rename = "contact.forgotten")]
    Forgotten {
        /// Why, free text of at most 1,000 characters (a ticket, a legal basis; never who).
        /// Not personal on purpose: it stays readable so that the erasure is itself
        /// accountable. `None` when not given.
        reason: Option<String>,
    },
}

impl ContactEvent {
    /// The event's stored name, `contact.<verb>`: the same as its serde tag, and never changed.
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
    /// The contact's display name, trimmed; personal. `None` only once redacted: a forgotten
    /// contact's.
    pub name: Option<String>,
    /// The e-mail address, lower-cased; personal. `None` when it has none or once forgotten.
    pub email: Option<String>,
    /// The phone number in E.164 form; personal. `None` when it has none or once forgotten.
    pub phone: Option<String>,
    /// The contact's id in the project's own system; personal. `None` when it has none or once
    /// forgotten.
    pub external_id: Option<String>,
    /// The channel the contact first came through, free text; `None` when unknown. Not personal, so
    /// kept when the contact is forgotten.
    pub source_channel: Option<String>,
    /// A language tag such as `en` or `pt-BR`; empty only before `contact.created`.
    pub language: String,
    /// The contact's timezone, free text; `None` when unknown. Not personal, so kept when the
    /// contact is forgotten.
    pub timezone: Option<String>,
    /// The contact's tags: a set of at most 200, each 1 to 64 characters. Kept when the contact is
    /// forgotten.
    pub tags: BTreeSet<String>,
    /// The profile picture's http(s) URL; personal. `None` when never set or once forgotten.
    pub profile_picture_url: Option<String>,
    /// When the current picture was fetched; `None` when none was ever set.
    pub profile_picture_fetched_at: Option<DateTime<Utc>>,
    /// When `contact.created` occurred (its envelope's `occurred_at`); `None` before it.
    pub created_at: Option<DateTime<Utc>>,
    /// When the contact's latest event occurred, whatever it changed (`contact.session_opened` and
    /// `contact.session_closed` included); `None` before the first.
    pub updated_at: Option<DateTime<Utc>>,
    /// When `contact.deleted` occurred; `None` while the contact is not deleted.
    pub deleted_at: Option<DateTime<Utc>>,
    /// When `contact.forgotten` occurred; `None` while the contact is not forgotten. A serialised
    /// view without the key (a snapshot) reads as `None`, so such snapshots stay readable under the
    /// same schema version.
    #[serde(default)]
    pub forgotten_at: Option<DateTime<Utc>>,
}

impl ContactView {
    /// Folds one event of the contact, `occurred_at` being its envelope's time. Infallible: a
    /// stored event is a fact. Every event moves `updated_at`.
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
    /// What readers see of the contact: folded by the same [`ContactView::apply`] as the `contacts`
    /// projection.
    pub view: ContactView,
    /// The active session on each channel type.
    pub active_sessions: BTreeMap<i64, Uuid>,
}

impl Contact {
    /// Whether the contact's stream has any event (it starts with `contact.created`).
    pub fn exists(&self) -> bool {
        self.version > 0
    }

    /// Whether `contact.deleted` has been applied; a forgotten contact is always deleted too.
    pub fn is_deleted(&self) -> bool {
        self.view.deleted_at.is_some()
    }

    /// Whether `contact.forgotten` has been applied: the contact's personal data is unreadable for
    /// good.
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

/// A contact to create, as the command gives it: nothing checked yet, [`crate::decide_contact`]
/// validates and normalises every field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewContact {
    /// The id chosen for the new contact (command-service makes a UUIDv7). The decider does not
    /// read it: the events go to [`crate::ContactScope::contact_id`], which the caller sets to the
    /// same id.
    pub contact_id: Uuid,
    /// The display name; required: trimmed, it must be 1 to 1,000 characters.
    pub name: String,
    /// An e-mail address, lower-cased and checked; `None`: the contact has none.
    pub email: Option<String>,
    /// A phone number, normalised to E.164 (`+` or `00`, then 8 to 15 digits; spaces, dots, dashes
    /// and parentheses dropped); `None`: the contact has none.
    pub phone: Option<String>,
    /// The contact's id in the project's own system, trimmed, 1 to 255 characters; `None`: none.
    pub external_id: Option<String>,
    /// The channel the contact first came through, trimmed, 1 to 255 characters; `None`: unknown.
    pub source_channel: Option<String>,
    /// A language tag such as `en` or `pt-BR`; `None`: [`DEFAULT_LANGUAGE`].
    pub language: Option<String>,
    /// The contact's timezone, free text, trimmed, 1 to 255 characters; `None`: unknown.
    pub timezone: Option<String>,
    /// The first tags: at most 200 in the list, each trimmed and 1 to 64 characters; duplicates
    /// collapse.
    pub tags: Vec<String>,
}

/// A partial profile update. The outer `Option` is "field present", the inner one "not null".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfilePatch {
    /// A new display name; `Some(None)` is refused, a name cannot be cleared.
    pub name: Option<Option<String>>,
    /// A new e-mail address, or `Some(None)` to clear it.
    pub email: Option<Option<String>>,
    /// A new phone number, or `Some(None)` to clear it.
    pub phone: Option<Option<String>>,
    /// A new external id, or `Some(None)` to clear it.
    pub external_id: Option<Option<String>>,
    /// A new source channel, or `Some(None)` to clear it.
    pub source_channel: Option<Option<String>>,
    /// A new language tag; `Some(None)` is refused, a language cannot be cleared.
    pub language: Option<Option<String>>,
    /// A new timezone, or `Some(None)` to clear it.
    pub timezone: Option<Option<String>>,
    /// The whole new tag set, replacing the current one: each tag removed and each added is one
    /// event. `Some(None)` or an empty list clears every tag (one `contact.tags_cleared`).
    pub tags: Option<Option<Vec<String>>>,
}
