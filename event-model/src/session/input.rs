//! A command's input for a message, a summary or an outcome, as the caller gives it, not yet
//! checked.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::event::{ContentType, Sentiment, SessionEvent};
use crate::error::{DomainError, FieldError};
use crate::values::{self, Checks};

/// A message to record, as a command gives it, not yet checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// The message's id, if the caller has one; not used to de-duplicate (see
    /// [`MessageContent::channel_message_id`]).
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
    /// What was said or sent; all of it optional (a message may be recorded for its metrics
    /// alone).
    pub content: MessageContent,
}

/// A message's content as a command gives it, not yet checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageContent {
    /// What kind of message; `None`: text.
    pub content_type: Option<ContentType>,
    /// The text: 1 to 4,096 characters, no NUL; kept as given (whitespace is part of a message).
    pub text: Option<String>,
    /// An http(s) URL of at most 2,048 characters; required for a media content type.
    pub media_url: Option<String>,
    /// `type/subtype`, at most 255 characters; only with a `media_url`.
    pub media_mimetype: Option<String>,
    /// The channel's own id: 1 to 255 visible characters.
    pub channel_message_id: Option<String>,
    /// The message this one answers.
    pub reply_to: Option<Uuid>,
}

/// The most characters a message's text may have.
pub const MAX_MESSAGE_TEXT: usize = 4_096;

impl MessageContent {
    fn validated(self) -> Result<Self, DomainError> {
        let mut checks = Checks::default();
        let content_type = self.content_type.unwrap_or_default();
        let text = self.text.and_then(|t| {
            if t.is_empty() {
                checks.push(FieldError::new("text", "must not be empty (leave it out)"));
                return None;
            }
            checks.check(values::optional_text("text", &t, MAX_MESSAGE_TEXT))
        });
        let has_media = self.media_url.is_some();
        let media_url = self
            .media_url
            .and_then(|u| checks.check(values::http_url("media_url", &u)));
        if content_type.is_media() && !has_media {
            checks.push(FieldError::new(
                "media_url",
                format!("is required for a {} message", content_type.as_str()),
            ));
        }
        let media_mimetype = self
            .media_mimetype
            .and_then(|m| checks.check(values::mime_type("media_mimetype", &m)));
        if media_mimetype.is_some() && !has_media {
            checks.push(FieldError::new(
                "media_mimetype",
                "must come with a media_url",
            ));
        }
        let channel_message_id = self
            .channel_message_id
            .and_then(|c| checks.check(values::external_id("channel_message_id", &c, 255)));
        checks.finish()?;
        Ok(Self {
            content_type: Some(content_type),
            text,
            media_url,
            media_mimetype,
            channel_message_id,
            reply_to: self.reply_to,
        })
    }
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
            content: self.content.validated()?,
            ..self
        })
    }

    /// The event of a validated message on a session of channel type `channel_type_id`.
    pub(crate) fn into_event(self, channel_type_id: i64) -> SessionEvent {
        let content = self.content;
        SessionEvent::MessageRecorded {
            message_id: self.message_id,
            from_contact: self.from_contact,
            agent_id: self.agent_id,
            sent_at: self.sent_at,
            channel_type_id: Some(channel_type_id),
            content_type: content.content_type.unwrap_or_default(),
            text: content.text,
            media_url: content.media_url,
            media_mimetype: content.media_mimetype,
            channel_message_id: content.channel_message_id,
            reply_to: content.reply_to,
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
