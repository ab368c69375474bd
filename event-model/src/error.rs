//! The rules a command can break. Each variant is one refusal; only the HTTP edge maps them to
//! statuses (field rules → 422, state rules → 409).

use uuid::Uuid;

use crate::aggregate::AggregateType;

/// A field of a command that breaks a value rule (bad e-mail, phone not E.164, empty tag...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field at fault as the API names it, with an index into a list where need be (`email`,
    /// `tags[2]`).
    pub field: String,
    /// What the value must be (`must be a valid e-mail address`), never the value itself: it may be
    /// personal data.
    pub message: String,
}

impl FieldError {
    /// A refusal of `field`, `message` saying what its value must be.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A command refused by a domain rule: nothing was decided and nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Fields break value rules; each entry names one and says what its value must be.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// The contact has no stream: it was never created.
    #[error("the contact does not exist")]
    ContactNotFound,
    /// The session has no stream: it was never started.
    #[error("the session does not exist")]
    SessionNotFound,
    /// A create for an id whose stream has events already, deleted or not.
    #[error("the contact already exists")]
    ContactAlreadyExists,
    /// The contact is deleted: every command on it or its sessions is refused, except forgetting
    /// it.
    #[error("the contact has been deleted")]
    ContactDeleted,
    /// The command needs an active session and this one has ended.
    #[error("the session has ended")]
    SessionEnded,
    /// A session start on a channel type where the contact already has an active session (at most
    /// one per channel type).
    #[error("session {session_id} is already active on channel type {channel_type_id}")]
    SessionAlreadyActive {
        /// The session already active there.
        session_id: Uuid,
        /// The channel type the start asked for.
        channel_type_id: i64,
    },
    /// `resolved` set on a session that is still active: a session is resolved only once it has
    /// ended.
    #[error("a session can be marked resolved only once it has ended")]
    ResolveActiveSession,
    /// An outcome flag set to `false` once it is `true` (flags are set once, for good); names the
    /// flag: `escalated`, `resolved` or `converted`.
    #[error("{0} cannot be undone")]
    CannotUndo(&'static str),
    /// [`crate::SessionCommand::EndIfIdle`] on a session that had traffic within its timeout. The
    /// sweeper picks sessions from a read model that may lag, so this refusal is its ordinary
    /// no-op.
    #[error("the session has not been inactive for its timeout yet")]
    SessionNotTimedOut,
}

impl DomainError {
    /// A refusal of a single field ([`DomainError::Invalid`] with one [`FieldError`]).
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
    /// No such event type and version for that aggregate type, or an event of the other aggregate
    /// type's stream.
    #[error("unknown event {event_type} {event_version} for aggregate {aggregate_type}")]
    Unknown {
        /// The aggregate type of the stream the event was read from.
        aggregate_type: AggregateType,
        /// The stored event type.
        event_type: String,
        /// The stored event version.
        event_version: String,
    },
    /// A payload that does not deserialise into its event's type.
    ///
    /// The message says what does not fit without quoting any value (see
    /// [`crate::error::value_free`]): a payload may hold personal data.
    #[error("event {event_type} has a payload that does not fit its type: {reason}")]
    Payload {
        /// The stored event type.
        event_type: String,
        /// What does not fit, with every value taken out ([`value_free`]).
        reason: String,
    },
    /// A stored version this build does not know (only `v1` and `v2` exist).
    #[error("event {event_type} has an unknown version {event_version}")]
    UnknownVersion {
        /// The stored event type.
        event_type: String,
        /// The version it is stored at.
        event_version: String,
    },
    /// A payload whose stored form breaks its version's shape: a `v2` payload that is not a JSON
    /// object or whose seal is missing or malformed, or, on the way in, personal fields not yet
    /// sealed.
    #[error("event {event_type} has a payload of the wrong shape: {reason}")]
    Shape {
        /// The stored event type.
        event_type: String,
        /// What is wrong, as a fixed text that quotes nothing of the payload.
        reason: &'static str,
    },
    /// A `v2` event whose personal fields were not opened with its contact's key.
    #[error("event {event_type} still has its personal fields sealed")]
    Sealed {
        /// The stored event type.
        event_type: String,
    },
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
