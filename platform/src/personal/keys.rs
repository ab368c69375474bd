//! `contact_data_keys`: every SQL statement on it, the keys' cache in command-service, and
//! their protection by the key-encryption key.

use std::sync::Arc;

use dashmap::DashMap;
use event_model::EventEnvelope;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::crypto::{DataKey, Keyring};

use super::{KeySet, KeyState, PersonalError};

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
    /// The contact the key is for; its wrapping is bound to it.
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
    /// The key to seal with.
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

    /// The KEKs the keys are wrapped and unwrapped with.
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
    /// `None` when it has no key row: a contact whose events are all in the clear (`v1`), or
    /// one whose first key is yet to be made.
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
        Ok(sqlx::query!(
            "insert into contact_data_keys (contact_id, tenant_id, key_material, kek_id) \
             select c, $2, m, k from unnest($1::uuid[], $3::bytea[], $4::text[]) as n(c, m, k) \
             on conflict (contact_id) do nothing",
            &contacts,
            tenant_id,
            &materials as &[&[u8]],
            &keks as &[&str],
        )
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

    /// Drops a contact's key from this process's cache (see [`DataKeys::destroy`]).
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
        sqlx::query!(
            "insert into contact_data_keys (contact_id, tenant_id, key_material, kek_id, destroyed_at) \
             values ($1, $2, null, 'none', now()) \
             on conflict (contact_id) do update set key_material = null, destroyed_at = coalesce(contact_data_keys.destroyed_at, now())",
            contact_id,
            tenant_id,
        )
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
        let rows = sqlx::query_as!(
            KeyRow,
            "select contact_id, key_material, kek_id from contact_data_keys \
              where key_material is not null and kek_id <> $1 \
              order by contact_id limit $2 for update skip locked",
            self.keyring.current_id(),
            limit,
        )
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
        sqlx::query!(
            "update contact_data_keys k set key_material = n.material, kek_id = $3 \
               from unnest($1::uuid[], $2::bytea[]) as n(id, material) \
              where k.contact_id = n.id and k.key_material is not null",
            &ids,
            &materials,
            self.keyring.current_id(),
        )
        .execute(&mut *conn)
        .await?;
        Ok(ids.len() as u64)
    }

    /// Keys per KEK (`none` = unwrapped), and destroyed ones: for `replay-tool kek status`.
    pub async fn census(conn: &mut PgConnection) -> Result<Vec<(String, i64)>, PersonalError> {
        Ok(sqlx::query!(
            r#"select case when key_material is null then 'destroyed' else kek_id::text end as "kek!", count(*) as "keys!"
                 from contact_data_keys group by 1 order by 1"#,
        )
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(|row| (row.kek, row.keys))
        .collect())
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
