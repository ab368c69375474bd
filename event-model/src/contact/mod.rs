//! The Contact aggregate: a person the project talks to, their profile and tags, and which
//! sessions are open with them (at most one per channel type, enforced here because every session
//! start and end passes through the contact's stream).

mod event;
mod input;
mod view;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use event::ContactEvent;
pub use input::{NewContact, ProfilePatch, DEFAULT_LANGUAGE};
pub use view::ContactView;

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
