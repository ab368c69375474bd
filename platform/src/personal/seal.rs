//! Sealing and opening the personal fields of events and snapshots with their contact's key.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use event_model::{DomainEvent, EventEnvelope, Payload, Personal};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::crypto::DataKey;

use super::{KeyState, PersonalError, SEALED_PREFIX};

fn event_aad(event_id: Uuid, contact_id: Uuid, event_type: &str) -> Vec<u8> {
    [
        b"ventros/event/v1".as_slice(),
        event_id.as_bytes(),
        contact_id.as_bytes(),
        event_type.as_bytes(),
    ]
    .concat()
}

fn snapshot_aad(aggregate_id: Uuid, last_sequence_number: i64, contact_id: Uuid) -> Vec<u8> {
    [
        b"ventros/snapshot/v1".as_slice(),
        aggregate_id.as_bytes(),
        &last_sequence_number.to_be_bytes(),
        contact_id.as_bytes(),
    ]
    .concat()
}

fn seal_string(key: &DataKey, contact_id: Uuid, aad: &[u8], plaintext: &[u8]) -> String {
    format!(
        "{SEALED_PREFIX}{contact_id}:{}",
        URL_SAFE_NO_PAD.encode(key.seal(aad, plaintext))
    )
}

/// The contact a sealed string names, and its ciphertext.
fn parse_sealed(sealed: &str) -> Result<(Uuid, Vec<u8>), PersonalError> {
    let rest = sealed
        .strip_prefix(SEALED_PREFIX)
        .ok_or(PersonalError::Malformed)?;
    let (contact, data) = rest.split_once(':').ok_or(PersonalError::Malformed)?;
    let contact = Uuid::parse_str(contact).map_err(|_| PersonalError::Malformed)?;
    let data = URL_SAFE_NO_PAD
        .decode(data)
        .map_err(|_| PersonalError::Malformed)?;
    Ok((contact, data))
}

/// The contact whose key a sealed payload needs, if it has sealed fields.
pub fn sealed_contact(data: &Value) -> Option<Uuid> {
    let sealed = data.get(event_model::personal::SEALED_FIELD)?.as_str()?;
    parse_sealed(sealed).ok().map(|(contact, _)| contact)
}

/// The stored (`v2`) form of a decided event: its personal fields sealed with its contact's key.
pub fn seal_event(
    key: &DataKey,
    contact_id: Uuid,
    event_id: Uuid,
    event: &DomainEvent,
) -> Result<Value, PersonalError> {
    seal_payload(key, contact_id, event_id, event.payload())
}

/// The stored (`v2`) form of a payload whose personal fields are in the clear.
pub fn seal_payload(
    key: &DataKey,
    contact_id: Uuid,
    event_id: Uuid,
    mut payload: Payload,
) -> Result<Value, PersonalError> {
    if let Personal::Plain(fields) = &payload.personal {
        let plaintext =
            zeroize::Zeroizing::new(serde_json::to_vec(fields).expect("a JSON map serialises"));
        payload.personal = Personal::Sealed(seal_string(
            key,
            contact_id,
            &event_aad(event_id, contact_id, &payload.event_type),
            &plaintext,
        ));
    }
    Ok(payload.into_stored()?)
}

/// An event as a reader sees it: its payload with the personal fields in the clear or redacted,
/// and the typed event.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The payload, its personal fields in the clear or redacted.
    pub payload: Payload,
    /// The typed event, decoded from that payload.
    pub event: DomainEvent,
}

impl Opened {
    /// The payload with its personal fields in place (`null` when redacted).
    pub fn data(&self) -> Value {
        self.payload
            .joined()
            .expect("an opened payload has no sealed part")
    }

    /// Whether the personal fields are gone for good (the contact was forgotten).
    pub fn redacted(&self) -> bool {
        self.payload.is_redacted()
    }
}

/// The data keys a reader holds for the events in front of it.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<Uuid, KeyState>,
}

impl KeySet {
    /// A set of one contact's key: for a reader whose events all belong to that contact.
    pub fn single(contact_id: Uuid, state: KeyState) -> Self {
        Self {
            keys: HashMap::from([(contact_id, state)]),
        }
    }

    /// The contact's key; `None` when the set has no row for it (its sealed data is then
    /// [`PersonalError::MissingKey`], never guessed to be redacted).
    pub fn get(&self, contact_id: Uuid) -> Option<&KeyState> {
        self.keys.get(&contact_id)
    }

    /// Adds a contact's key, or replaces the one the set holds.
    pub fn insert(&mut self, contact_id: Uuid, state: KeyState) {
        self.keys.insert(contact_id, state);
    }

