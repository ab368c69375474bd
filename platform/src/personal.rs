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

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use dashmap::DashMap;
use event_model::{DomainEvent, EventDecodeError, EventEnvelope, Payload, Personal};
use serde_json::{json, Map, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::crypto::{CryptoError, DataKey, Keyring};

const SEALED_PREFIX: &str = "pd1:";

#[derive(Debug, thiserror::Error)]
pub enum PersonalError {
    /// Sealed data of a contact that has no key row: never guessed to be redacted.
    #[error("no data key for contact {0}")]
    MissingKey(Uuid),
    #[error("sealed personal data is malformed")]
    Malformed,
    #[error("sealed personal data names contact {found}, its event belongs to {expected}")]
    WrongContact { found: Uuid, expected: Uuid },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Decode(#[from] EventDecodeError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A contact's key as readers find it.
#[derive(Debug, Clone)]
pub enum KeyState {
    Active(DataKey),
    /// The contact was forgotten.
    Destroyed,
}

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
    pub payload: Payload,
    pub event: DomainEvent,
}

impl Opened {
    /// The payload with its personal fields in place (`null` when redacted).
    pub fn data(&self) -> Value {
        self.payload
            .joined()
            .expect("an opened payload has no sealed part")
    }

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
    pub fn single(contact_id: Uuid, state: KeyState) -> Self {
        Self {
            keys: HashMap::from([(contact_id, state)]),
        }
    }

    pub fn get(&self, contact_id: Uuid) -> Option<&KeyState> {
        self.keys.get(&contact_id)
    }

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
            // Written in the clear by the previous release: still redacted once forgotten.
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
/// sealed form when it has the sealed field, else written in the clear by the previous release.
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
    /// Written before snapshots were sealed.
    Plain(Value),
    Sealed {
        contact_id: Uuid,
        ciphertext: Vec<u8>,
    },
}

impl StoredSnapshot {
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

#[derive(sqlx::FromRow)]
struct KeyRow {
    contact_id: Uuid,
    key_material: Option<Vec<u8>>,
    kek_id: String,
}

/// The data keys of a process: its KEKs, the SQL of `contact_data_keys`, and (command-service)
/// a cache of committed keys.
#[derive(Clone)]
pub struct DataKeys {
    keyring: Arc<Keyring>,
    cache: Arc<DashMap<Uuid, DataKey>>,
    capacity: usize,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeys")
            .field("kek", &self.keyring.current_id())
            .field("cached", &self.cache.len())
            .finish()
    }
}

/// A contact's new data key as it is stored: wrapped by the current KEK.
#[derive(Clone)]
pub struct NewKey {
    pub contact_id: Uuid,
    material: Vec<u8>,
    kek_id: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("contact_id", &self.contact_id)
            .field("kek_id", &self.kek_id)
            .finish_non_exhaustive()
    }
}

/// A key to seal a contact's new events with.
pub struct WritingKey {
    pub key: DataKey,
    /// Inserted by the caller's transaction: cache it only once that has committed
    /// ([`DataKeys::remember`]).
    pub created: bool,
}

impl DataKeys {
    /// `cache_capacity` 0: every key is read from the database.
    pub fn new(keyring: Keyring, cache_capacity: usize) -> Self {
        Self {
            keyring: Arc::new(keyring),
            cache: Arc::new(DashMap::new()),
            capacity: cache_capacity,
        }
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    fn state_of(&self, row: KeyRow) -> Result<KeyState, PersonalError> {
        match row.key_material {
            None => Ok(KeyState::Destroyed),
            Some(material) => Ok(KeyState::Active(self.keyring.unwrap(
                row.contact_id,
                &row.kek_id,
                &material,
            )?)),
        }
    }

    /// The statement part that reads the key rows of the contacts in `ids` (an SQL expression of
    /// a `uuid[]`): `contact_id, key_material, kek_id`, for a reader that reads keys together
    /// with other rows in one statement and makes the set with [`DataKeys::set_of`].
    pub fn rows_sql(ids: &str) -> String {
        format!(
            "select contact_id, key_material, kek_id from contact_data_keys where contact_id = any({ids})"
        )
    }

    /// The key set of rows read with [`DataKeys::rows_sql`]: (contact, key material, KEK id).
    pub fn set_of(
        &self,
        rows: impl IntoIterator<Item = (Uuid, Option<Vec<u8>>, String)>,
    ) -> Result<KeySet, PersonalError> {
        let mut set = KeySet::default();
        for (contact_id, key_material, kek_id) in rows {
            let state = self.state_of(KeyRow {
                contact_id,
                key_material,
                kek_id,
            })?;
            set.insert(contact_id, state);
        }
        Ok(set)
    }

    /// The keys of these contacts as they are now (never cached: a reader of history must see a
    /// destruction at once). Contacts without a key row are absent from the set.
    pub async fn load(
        &self,
        conn: &mut PgConnection,
        contact_ids: &[Uuid],
    ) -> Result<KeySet, PersonalError> {
        if contact_ids.is_empty() {
            return Ok(KeySet::default());
        }
        let rows: Vec<KeyRow> = sqlx::query_as(&Self::rows_sql("$1"))
            .bind(contact_ids)
            .fetch_all(&mut *conn)
            .await?;
        let mut set = KeySet::default();
        for row in rows {
            let id = row.contact_id;
            set.insert(id, self.state_of(row)?);
        }
        Ok(set)
    }

    /// The keys the given envelopes need (their contacts'), read as in [`DataKeys::load`]. Every
    /// contact of the batch, not only those of events with personal fields: an event filled in
    /// from the store ahead of them (a gap) is opened with the same keys.
    pub async fn load_for<'a>(
        &self,
        conn: &mut PgConnection,
        envelopes: impl IntoIterator<Item = &'a EventEnvelope>,
    ) -> Result<KeySet, PersonalError> {
        let mut ids: Vec<Uuid> = envelopes.into_iter().map(|e| e.contact_id).collect();
        ids.sort_unstable();
        ids.dedup();
        self.load(conn, &ids).await
    }

    /// A contact's key if this process holds it (a key it saw committed), without asking the
    /// database.
    pub fn cached(&self, contact_id: Uuid) -> Option<DataKey> {
        self.cache.get(&contact_id).map(|key| key.clone())
    }

    /// A contact's key for the command path: cached, else read in the caller's transaction.
    /// `None` when it has no key row (a contact of the previous release, or none yet).
    pub async fn current(
        &self,
        conn: &mut PgConnection,
        contact_id: Uuid,
    ) -> Result<Option<KeyState>, PersonalError> {
        if let Some(key) = self.cache.get(&contact_id) {
            return Ok(Some(KeyState::Active(key.clone())));
        }
        let set = self.load(conn, &[contact_id]).await?;
        let state = set.get(contact_id).cloned();
        if let Some(KeyState::Active(key)) = &state {
            self.remember(contact_id, key);
        }
        Ok(state)
    }

    /// The key to seal a contact's new events with, created in the caller's transaction when
    /// the contact has none. `None` when it was destroyed (nothing may be sealed for it again).
    pub async fn for_writing(
        &self,
        conn: &mut PgConnection,
        tenant_id: &str,
        contact_id: Uuid,
    ) -> Result<Option<WritingKey>, PersonalError> {
        match self.current(conn, contact_id).await? {
            Some(KeyState::Active(key)) => {
                return Ok(Some(WritingKey {
                    key,
                    created: false,
                }))
            }
            Some(KeyState::Destroyed) => return Ok(None),
            None => {}
        }
        let (key, new) = self.make(contact_id);
        if Self::store_new(conn, tenant_id, &[&new]).await? == 1 {
            return Ok(Some(WritingKey { key, created: true }));
        }
        // Another command created it first (and has committed: the insert waited for it).
        match self.load(conn, &[contact_id]).await?.get(contact_id) {
            Some(KeyState::Active(key)) => Ok(Some(WritingKey {
                key: key.clone(),
                created: false,
            })),
            Some(KeyState::Destroyed) => Ok(None),
            None => Err(PersonalError::MissingKey(contact_id)),
        }
    }

    /// A new key for a contact, and the row that stores it wrapped ([`DataKeys::store_new`]).
    /// Nothing may be sealed with it for good until that row has committed.
    pub fn make(&self, contact_id: Uuid) -> (DataKey, NewKey) {
        let (key, bytes) = DataKey::generate();
        let (kek_id, material) = self.keyring.wrap(contact_id, &bytes);
        (
            key,
            NewKey {
                contact_id,
                material,
                kek_id,
            },
        )
    }

    /// Stores new keys in one statement, in the caller's transaction; answers how many were
    /// stored. A contact that has a key row already keeps it (it was created, or destroyed,
    /// first): the caller sealed with a key that will never be stored and must start over.
    pub async fn store_new(
        conn: &mut PgConnection,
        tenant_id: &str,
        keys: &[&NewKey],
    ) -> Result<u64, PersonalError> {
        let contacts: Vec<Uuid> = keys.iter().map(|k| k.contact_id).collect();
        let materials: Vec<&[u8]> = keys.iter().map(|k| k.material.as_slice()).collect();
        let keks: Vec<&str> = keys.iter().map(|k| k.kek_id.as_str()).collect();
        Ok(sqlx::query(
            "insert into contact_data_keys (contact_id, tenant_id, key_material, kek_id) \
             select c, $2, m, k from unnest($1::uuid[], $3::bytea[], $4::text[]) as n(c, m, k) \
             on conflict (contact_id) do nothing",
        )
        .bind(&contacts)
        .bind(tenant_id)
        .bind(&materials)
        .bind(&keks)
        .execute(&mut *conn)
        .await?
        .rows_affected())
    }

    /// Caches a key known to be committed.
    pub fn remember(&self, contact_id: Uuid, key: &DataKey) {
        if self.capacity == 0 {
            return;
        }
        if self.cache.len() >= self.capacity {
            // Drop about a tenth, arbitrarily: cheaper than tracking recency, and a miss costs
            // one indexed read.
            let mut seen = 0usize;
            self.cache.retain(|_, _| {
                seen += 1;
                !seen.is_multiple_of(10)
            });
        }
        self.cache.insert(contact_id, key.clone());
    }

    pub fn evict(&self, contact_id: Uuid) {
        self.cache.remove(&contact_id);
    }

    /// Destroys a contact's key in the caller's transaction (forgetting it). The row stays as
    /// the tombstone that makes readers redact instead of fail. The caller evicts the key from
    /// its cache ([`DataKeys::evict`]) before the transaction and after it commits.
    pub async fn destroy(
        conn: &mut PgConnection,
        tenant_id: &str,
        contact_id: Uuid,
    ) -> Result<(), PersonalError> {
        sqlx::query(
            "insert into contact_data_keys (contact_id, tenant_id, key_material, kek_id, destroyed_at) \
             values ($1, $2, null, 'none', now()) \
             on conflict (contact_id) do update set key_material = null, destroyed_at = coalesce(contact_data_keys.destroyed_at, now())",
        )
        .bind(contact_id)
        .bind(tenant_id)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

impl DataKeys {
    /// Wraps up to `limit` keys that are not under the current KEK (another KEK, or none) anew
    /// under it, in the caller's transaction; returns how many. A rotation step: repeat until 0.
    pub async fn rewrap_batch(
        &self,
        conn: &mut PgConnection,
        limit: i64,
    ) -> Result<u64, PersonalError> {
        if !self.keyring.wraps() {
            return Ok(0);
        }
        let rows: Vec<KeyRow> = sqlx::query_as(
            "select contact_id, key_material, kek_id from contact_data_keys \
              where key_material is not null and kek_id <> $1 \
              order by contact_id limit $2 for update skip locked",
        )
        .bind(self.keyring.current_id())
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut materials = Vec::with_capacity(rows.len());
        for row in &rows {
            let material = row.key_material.as_deref().unwrap_or_default();
            let (_, rewrapped) = self.keyring.rewrap(row.contact_id, &row.kek_id, material)?;
            ids.push(row.contact_id);
            materials.push(rewrapped);
        }
        sqlx::query(
            "update contact_data_keys k set key_material = n.material, kek_id = $3 \
               from unnest($1::uuid[], $2::bytea[]) as n(id, material) \
              where k.contact_id = n.id and k.key_material is not null",
        )
        .bind(&ids)
        .bind(&materials)
        .bind(self.keyring.current_id())
        .execute(&mut *conn)
        .await?;
        Ok(ids.len() as u64)
    }

    /// Keys per KEK (`none` = unwrapped), and destroyed ones: for `replay-tool kek status`.
    pub async fn census(conn: &mut PgConnection) -> Result<Vec<(String, i64)>, PersonalError> {
        Ok(sqlx::query_as(
            "select case when key_material is null then 'destroyed' else kek_id::text end, count(*) \
               from contact_data_keys group by 1 order by 1",
        )
        .fetch_all(conn)
        .await?)
    }
}

/// Says at start how data keys are protected; a warning in development mode.
pub fn log_key_protection(keyring: &Keyring) {
    if keyring.wraps() {
        tracing::info!(kek = keyring.current_id(), "{}", key_protection(keyring));
    } else {
        tracing::warn!("{}", key_protection(keyring));
    }
}

/// How the process holds its keys, for logs and `/readyz`.
pub fn key_protection(keyring: &Keyring) -> &'static str {
    if keyring.wraps() {
        "data keys wrapped by DATA_KEK"
    } else {
        "DEVELOPMENT: no DATA_KEK, data keys are stored unwrapped"
    }
}

#[cfg(test)]
mod tests {
    use event_model::{ContactEvent, SessionEvent};

    use super::*;

    fn created(name: &str) -> DomainEvent {
        DomainEvent::Contact(ContactEvent::Created {
            name: Some(name.into()),
            email: Some("ana@example.com".into()),
            phone: None,
            external_id: None,
            source_channel: None,
            language: "pt".into(),
            timezone: None,
            tags: vec!["vip".into()],
        })
    }

    fn envelope(
        event_id: Uuid,
        contact_id: Uuid,
        event: &DomainEvent,
        data: Value,
    ) -> EventEnvelope {
        EventEnvelope {
            event_id,
            aggregate_id: contact_id,
            aggregate_type: event.aggregate_type(),
            event_type: event.event_type().into(),
            event_version: event.event_version().into(),
            sequence_number: 1,
            position: 1,
            tenant_id: "t".into(),
            project_id: Uuid::nil(),
            contact_id,
            user_id: None,
            occurred_at: chrono::Utc::now(),
            recorded_at: chrono::Utc::now(),
            causation_id: None,
            correlation_id: None,
            data,
        }
    }

    #[test]
    fn a_sealed_event_opens_with_its_key_and_is_redacted_once_the_key_is_destroyed() {
        let (key, _) = DataKey::generate();
        let contact = Uuid::now_v7();
        let event_id = Uuid::now_v7();
        let event = created("Ana Souza");
        let stored = seal_event(&key, contact, event_id, &event).unwrap();
        let text = stored.to_string();
        assert!(
            !text.contains("Ana Souza") && !text.contains("ana@example.com"),
            "{text}"
        );
        assert!(text.contains("vip"), "public fields stay readable: {text}");
        assert_eq!(sealed_contact(&stored), Some(contact));

        let env = envelope(event_id, contact, &event, stored.clone());
        let opened = KeySet::single(contact, KeyState::Active(key.clone()))
            .open(&env)
            .unwrap();
        assert_eq!(opened.event, event);
        assert!(!opened.redacted());

        let gone = KeySet::single(contact, KeyState::Destroyed)
            .open(&env)
            .unwrap();
        assert!(gone.redacted());
        assert_eq!(gone.data()["name"], Value::Null);
        assert_eq!(gone.data()["tags"], json!(["vip"]));
        let DomainEvent::Contact(ContactEvent::Created { name, email, .. }) = gone.event else {
            panic!("a contact.created")
        };
        assert_eq!((name, email), (None, None));

        assert!(matches!(
            KeySet::default().open(&env),
            Err(PersonalError::MissingKey(c)) if c == contact
        ));
        // Moved into another event, or another contact's envelope: refused.
        let moved = envelope(Uuid::now_v7(), contact, &event, stored.clone());
        assert!(KeySet::single(contact, KeyState::Active(key.clone()))
            .open(&moved)
            .is_err());
        let other = Uuid::now_v7();
        let elsewhere = envelope(event_id, other, &event, stored);
        assert!(matches!(
            KeySet::single(other, KeyState::Active(key)).open(&elsewhere),
            Err(PersonalError::WrongContact { .. })
        ));
    }

    #[test]
    fn an_event_without_personal_fields_needs_no_key_and_a_plain_v1_one_is_redacted_when_forgotten()
    {
        let contact = Uuid::now_v7();
        let tag = DomainEvent::Contact(ContactEvent::TagAdded { tag: "vip".into() });
        let stored = seal_event(&DataKey::generate().0, contact, Uuid::now_v7(), &tag).unwrap();
        assert_eq!(stored, json!({"tag": "vip"}));
        let env = envelope(Uuid::now_v7(), contact, &tag, stored);
        assert_eq!(KeySet::default().open(&env).unwrap().event, tag);

        let summary = DomainEvent::Session(SessionEvent::Summarized {
            summary: Some("Ana wants a refund".into()),
            sentiment: None,
            sentiment_score: None,
            topics: Some(vec!["refund".into()]),
            next_steps: Some(vec![]),
            key_entities: None,
        });
        let mut v1 = envelope(Uuid::now_v7(), contact, &summary, summary.data());
        v1.event_version = "v1".into();
        assert_eq!(KeySet::default().open(&v1).unwrap().event, summary);
        let forgotten = KeySet::single(contact, KeyState::Destroyed)
            .open(&v1)
            .unwrap();
        assert!(forgotten.redacted());
        assert_eq!(forgotten.data()["summary"], Value::Null);
    }

    #[test]
    fn a_sealed_snapshot_opens_at_its_own_place_only() {
        let (key, _) = DataKey::generate();
        let (contact, session) = (Uuid::now_v7(), Uuid::now_v7());
        let state = json!({"schema_version": 1, "state": {"name": "Ana"}});
        let sealed = seal_snapshot(&key, contact, session, 100, &state);
        assert!(!sealed.to_string().contains("Ana"));
        let active = KeyState::Active(key);
        let open = |at| {
            StoredSnapshot::parse(sealed.clone())
                .unwrap()
                .open(&active, session, at)
        };
        assert_eq!(open(100).unwrap(), Some(state.clone()));
        assert!(open(200).is_err());
        let forgotten = StoredSnapshot::parse(sealed.clone())
            .unwrap()
            .open(&KeyState::Destroyed, session, 100)
            .unwrap();
        assert_eq!(forgotten, None);
    }
}
