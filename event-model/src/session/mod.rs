//! The Session aggregate: one conversation with a contact on one channel, from its first message
//! to its end, and every metric the product reports on it.
//!
//! Metrics come from event times only (`sent_at`, `started_at`, `ended_at`), never the wall
//! clock, so replaying the events gives the same numbers.

mod event;
mod input;
mod view;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use event::{ContentType, EndReason, Sentiment, SessionEvent};
pub use input::{MessageContent, NewMessage, NewSummary, Outcome, MAX_MESSAGE_TEXT};
pub use view::{SessionStatus, SessionView};

/// The Session aggregate's state: its view plus the agent currently in charge.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The last applied `sequence_number` (0 = no such session).
    pub version: i64,
    /// What readers see of the session: folded by the same [`SessionView::apply`] as the `sessions`
    /// projection.
    pub view: SessionView,
    /// The agent in charge: the last `session.agent_assigned`'s. `None` until the first assignment;
    /// an agent who only sends messages does not take charge.
    pub current_agent: Option<Uuid>,
}

impl Session {
    /// Whether the session's stream has any event (it starts with `session.started`).
    pub fn exists(&self) -> bool {
        self.version > 0
    }

    /// Whether the session has started and not ended.
    pub fn is_active(&self) -> bool {
        self.view.status == SessionStatus::Active
    }

    /// Folds one stored event, `sequence_number` being its place in the stream. Infallible: a
    /// stored event is a fact.
    pub fn apply(&mut self, sequence_number: i64, event: &SessionEvent) {
        self.view.apply(event);
        if let SessionEvent::AgentAssigned { agent_id, .. } = event {
            self.current_agent = Some(*agent_id);
        }
        self.version = sequence_number;
    }
}

/// The namespace of the ids [`channel_message_event_id`] derives (UUID v5).
const CHANNEL_MESSAGE_NAMESPACE: uuid::Uuid = uuid::uuid!("6f1d3c2e-93a4-5b7e-8c10-4d2f9a61e0b5");

/// The id of the `session.message_recorded` event of the message `channel_message_id` on
/// channel type `channel_type` in project `project_id`: the same for every repeat of the message,
/// so the event store's key holds it once, and unrelated across projects (a UUID v5 of the
/// three, which no other project can produce and no caller picks).
pub fn channel_message_event_id(
    project_id: uuid::Uuid,
    channel_type: i64,
    channel_message_id: &str,
) -> uuid::Uuid {
    let name = format!("{project_id}/{channel_type}/{channel_message_id}");
    uuid::Uuid::new_v5(&CHANNEL_MESSAGE_NAMESPACE, name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::channel_message_event_id;

    #[test]
    fn a_channel_message_id_names_one_event_per_project_and_channel() {
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let id = channel_message_event_id(a, 1, "wamid.1");
        assert_eq!(id, channel_message_event_id(a, 1, "wamid.1"), "a repeat");
        assert_ne!(
            id,
            channel_message_event_id(b, 1, "wamid.1"),
            "another project"
        );
        assert_ne!(
            id,
            channel_message_event_id(a, 2, "wamid.1"),
            "another channel"
        );
        assert_ne!(id, channel_message_event_id(a, 1, "wamid.2"));
        assert_eq!(id.get_version_num(), 5);
    }
}
