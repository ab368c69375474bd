//! Personal data in events: which fields are personal, and how an event's payload is stored with
//! them set apart.
//!
//! Every personal field of an event is sealed with its contact's own data key before it leaves
//! command-service, so that destroying the key (forgetting the contact) makes those fields
//! unreadable everywhere a copy went, history included, while the event itself and its public
//! fields stay. The list of fields is a domain decision and lives here, in one place; the
//! cryptography is the platform's (`platform::personal`).
//!
//! Stored forms, told apart by `event_version`:
//! - `v1`: every field in the clear. Read, never written: such rows become `v2` when
//!   `replay-tool encrypt-history` seals them, or when their contact is forgotten and they are
//!   redacted.
//! - `v2`: the public fields, plus the personal ones as one sealed string under [`SEALED_FIELD`]
//!   (absent when the event holds no personal value).
//!
//! [`Payload::from_stored`] is the upcaster: it reads either form into the current shape, a
//! [`Payload`] whose personal part is sealed, in the clear, or redacted for good.

use serde_json::{Map, Value};

use crate::error::EventDecodeError;

/// The key of a `v2` payload that holds its sealed personal fields.
pub const SEALED_FIELD: &str = "personal";

/// The personal fields of an event type (top-level keys of its payload).
///
/// Not personal, on purpose: tags and outcome tags (labels the project chooses, used to segment),
/// language, timezone and source channel (coarse, shared by many people), ids, times, counts and
/// sentiment. `contact.forgotten`'s reason stays readable so that an erasure is itself
/// accountable; the API documents that it must say why, not who.
pub fn fields(event_type: &str) -> &'static [&'static str] {
    match event_type {
        "contact.created" => &["name", "email", "phone", "external_id"],
        "contact.name_changed" => &["name", "previous"],
        "contact.email_set" => &["email", "previous"],
        "contact.phone_set" => &["phone", "previous"],
        "contact.external_id_set" => &["external_id", "previous"],
        "contact.profile_picture_updated" => &["url"],
        "contact.deleted" => &["reason"],
        "session.agent_assigned" => &["reason"],
        "session.summarized" => &["summary", "topics", "next_steps", "key_entities"],
        "session.message_recorded" => &["text", "media_url", "channel_message_id"],
        _ => &[],
    }
}

/// The personal part of a payload, as far as its reader can know it.
#[derive(Debug, Clone, PartialEq)]
pub enum Personal {
    /// The event type has no personal field.
    None,
    /// As stored: one ciphertext, to be opened with the contact's data key.
    Sealed(String),
    /// In the clear: just decided, opened with the contact's data key, or read from a `v1` row.
    Plain(Map<String, Value>),
    /// Unreadable for good: the contact's data key was destroyed.
    Redacted,
}

/// An event's payload in the current shape: its public fields, and its personal ones apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// The stored event type; it decides which fields are personal ([`fields`]).
    pub event_type: String,
    /// The payload's fields that are not personal, as stored.
    pub public: Map<String, Value>,
    /// The personal fields, in whatever state this reader has them.
    pub personal: Personal,
}

impl Payload {
    /// Splits a payload whose fields are all in the clear (a decided event, or a `v1` row).
    pub fn split(event_type: &str, data: Value) -> Self {
        let mut public = match data {
            Value::Object(map) => map,
            other => {
                // Every event is a struct; keep anything else whole rather than lose it.
                let mut map = Map::new();
                map.insert("value".to_owned(), other);
                map
            }
        };
        let personal: Map<String, Value> = fields(event_type)
            .iter()
            .map(|&name| (name.to_owned(), public.remove(name).unwrap_or(Value::Null)))
            .collect();
        // Nothing personal in it, nothing to seal: a message recorded for its metrics alone
        // needs no key and costs no cipher.
        let personal = if personal.values().all(Value::is_null) {
            Personal::None
        } else {
            Personal::Plain(personal)
        };
        Self {
            event_type: event_type.to_owned(),
            public,
            personal,
        }
    }

    /// The upcaster: a stored payload of either version in the current shape.
    pub fn from_stored(
        event_type: &str,
        event_version: &str,
        data: Value,
    ) -> Result<Self, EventDecodeError> {
        match event_version {
            "v1" => Ok(Self::split(event_type, data)),
            "v2" => {
                let Value::Object(mut public) = data else {
                    return Err(EventDecodeError::Shape {
                        event_type: event_type.to_owned(),
                        reason: "a v2 payload is a JSON object",
                    });
                };
                let names = fields(event_type);
                let personal = match (public.remove(SEALED_FIELD), names.is_empty()) {
                    // No personal value was given (see `split`), or the type had no personal
                    // field when it was stored (`session.message_recorded` before its content);
                    // a personal field in the clear is never stored so.
                    (None, _) if !names.iter().any(|n| public.contains_key(*n)) => Personal::None,
                    (Some(Value::String(sealed)), false) => Personal::Sealed(sealed),
                    // Scrubbed in place when its contact was forgotten (a `v1` row rewritten).
                    (Some(Value::Null), false) => Personal::Redacted,
                    _ => {
                        return Err(EventDecodeError::Shape {
                            event_type: event_type.to_owned(),
                            reason: "its sealed personal fields are missing or malformed",
                        })
                    }
                };
                Ok(Self {
                    event_type: event_type.to_owned(),
                    public,
                    personal,
                })
            }
            _ => Err(EventDecodeError::UnknownVersion {
                event_type: event_type.to_owned(),
                event_version: event_version.to_owned(),
            }),
        }
    }

