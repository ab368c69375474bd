//! The rules a command can break. Each variant is one refusal; only the HTTP edge maps them to
//! statuses (field rules → 422, state rules → 409).

use uuid::Uuid;

/// A field of a command that breaks a value rule (bad e-mail, phone not E.164, empty tag...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("the contact does not exist")]
    ContactNotFound,
    #[error("the session does not exist")]
    SessionNotFound,
    #[error("the contact already exists")]
    ContactAlreadyExists,
    #[error("the contact has been deleted")]
    ContactDeleted,
    #[error("the session has ended")]
    SessionEnded,
    #[error("session {session_id} is already active on channel type {channel_type_id}")]
    SessionAlreadyActive {
        session_id: Uuid,
        channel_type_id: i64,
    },
    #[error("a session can be marked resolved only once it has ended")]
    ResolveActiveSession,
    #[error("{0} cannot be undone")]
    CannotUndo(&'static str),
    #[error("the session has not been inactive for its timeout yet")]
    SessionNotTimedOut,
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }
}
