//! What a command is and what it answers: the command, who it acts for, its metadata, its
//! outcome and the ways it can fail.

use event_model::{ContactCommand, DomainError, SessionCommand};
use platform::event_store::StoreError;
use platform::personal;
use uuid::Uuid;

use crate::idempotency::{self, IdempotencySlot, StoredResponse};

/// Who a command acts for: the project and tenant, and the calling user (none for the system's
/// own commands, e.g. the timeout sweeper).
#[derive(Debug, Clone)]
pub struct Actor {
    pub tenant_id: String,
    pub project_id: Uuid,
    pub user_id: Option<Uuid>,
    pub session_timeout: event_model::values::SessionTimeout,
    /// Whether it may end a session assigned to another agent than itself (a supervisor and
    /// above, and the system); without, it ends only a session assigned to it or to no one.
    pub ends_any_session: bool,
}

/// A command whose answer is kept for its `Idempotency-Key`: the key, and how an outcome becomes
/// the HTTP answer that is stored and replayed.
#[derive(Debug, Clone, Copy)]
pub struct Replayable<'a> {
    pub slot: &'a IdempotencySlot,
    pub render: fn(&Outcome) -> StoredResponse,
}

/// Per-request metadata carried into every event.
#[derive(Debug, Clone, Copy)]
pub struct CommandMeta {
    pub correlation_id: Uuid,
    /// The id of this command: every event it produces has it as `causation_id`.
    pub causation_id: Uuid,
    pub if_match: Option<i64>,
}

#[derive(Debug, Clone)]
pub enum Command {
    Contact {
        contact_id: Uuid,
        command: ContactCommand,
    },
    Session {
        session_id: Uuid,
        command: SessionCommand,
    },
}

impl Command {
    /// A stable name for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Contact { command, .. } => match command {
                ContactCommand::Create(_) => "create_contact",
                ContactCommand::UpdateProfile(_) => "update_contact",
                ContactCommand::AddTag { .. } => "add_tag",
                ContactCommand::RemoveTag { .. } => "remove_tag",
                ContactCommand::SetProfilePicture { .. } => "set_profile_picture",
                ContactCommand::Delete { .. } => "delete_contact",
                ContactCommand::Forget { .. } => "forget_contact",
                ContactCommand::StartSession { .. } => "start_session",
                ContactCommand::RecordMessage { .. } => "record_inbound_message",
            },
            Self::Session { command, .. } => match command {
                SessionCommand::RecordMessage(_) => "record_session_message",
                SessionCommand::AssignAgent { .. } => "assign_agent",
                SessionCommand::Summarize(_) => "summarize_session",
                SessionCommand::SetOutcome(_) => "set_outcome",
                SessionCommand::End { .. } => "end_session",
                SessionCommand::EndIfIdle => "end_idle_session",
            },
        }
    }

    /// The message a message command answers, and the stream it is addressed to:
    /// `(reply_to, contact, session)`, one of the last two set.
    pub(super) fn reply(&self) -> Option<(Uuid, Option<Uuid>, Option<Uuid>)> {
        match self {
            Self::Contact {
                contact_id,
                command: ContactCommand::RecordMessage { message, .. },
            } => message
                .content
                .reply_to
                .map(|r| (r, Some(*contact_id), None)),
            Self::Session {
                session_id,
                command: SessionCommand::RecordMessage(message),
            } => message
                .content
                .reply_to
                .map(|r| (r, None, Some(*session_id))),
            _ => None,
        }
    }

    pub(super) fn target(&self) -> Uuid {
        match self {
            Self::Contact { contact_id, .. } => *contact_id,
            Self::Session { session_id, .. } => *session_id,
        }
    }
}

/// What a command answers: what it did now, or the answer its `Idempotency-Key` got before.
#[derive(Debug, Clone, PartialEq)]
pub enum Answered {
    Now(Outcome),
    Replayed(StoredResponse),
}

impl Answered {
    /// What the command did now; `None` for a replayed answer.
    pub fn now(self) -> Option<Outcome> {
        match self {
            Self::Now(outcome) => Some(outcome),
            Self::Replayed(_) => None,
        }
    }
}

/// What a command did: the addressed aggregate's new version, and the session it touched (a
/// message on a contact goes to, or opens, a session).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub aggregate_id: Uuid,
    pub version: i64,
    pub event_ids: Vec<Uuid>,
    pub session: Option<(Uuid, i64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("no such {0} in this project")]
    NotFound(&'static str),
    #[error("the aggregate is at version {current}")]
    PreconditionFailed { current: i64 },
    #[error("the aggregate kept changing under the command; retry")]
    Conflict,
    #[error("the Idempotency-Key was used with another request")]
    IdempotencyMismatch,
    /// The caller's role holds the route's permission, but not for this resource.
    #[error("{0}")]
    Forbidden(&'static str),
    #[error(transparent)]
    Store(StoreError),
}

/// The answer an `Idempotency-Key` already stands for: its first answer, or a refusal when the
/// key came with another request.
pub(super) fn replayed(recorded: idempotency::Recorded) -> Result<Answered, CommandError> {
    match recorded {
        idempotency::Recorded::Same(answer) => Ok(Answered::Replayed(answer)),
        idempotency::Recorded::Different => Err(CommandError::IdempotencyMismatch),
    }
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        match e {
            // A lost race is not an infrastructure failure: it is retried, or becomes 412/409.
            StoreError::Conflict => Self::Conflict,
            other => Self::Store(other),
        }
    }
}

impl From<personal::PersonalError> for CommandError {
    fn from(e: personal::PersonalError) -> Self {
        Self::Store(StoreError::Personal(e))
    }
}

impl From<sqlx::Error> for CommandError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(e))
    }
}
