//! The cryptography of personal data: per-contact data keys, and the key-encryption key (KEK)
//! that wraps them at rest.
//!
//! Both are XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`): an AEAD whose 192-bit nonces
//! can be drawn at random for every message without a counter to keep, so any instance may seal
//! with any key. Every ciphertext is bound to where it belongs by its associated data (the event
//! id, the contact, the event type, or the snapshot's place), so a sealed value copied into
//! another event does not open there.
//!
//! Without a KEK (`DATA_KEK`/`DATA_KEK_FILE` unset) the data keys are stored unwrapped, which is
//! for development only: the services say so at start and on `/readyz`.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

const NONCE_LEN: usize = 24;
/// How a sealed secret's stored text begins ([`Keyring::seal_secret`]).
const SEALED_SECRET: &str = "sealed:v1:";
/// `kek_id` of a data key stored without a KEK.
pub const UNWRAPPED: &str = "none";

#[derive(Debug, thiserror::Error)]
/// Why a key or a sealed value cannot be used.
pub enum CryptoError {
    /// Wrong key, or the ciphertext or its associated data were changed.
    #[error("a sealed value does not open with its key (tampered, or another key)")]
    Unopenable,
    #[error("a data key is wrapped by KEK {0}, which this process was not given (DATA_KEK, DATA_KEK_PREVIOUS)")]
    /// A stored data key names a KEK (its id) that is neither `DATA_KEK` nor one of
    /// `DATA_KEK_PREVIOUS`.
    UnknownKek(String),
    #[error("a key is malformed: {0}")]
    /// A KEK or a stored data key is not 32 bytes; the text says which.
    Malformed(&'static str),
    #[error("reading the KEK file: {0}")]
    /// `DATA_KEK_FILE` cannot be read.
    File(#[from] std::io::Error),
}

/// A contact's data key. Its bytes live only inside the cipher, which wipes them when dropped.
#[derive(Clone)]
pub struct DataKey(XChaCha20Poly1305);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// A new random key, and its bytes (to be wrapped and stored).
    pub fn generate() -> (Self, Zeroizing<[u8; 32]>) {
        let bytes = Zeroizing::new(<[u8; 32]>::from(XChaCha20Poly1305::generate_key(
            &mut OsRng,
        )));
        (Self::from_bytes(&bytes), bytes)
    }

    /// The key of these bytes (a stored key, unwrapped).
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(XChaCha20Poly1305::new(bytes.into()))
    }

    /// `nonce || ciphertext || tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.0, aad, plaintext)
    }

    /// The plaintext of what [`DataKey::seal`] made with this key and the same `aad`, wiped when
    /// dropped; [`CryptoError::Unopenable`] for anything else.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        open_with(&self.0, aad, sealed)
    }
}

fn seal_with(cipher: &XChaCha20Poly1305, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 seals any message under 256 GiB");
    let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    out
}

fn open_with(
    cipher: &XChaCha20Poly1305,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(CryptoError::Unopenable);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Unopenable)
}

/// A key-encryption key, named by a fingerprint of itself (stored beside every key it wraps, so
/// a rotation knows which keys are still under the old one).
#[derive(Clone)]
pub struct Kek {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek({})", self.id)
    }
}

impl Kek {
    /// From 32 bytes given as standard base64 (surrounding whitespace ignored).
    pub fn from_base64(encoded: &str) -> Result<Self, CryptoError> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(encoded.trim())
                .map_err(|_| CryptoError::Malformed("a KEK is 32 bytes in standard base64"))?,
        );
        let bytes: &[u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Malformed("a KEK is 32 bytes in standard base64"))?;
        let digest = Sha256::digest([b"ventros-kek-id".as_slice(), bytes].concat());
        Ok(Self {
            id: hex::encode(&digest[..8]),
            cipher: XChaCha20Poly1305::new(bytes.into()),
        })
    }

    /// From a file holding the base64 (`DATA_KEK_FILE`, e.g. a mounted secret); the text read is
    /// wiped once parsed.
    pub fn from_file(path: &Path) -> Result<Self, CryptoError> {
        let text = Zeroizing::new(std::fs::read_to_string(path)?);
        Self::from_base64(&text)
    }

    /// A fresh random KEK in base64 (for `replay-tool kek generate`).
    pub fn generate_base64() -> Zeroizing<String> {
        let key = Zeroizing::new(<[u8; 32]>::from(XChaCha20Poly1305::generate_key(
            &mut OsRng,
        )));
        Zeroizing::new(STANDARD.encode(key.as_slice()))
    }

    /// The KEK's fingerprint (16 hex digits of a SHA-256 of it): the `kek_id` stored beside every
    /// key it wraps. It says nothing of the KEK's bytes.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The KEKs a process holds: the current one (wraps new keys) and earlier ones still accepted
