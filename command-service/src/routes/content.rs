//! A message's content, as both message routes take it (`POST /contacts/{id}/messages` and
//! `POST /sessions/{id}/messages`); the domain checks its values.

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
