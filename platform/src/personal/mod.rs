//! Personal data at the storage boundary: `contact_data_keys` (every SQL statement on it), and
//! sealing and opening the personal fields of events and snapshots with their contact's key.
//!
//! Which fields are personal is the domain's decision (`event_model::personal`). Here a payload's
//! personal part becomes one sealed string, `pd1:<contact id>:<base64url(nonce || ciphertext)>`,
//! bound by its associated data to its event (id and type) and contact. The string names its
//! contact so that any copy of a payload (an audit row, a dead letter, a broker message) can be
//! opened, or found unopenable, without further context.
//!
//! A key's three states are told apart: present (open it), destroyed (the contact was forgotten:
//! the fields are redacted, `null`, for good) and missing (a fault: reading fails, nothing is
//! guessed). Readers of history (projections, the replay tool, queries) read keys as they are
//! now, in the transaction they read the events in; only command-service caches keys, and only
//! keys it has seen committed.

use event_model::EventDecodeError;
use uuid::Uuid;

use crate::crypto::{CryptoError, DataKey};

mod keys;
mod seal;
#[cfg(test)]
mod tests;

pub use keys::*;
pub use seal::*;

const SEALED_PREFIX: &str = "pd1:";

/// Why personal data cannot be sealed or opened, or a data key read or stored.
#[derive(Debug, thiserror::Error)]
pub enum PersonalError {
    /// Sealed data of a contact that has no key row: never guessed to be redacted.
    #[error("no data key for contact {0}")]
    MissingKey(Uuid),
    /// A sealed string is not `pd1:<contact id>:<base64url>`, or what it opens to is not the
    /// JSON it was sealed from.
    #[error("sealed personal data is malformed")]
    Malformed,
    /// A sealed part names another contact than its event's: it was copied from another event.
    #[error("sealed personal data names contact {found}, its event belongs to {expected}")]
    WrongContact {
        /// The contact the sealed string names.
        found: Uuid,
        /// The contact the event belongs to.
        expected: Uuid,
    },
    /// A sealed value does not open with its key, or the key cannot be unwrapped.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A payload does not decode as its event type.
    #[error(transparent)]
    Decode(#[from] EventDecodeError),
    /// A statement on `contact_data_keys` failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A contact's key as readers find it.
#[derive(Debug, Clone)]
pub enum KeyState {
    /// The key, unwrapped: the contact's data opens.
    Active(DataKey),
    /// The contact was forgotten.
    Destroyed,
}
