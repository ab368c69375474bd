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

pub use event::{EndReason, Sentiment, SessionEvent};
pub use input::{NewMessage, NewSummary, Outcome};
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