    /// A payload in the current shape with its personal part opened, or redacted when the
    /// contact was forgotten. `contact_id`: the contact the event belongs to, when the reader
    /// knows it (a sealed part must name the same one).
    pub fn open_payload(
        &self,
        event_id: Uuid,
        contact_id: Option<Uuid>,
        mut payload: Payload,
    ) -> Result<Payload, PersonalError> {
        payload.personal = match std::mem::replace(&mut payload.personal, Personal::None) {
            Personal::Sealed(sealed) => {
                let (named, ciphertext) = parse_sealed(&sealed)?;
                if let Some(expected) = contact_id.filter(|c| *c != named) {
                    return Err(PersonalError::WrongContact {
                        found: named,
                        expected,
                    });
                }
                match self.keys.get(&named) {
                    Some(KeyState::Active(key)) => {
                        let plaintext = key.open(
                            &event_aad(event_id, named, &payload.event_type),
                            &ciphertext,
                        )?;
                        let fields: Map<String, Value> = serde_json::from_slice(&plaintext)
                            .map_err(|_| PersonalError::Malformed)?;
                        Personal::Plain(fields)
                    }
                    Some(KeyState::Destroyed) => Personal::Redacted,
                    None => return Err(PersonalError::MissingKey(named)),
                }
            }
            // In the clear (`v1`, not yet sealed by `encrypt-history`): still redacted once
            // forgotten.
            Personal::Plain(fields) => match contact_id.and_then(|c| self.keys.get(&c)) {
                Some(KeyState::Destroyed) => Personal::Redacted,
                _ => Personal::Plain(fields),
            },
            other => other,
        };
        Ok(payload)
    }

    /// The typed event of a stored event, its personal fields opened (or redacted): [`Self::open`]
    /// for a reader that needs no payload (one copy of the event's data fewer).
    pub fn open_event(&self, envelope: &EventEnvelope) -> Result<DomainEvent, PersonalError> {
        let payload = self.open_payload(
            envelope.event_id,
            Some(envelope.contact_id),
            envelope.payload()?,
        )?;
        Ok(DomainEvent::from_owned_payload(
            envelope.aggregate_type,
            payload,
        )?)
    }

    /// Opens a stored event.
    pub fn open(&self, envelope: &EventEnvelope) -> Result<Opened, PersonalError> {
        let payload = self.open_payload(
            envelope.event_id,
            Some(envelope.contact_id),
            envelope.payload()?,
        )?;
        let event = DomainEvent::from_payload(envelope.aggregate_type, &payload)?;
        Ok(Opened { payload, event })
    }
}

/// A copy of an event's payload kept without its version (`domain_event_logs.payload`): the
/// sealed form when it has the sealed field, else the `v1` form, every field in the clear.
pub fn logged_payload(event_type: &str, data: Value) -> Result<Payload, PersonalError> {
    let version = if data.get(event_model::personal::SEALED_FIELD).is_some() {
        event_model::event::CURRENT_EVENT_VERSION
    } else {
        event_model::event::PLAIN_EVENT_VERSION
    };
    Ok(Payload::from_stored(event_type, version, data)?)
}

/// Seals an aggregate's snapshot (`contact_snapshots.snapshot_data`) with its contact's key.
pub fn seal_snapshot(
    key: &DataKey,
    contact_id: Uuid,
    aggregate_id: Uuid,
    last_sequence_number: i64,
    state: &Value,
) -> Value {
    let plaintext =
        zeroize::Zeroizing::new(serde_json::to_vec(state).expect("a JSON value serialises"));
    json!({
        "sealed": seal_string(
            key,
            contact_id,
            &snapshot_aad(aggregate_id, last_sequence_number, contact_id),
            &plaintext,
        )
    })
}

/// What a stored snapshot holds.
pub enum StoredSnapshot {
    /// In the clear: not yet sealed by `replay-tool encrypt-history`.
    Plain(Value),
    /// Sealed with its contact's key ([`seal_snapshot`]).
    Sealed {
        /// The contact whose key opens it, as the sealed string names it.
        contact_id: Uuid,
        /// `nonce || ciphertext || tag`, bound to the aggregate, its sequence number and the
        /// contact.
        ciphertext: Vec<u8>,
    },
}

impl StoredSnapshot {
    /// Tells the two forms apart: `{"sealed": "pd1:..."}` is sealed (a sealed string that does
    /// not parse is [`PersonalError::Malformed`]), anything else is in the clear.
    pub fn parse(data: Value) -> Result<Self, PersonalError> {
        match data.get("sealed").and_then(Value::as_str) {
            Some(sealed) => {
                let (contact_id, ciphertext) = parse_sealed(sealed)?;
                Ok(Self::Sealed {
                    contact_id,
                    ciphertext,
                })
            }
            None => Ok(Self::Plain(data)),
        }
    }

    /// The snapshot's state, or `None` when its contact was forgotten (fold from the events).
    pub fn open(
        self,
        key: &KeyState,
        aggregate_id: Uuid,
        last_sequence_number: i64,
    ) -> Result<Option<Value>, PersonalError> {
        match (self, key) {
            (Self::Plain(data), _) => Ok(Some(data)),
            (Self::Sealed { .. }, KeyState::Destroyed) => Ok(None),
            (
                Self::Sealed {
                    contact_id,
                    ciphertext,
                },
                KeyState::Active(key),
            ) => {
                let plaintext = key.open(
                    &snapshot_aad(aggregate_id, last_sequence_number, contact_id),
                    &ciphertext,
                )?;
                Ok(Some(
                    serde_json::from_slice(&plaintext).map_err(|_| PersonalError::Malformed)?,
                ))
            }
        }
    }
}
