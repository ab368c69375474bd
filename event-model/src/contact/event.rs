//! A contact's events: what the command side appends and every reader folds.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
        /// [`DEFAULT_LANGUAGE`](crate::contact::DEFAULT_LANGUAGE) when the command gave none.
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
