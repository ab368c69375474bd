//! A message's content, as both message routes take it (`POST /contacts/{id}/messages` and
//! `POST /sessions/{id}/messages`); the domain checks its values.

use chrono::{DateTime, Utc};
use event_model::session::{ContentType, MessageContent};
use platform::ApiError;
use serde_json::Value;
use uuid::Uuid;

use super::field_error;

/// The content fields of a message body, as sent.
pub(super) struct ContentFields {
    pub text: Option<String>,
    pub content_type: Option<String>,
    pub media_url: Option<String>,
    pub media_mimetype: Option<String>,
    pub channel_message_id: Option<String>,
    pub reply_to: Option<Uuid>,
}

/// How far ahead of this service's clock a message's `sent_at` may be: clocks disagree by
/// seconds, not by more. A message dated further ahead would keep its session from timing out
/// until then, and stand first in every "latest" order meanwhile.
pub(super) const MAX_SENT_AHEAD: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// A message's `sent_at`: as given (an import may date it in the past), now when left out, and
/// a 422 when it is more than [`MAX_SENT_AHEAD`] in the future.
pub(super) fn sent_at(given: Option<DateTime<Utc>>) -> Result<DateTime<Utc>, ApiError> {
    let now = Utc::now();
    match given {
        None => Ok(now),
        Some(at) if at > now + MAX_SENT_AHEAD => Err(field_error(
            "sent_at",
            &format!(
                "must not be more than {} minutes in the future",
                MAX_SENT_AHEAD.num_minutes()
            ),
        )),
        Some(at) => Ok(at),
    }
}

/// The content types a message body may name, as the OpenAPI document lists them.
pub(super) const CONTENT_TYPES: &str = "text, image, audio, voice, video, document, sticker, \
                                        location, contact, template, interactive, reaction, system";

impl ContentFields {
    /// The content to hand the domain; an unknown `content_type` is a 422.
    pub(super) fn into_content(self) -> Result<MessageContent, ApiError> {
        let content_type = self
            .content_type
            .map(|name| {
                serde_json::from_value::<ContentType>(Value::String(name)).map_err(|_| {
                    field_error("content_type", &format!("must be one of {CONTENT_TYPES}"))
                })
            })
            .transpose()?;
        Ok(MessageContent {
            content_type,
            text: self.text,
            media_url: self.media_url,
            media_mimetype: self.media_mimetype,
            channel_message_id: self.channel_message_id,
            reply_to: self.reply_to,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_content_type_is_listed_and_parses() {
        for kind in ContentType::ALL {
            assert!(CONTENT_TYPES.contains(kind.as_str()), "{kind:?}");
        }
        assert_eq!(CONTENT_TYPES.split(", ").count(), ContentType::ALL.len());
    }
}
