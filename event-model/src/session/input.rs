//! A command's input for a message, a summary or an outcome, as the caller gives it, not yet
//! checked.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::event::{Sentiment, SessionEvent};
use crate::error::DomainError;
use crate::values;

/// A message to record, as a command gives it, not yet checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// The message's id, if the caller has one; not used to de-duplicate.
    pub message_id: Option<Uuid>,
    /// `true` when the contact sent it, `false` for the agent side.
    pub from_contact: bool,
    /// The agent who sent it; must be `None` when `from_contact`.
    /// [`crate::SessionCommand::RecordMessage`] refuses one that would be the session's 65th
    /// distinct agent.
    pub agent_id: Option<Uuid>,
    /// When it was sent, as the caller says; kept to the microsecond. Not checked against the
    /// session's start or the present.
    pub sent_at: DateTime<Utc>,
}

impl NewMessage {
    pub(crate) fn validated(self) -> Result<Self, DomainError> {
        if self.from_contact && self.agent_id.is_some() {
            return Err(DomainError::invalid(
                "agent_id",
                "must be absent on a message from the contact",
            ));
        }
        Ok(Self {
            sent_at: values::instant(self.sent_at),
            ..self
        })
    }

    pub(crate) fn into_event(self) -> SessionEvent {
        SessionEvent::MessageRecorded {
            message_id: self.message_id,
            from_contact: self.from_contact,
            agent_id: self.agent_id,
            sent_at: self.sent_at,
        }
    }
}

/// A session summary as the summarize command gives it, not yet checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSummary {
    /// The summary; required: trimmed, it must be 1 to 20,000 characters.
    pub summary: String,
    /// The overall sentiment; `None`: not judged.
    pub sentiment: Option<Sentiment>,
    /// A score from -1 (most negative) to 1 (most positive); `None`: not given.
    pub sentiment_score: Option<f64>,
    /// The topics discussed: at most 200, each trimmed and 1 to 1,000 characters.
    pub topics: Vec<String>,
    /// The next steps agreed: at most 200, each trimmed and 1 to 1,000 characters.
    pub next_steps: Vec<String>,
    /// Entities the session names, a JSON object or array; `None`: not given.
    pub key_entities: Option<serde_json::Value>,
}

/// An outcome change as the set-outcome command gives it; each `None` leaves that part as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// `Some(true)` marks the session escalated; `Some(false)` is refused once it is (a flag is
    /// never undone).
    pub escalated: Option<bool>,
    /// `Some(true)` marks it resolved, refused while it is still active; `Some(false)` is refused
    /// once it is resolved.
    pub resolved: Option<bool>,
    /// `Some(true)` marks it converted; `Some(false)` is refused once it is.
    pub converted: Option<bool>,
    /// Tags to add (never removed): at most 200 in the list, each trimmed and 1 to 64 characters;
    /// the session then holds at most 200.
    pub outcome_tags: Option<Vec<String>>,
}