/// while a rotation is under way.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    current: Option<Kek>,
    previous: Vec<Kek>,
}

fn wrap_aad(contact_id: Uuid) -> Vec<u8> {
    [b"ventros/data-key/v1".as_slice(), contact_id.as_bytes()].concat()
}

impl Keyring {
    /// No KEK: data keys are stored unwrapped (development).
    pub fn unwrapped() -> Self {
        Self::default()
    }

    /// `current` wraps new keys (`None`: stored unwrapped, development); `previous` only unwrap,
    /// while a rotation moves their keys under `current`.
    pub fn new(current: Option<Kek>, previous: Vec<Kek>) -> Self {
        Self { current, previous }
    }

    /// Whether new data keys are wrapped (false: development mode).
    pub fn wraps(&self) -> bool {
        self.current.is_some()
    }

    /// The `kek_id` new keys are stored under.
    pub fn current_id(&self) -> &str {
        self.current.as_ref().map_or(UNWRAPPED, |k| k.id.as_str())
    }

    /// A data key as it is stored: `(kek_id, material)`.
    pub fn wrap(&self, contact_id: Uuid, key: &[u8; 32]) -> (String, Vec<u8>) {
        match &self.current {
            Some(kek) => (
                kek.id.clone(),
                seal_with(&kek.cipher, &wrap_aad(contact_id), key),
            ),
            None => (UNWRAPPED.to_owned(), key.to_vec()),
        }
    }

    /// A stored data key, unwrapped by whichever KEK it names.
    pub fn unwrap(
        &self,
        contact_id: Uuid,
        kek_id: &str,
        material: &[u8],
    ) -> Result<DataKey, CryptoError> {
        let bytes = self.unwrap_bytes(contact_id, kek_id, material)?;
        Ok(DataKey::from_bytes(&bytes))
    }

    /// Unwraps a stored key and wraps it again under the current KEK (a rotation step).
    pub fn rewrap(
        &self,
        contact_id: Uuid,
        kek_id: &str,
        material: &[u8],
    ) -> Result<(String, Vec<u8>), CryptoError> {
        let bytes = self.unwrap_bytes(contact_id, kek_id, material)?;
        Ok(self.wrap(contact_id, &bytes))
    }

    /// A service secret (a webhook's signing secret) as it is stored: sealed under the current
    /// KEK and bound to `aad` (what it belongs to), `sealed:v1:<kek_id>:<base64>`; as given when
    /// there is no KEK (development).
    pub fn seal_secret(&self, aad: &[u8], secret: &str) -> String {
        match &self.current {
            Some(kek) => format!(
                "{SEALED_SECRET}{}:{}",
                kek.id,
                STANDARD.encode(seal_with(&kek.cipher, aad, secret.as_bytes()))
            ),
            None => secret.to_owned(),
        }
    }

    /// A stored secret opened: a sealed one by the KEK it names, any other as it is (stored
    /// without a KEK, or before secrets were sealed).
    pub fn open_secret(&self, aad: &[u8], stored: &str) -> Result<Zeroizing<String>, CryptoError> {
        let Some(sealed) = stored.strip_prefix(SEALED_SECRET) else {
            return Ok(Zeroizing::new(stored.to_owned()));
        };
        let (kek_id, encoded) = sealed
            .split_once(':')
            .ok_or(CryptoError::Malformed("a sealed secret names its KEK"))?;
        let kek = self.known_kek(kek_id)?;
        let bytes = Zeroizing::new(
            STANDARD
                .decode(encoded)
                .map_err(|_| CryptoError::Malformed("a sealed secret is base64"))?,
        );
        let opened = open_with(&kek.cipher, aad, &bytes)?;
        String::from_utf8(opened.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Malformed("a secret is text"))
    }

    /// Whether a stored secret is as [`Keyring::seal_secret`] would store it now: sealed under
    /// the current KEK, or, without one, anything (a rotation moves the others).
    pub fn secret_is_current(&self, stored: &str) -> bool {
        match &self.current {
            Some(kek) => stored
                .strip_prefix(SEALED_SECRET)
                .and_then(|rest| rest.split_once(':'))
                .is_some_and(|(id, _)| id == kek.id),
            None => true,
        }
    }

    /// The KEK of this id: the current one or an earlier one still accepted.
    fn known_kek(&self, kek_id: &str) -> Result<&Kek, CryptoError> {
        self.current
            .iter()
            .chain(&self.previous)
            .find(|k| k.id == kek_id)
            .ok_or_else(|| CryptoError::UnknownKek(kek_id.to_owned()))
    }