    /// The stored (`v2`) form. The personal part must have been sealed (or redacted) first.
    pub fn into_stored(self) -> Result<Value, EventDecodeError> {
        let mut data = self.public;
        match self.personal {
            Personal::None => {}
            Personal::Sealed(sealed) => {
                data.insert(SEALED_FIELD.to_owned(), Value::String(sealed));
            }
            Personal::Redacted => {
                data.insert(SEALED_FIELD.to_owned(), Value::Null);
            }
            Personal::Plain(_) => {
                return Err(EventDecodeError::Shape {
                    event_type: self.event_type,
                    reason: "personal fields must be sealed before they are stored",
                })
            }
        }
        Ok(Value::Object(data))
    }

    /// Whether the personal fields are gone for good.
    pub fn is_redacted(&self) -> bool {
        matches!(self.personal, Personal::Redacted)
    }

    /// The payload with its personal fields back in place: their values when in the clear, `null`
    /// when redacted. `None` while they are still sealed.
    pub fn joined(&self) -> Option<Value> {
        self.clone().into_joined().1
    }

    /// [`Payload::joined`], taking the payload apart; with its event type.
    pub fn into_joined(self) -> (String, Option<Value>) {
        let mut data = self.public;
        match self.personal {
            Personal::None => {
                for &name in fields(&self.event_type) {
                    data.entry(name).or_insert(Value::Null);
                }
            }
            Personal::Plain(personal) => data.extend(personal),
            Personal::Redacted => {
                for &name in fields(&self.event_type) {
                    data.insert(name.to_owned(), Value::Null);
                }
            }
            Personal::Sealed(_) => return (self.event_type, None),
        }
        (self.event_type, Some(Value::Object(data)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_v1_payload_is_upcast_with_its_personal_fields_apart_and_joins_back_whole() {
        let data = json!({"name": "Ana", "email": "ana@example.com", "phone": null,
                          "external_id": null, "language": "pt", "tags": ["vip"]});
        let payload = Payload::from_stored("contact.created", "v1", data.clone()).unwrap();
        assert_eq!(
            payload.public,
            json!({"language": "pt", "tags": ["vip"]})
                .as_object()
                .unwrap()
                .clone()
        );
        let Personal::Plain(personal) = &payload.personal else {
            panic!("v1 is in the clear")
        };
        assert_eq!(personal["name"], "Ana");
        assert_eq!(payload.joined(), Some(data));
    }

    #[test]
    fn a_v2_payload_keeps_its_seal_until_opened_and_redacts_to_nulls() {
        let stored = json!({"language": "pt", "tags": [], "personal": "sealed-bytes"});
        let payload = Payload::from_stored("contact.created", "v2", stored.clone()).unwrap();
        assert_eq!(payload.personal, Personal::Sealed("sealed-bytes".into()));
        assert_eq!(payload.joined(), None);
        assert_eq!(payload.clone().into_stored().unwrap(), stored);
        let redacted = Payload {
            personal: Personal::Redacted,
            ..payload
        };
        assert_eq!(
            redacted.joined().unwrap(),
            json!({"language": "pt", "tags": [], "name": null, "email": null, "phone": null, "external_id": null})
        );
    }

    #[test]
    fn an_event_without_personal_fields_stores_no_seal_and_plain_fields_are_never_stored() {
        let tag = Payload::split("contact.tag_added", json!({"tag": "vip"}));
        assert_eq!(tag.personal, Personal::None);
        assert_eq!(tag.into_stored().unwrap(), json!({"tag": "vip"}));
        let plain = Payload::split(
            "contact.name_changed",
            json!({"name": "a", "previous": "b"}),
        );
        assert!(plain.into_stored().is_err());
        assert!(Payload::from_stored("contact.created", "v2", json!({"name": "x"})).is_err());
        assert!(Payload::from_stored("contact.tag_added", "v9", json!({})).is_err());
    }

    #[test]
    fn a_payload_with_no_personal_value_is_stored_unsealed_and_reads_back_with_nulls() {
        let bare = json!({"from_contact": true, "sent_at": "2026-01-01T00:00:00Z",
                          "text": null, "media_url": null, "channel_message_id": null});
        let payload = Payload::split("session.message_recorded", bare.clone());
        assert_eq!(payload.personal, Personal::None, "nothing to seal");
        let stored = payload.into_stored().unwrap();
        assert_eq!(
            stored,
            json!({"from_contact": true, "sent_at": "2026-01-01T00:00:00Z"})
        );
        // As stored by this release, or by the one before messages had content.
        let read = Payload::from_stored("session.message_recorded", "v2", stored).unwrap();
        assert_eq!(read.personal, Personal::None);
        assert_eq!(
            read.joined().unwrap(),
            bare,
            "the personal fields read as null"
        );
        let with_text = Payload::split(
            "session.message_recorded",
            json!({"from_contact": true, "text": "hello"}),
        );
        assert!(matches!(with_text.personal, Personal::Plain(_)));
        assert!(with_text.into_stored().is_err(), "text must be sealed");
    }
}
