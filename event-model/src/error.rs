//! The rules a command can break. Each variant is one refusal; only the HTTP edge maps them to
//! statuses (field rules → 422, state rules → 409).

use uuid::Uuid;

use crate::aggregate::AggregateType;

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

/// A serde error message without the values it quotes: `invalid type: string "ana@example.com",
/// expected u32` becomes `invalid type: string, expected u32`. Field names (`missing field
/// `name``) and what was expected are kept, so the message still says what to fix, but nothing a
/// caller sent ends up in an error text or a log line, where personal data must never go.
pub fn value_free(message: &str) -> String {
    let (head, tail) = match message.find(", expected") {
        Some(at) => message.split_at(at),
        None => (message, ""),
    };
    let names_a_field = head.contains("field `");
    let mut out = String::with_capacity(message.len());
    let mut chars = head.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // A quoted string (Debug-escaped by serde): drop it, escapes included.
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            // A quoted value (`5`, `true`, an unknown variant), unless it names a field.
            '`' if !names_a_field => {
                for c in chars.by_ref() {
                    if c == '`' {
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
    }
    // "invalid value: 4.5" (a custom message with a bare number): keep only the kind of error.
    if let Some(rest) = out.strip_prefix("invalid value:") {
        if !rest
            .trim()
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c == ' ')
        {
            out = "invalid value".to_owned();
        }
    }
    let mut out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    out.push_str(tail);
    out
}

/// Why a stored event could not be read as a domain event.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    #[error("unknown event {event_type} {event_version} for aggregate {aggregate_type}")]
    Unknown {
        aggregate_type: AggregateType,
        event_type: String,
        event_version: String,
    },
    /// The message says what does not fit without quoting any value (see
    /// [`crate::error::value_free`]): a payload may hold personal data.
    #[error("event {event_type} has a payload that does not fit its type: {reason}")]
    Payload { event_type: String, reason: String },
    #[error("event {event_type} has an unknown version {event_version}")]
    UnknownVersion {
        event_type: String,
        event_version: String,
    },
    #[error("event {event_type} has a payload of the wrong shape: {reason}")]
    Shape {
        event_type: String,
        reason: &'static str,
    },
    /// A `v2` event whose personal fields were not opened with its contact's key.
    #[error("event {event_type} still has its personal fields sealed")]
    Sealed { event_type: String },
}

#[cfg(test)]
mod tests {
    use super::value_free;

    #[test]
    fn serde_messages_keep_field_names_and_expectations_but_lose_every_value() {
        let cases = [
            (
                r#"invalid type: string "ana@example.com", expected u32 at line 1 column 9"#,
                "invalid type: string, expected u32 at line 1 column 9",
            ),
            (
                r#"invalid type: string "a \"quoted\" name", expected a boolean"#,
                "invalid type: string, expected a boolean",
            ),
            (
                "invalid type: integer `5551234567`, expected a string",
                "invalid type: integer, expected a string",
            ),
            (
                "unknown variant `ana`, expected one of `positive`, `neutral`",
                "unknown variant, expected one of `positive`, `neutral`",
            ),
            (
                "missing field `name` at line 1 column 2",
                "missing field `name` at line 1 column 2",
            ),
            (
                "unknown field `nmae`, expected one of `name`, `email`",
                "unknown field `nmae`, expected one of `name`, `email`",
            ),
            (
                "invalid value: 4.5, expected a 64-bit integer",
                "invalid value, expected a 64-bit integer",
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(value_free(message), expected, "{message}");
        }
    }
}