    fn unwrap_bytes(
        &self,
        contact_id: Uuid,
        kek_id: &str,
        material: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let bytes = if kek_id == UNWRAPPED {
            Zeroizing::new(material.to_vec())
        } else {
            let kek = self.known_kek(kek_id)?;
            open_with(&kek.cipher, &wrap_aad(contact_id), material)?
        };
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Malformed("a data key is 32 bytes"))?;
        Ok(Zeroizing::new(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_its_associated_data() {
        let (key, _) = DataKey::generate();
        let (other, _) = DataKey::generate();
        let sealed = key.seal(b"event-1", b"Ana Souza");
        assert!(!sealed.windows(9).any(|w| w == b"Ana Souza"));
        assert_eq!(
            key.open(b"event-1", &sealed).unwrap().as_slice(),
            b"Ana Souza"
        );
        assert!(
            key.open(b"event-2", &sealed).is_err(),
            "moved to another event"
        );
        assert!(
            other.open(b"event-1", &sealed).is_err(),
            "another contact's key"
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(key.open(b"event-1", &tampered).is_err());
        assert!(key.open(b"event-1", &sealed[..10]).is_err());
        assert_ne!(
            sealed,
            key.seal(b"event-1", b"Ana Souza"),
            "a fresh nonce each time"
        );
    }

    #[test]
    fn a_secret_is_stored_sealed_bound_to_its_owner_and_opened_by_any_known_kek() {
        let old = Kek::from_base64(&Kek::generate_base64()).unwrap();
        let new = Kek::from_base64(&Kek::generate_base64()).unwrap();
        let before = Keyring::new(Some(old.clone()), Vec::new());
        let stored = before.seal_secret(b"hook-1", "whsec_abcdefghijklmnop");
        assert!(!stored.contains("whsec_"), "{stored}");
        assert!(before.secret_is_current(&stored));
        assert_eq!(
            before.open_secret(b"hook-1", &stored).unwrap().as_str(),
            "whsec_abcdefghijklmnop"
        );
        assert!(
            before.open_secret(b"hook-2", &stored).is_err(),
            "moved to another subscription"
        );
        // Mid-rotation: the new KEK seals, the old one still opens; without it, nothing opens.
        let during = Keyring::new(Some(new.clone()), vec![old]);
        assert!(!during.secret_is_current(&stored));
        assert_eq!(
            during.open_secret(b"hook-1", &stored).unwrap().as_str(),
            "whsec_abcdefghijklmnop"
        );
        let after = Keyring::new(Some(new), Vec::new());
        assert!(matches!(
            after.open_secret(b"hook-1", &stored),
            Err(CryptoError::UnknownKek(_))
        ));
        // Stored in the clear (development, or before secrets were sealed): read as it is, and
        // not current once there is a KEK.
        assert_eq!(
            after
                .open_secret(b"hook-1", "whsec_plain")
                .unwrap()
                .as_str(),
            "whsec_plain"
        );
        assert!(!after.secret_is_current("whsec_plain"));
        let development = Keyring::unwrapped();
        assert_eq!(development.seal_secret(b"hook-1", "whsec_x"), "whsec_x");
        assert!(development.secret_is_current("whsec_x"));
    }

    #[test]
    fn data_keys_are_wrapped_by_the_current_kek_and_unwrapped_by_any_known_one() {
        let old = Kek::from_base64(&Kek::generate_base64()).unwrap();
        let new = Kek::from_base64(&Kek::generate_base64()).unwrap();
        assert_ne!(old.id(), new.id());
        let contact = Uuid::now_v7();
        let (key, bytes) = DataKey::generate();
        let sealed = key.seal(b"x", b"secret");

        let before = Keyring::new(Some(old.clone()), vec![]);
        let (kek_id, material) = before.wrap(contact, &bytes);
        assert_eq!(kek_id, old.id());
        assert!(!material.windows(32).any(|w| w == bytes.as_slice()));
        assert!(
            before.unwrap(Uuid::now_v7(), &kek_id, &material).is_err(),
            "bound to its contact"
        );

        let rotating = Keyring::new(Some(new.clone()), vec![old.clone()]);
        let (new_id, new_material) = rotating.rewrap(contact, &kek_id, &material).unwrap();
        assert_eq!(new_id, new.id());
        let after = Keyring::new(Some(new), vec![]);
        let unwrapped = after.unwrap(contact, &new_id, &new_material).unwrap();
        assert_eq!(unwrapped.open(b"x", &sealed).unwrap().as_slice(), b"secret");
        assert!(matches!(
            after.unwrap(contact, &kek_id, &material),
            Err(CryptoError::UnknownKek(_))
        ));

        let dev = Keyring::unwrapped();
        let (none, raw) = dev.wrap(contact, &bytes);
        assert_eq!(
            (none.as_str(), raw.as_slice()),
            (UNWRAPPED, bytes.as_slice())
        );
        assert!(Kek::from_base64("c2hvcnQ=").is_err());
    }
}
