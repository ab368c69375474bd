//! The contact as a reader sees it, and the fold that the aggregate, the `contacts` projection and
//! the replay share.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::ContactEvent;

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
            ContactEvent::Created { .. } => self.create(event, occurred_at),
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
                self.set_profile_picture(url, *fetched_at)
            }
            ContactEvent::SessionOpened { .. } | ContactEvent::SessionClosed { .. } => {}
            ContactEvent::Deleted { .. } => self.deleted_at = Some(occurred_at),
            ContactEvent::Forgotten { .. } => self.forget(occurred_at),
        }
        self.updated_at = Some(occurred_at);
    }

    /// `contact.created`: the view starts over from the contact's first profile, created at
    /// `occurred_at`. Takes the whole event, as every field of it lands in the view; does nothing
    /// with another event.
    fn create(&mut self, event: &ContactEvent, occurred_at: DateTime<Utc>) {
        let ContactEvent::Created {
            name,
            email,
            phone,
            external_id,
            source_channel,
            language,
            timezone,
            tags,
        } = event
        else {
            return;
        };
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

    /// `contact.profile_picture_updated`: the new URL and when it was fetched.
    fn set_profile_picture(&mut self, url: &Option<String>, fetched_at: DateTime<Utc>) {
        self.profile_picture_url = url.clone();
        self.profile_picture_fetched_at = Some(fetched_at);
    }

    /// `contact.forgotten`: every personal field goes; the rest of the row (times, tags, language)
    /// stays.
    fn forget(&mut self, occurred_at: DateTime<Utc>) {
        self.name = None;
        self.email = None;
        self.phone = None;
        self.external_id = None;
        self.profile_picture_url = None;
        self.forgotten_at = Some(occurred_at);
    }
}
