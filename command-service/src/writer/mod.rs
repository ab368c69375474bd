//! Group commit: the writes of concurrent commands go to PostgreSQL together, in one transaction
//! and one WAL flush.
//!
//! A command loads and decides on its own (see [`crate::commands`]); what it decided to store is
//! a [`Write`], handed to the [`GroupWriter`]. A few writer tasks take the writes that queued
//! while they were busy, up to `max_group` at a time, and store each group in one transaction:
//! per tenant (row-level security checks every row against the transaction's tenant), the new
//! data keys in one statement, all the events and their outbox rows in one statement, then the
//! rarer snapshots, erasures and idempotency records. The common group, events of one tenant and
//! nothing else, is one autocommit statement instead ([`EventStore::append_in_tenant`]): one round
//! trip where the transaction takes three or four. Each command is answered only after the
//! commit, so an answer still means "stored"; a crash before it leaves none of the group.
//!
//! Each write is still checked on its own: every event goes in at the sequence number its
//! command decided, and the unique `(aggregate_id, sequence_number)` refuses a stale one; the
//! streams a command only read must still be at the versions it read. When
//! anything in a group is refused, the group is rolled back and its writes are stored one by
//! one, each in its own transaction, so that a refusal fails its own command alone (which is then
//! decided again, as any lost race is). Two writes of one group on the same stream position are
//! told apart before anything is sent: the later one is refused at once.
//!
//! Natural batching, no timer: under light load a write finds an idle writer and goes alone at
//! once; under load the writes that arrive while every writer is committing form the next
//! groups, so a group grows with the load and no command waits for a window to close.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use platform::db::{set_tenant, tenant_tx};
use platform::event_store::{EventStore, NewEvent, StoreError};
use platform::personal::{DataKeys, NewKey};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

use crate::idempotency::{self, IdempotencySlot, StoredResponse};

mod statement;

use statement::{took_no_effect, OneStatement};

/// Everything one command decided to store, in its tenant.
#[derive(Debug)]
pub struct Write {
    pub tenant_id: String,
    pub contact_id: Uuid,
    /// The contact's data key, made for this command (its first personal data).
    pub new_key: Option<NewKey>,
    /// The streams the command read and writes nothing to, at the versions it read: if one has
    /// moved on, the command decided on a stale state and is refused like a stale append.
    pub read_only: Vec<(Uuid, i64)>,
    pub events: Vec<NewEvent>,
    /// `(aggregate id, version, sealed state)`.
    pub snapshots: Vec<(Uuid, i64, Value)>,
    /// The command forgets the contact: its key is destroyed, its snapshots deleted and any
    /// plaintext of the previous release redacted, in the transaction that stores
    /// `contact.forgotten`.
    pub forget: bool,
    /// The answer to record for an `Idempotency-Key`: `(project, key, answer)`.
    pub idempotency: Option<(Uuid, IdempotencySlot, StoredResponse)>,
}

impl Write {
    fn is_empty(&self) -> bool {
        self.events.is_empty() && !self.forget && self.idempotency.is_none()
    }
}

/// Why a write was not stored.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A stream moved on since the command loaded it, or the contact got its key from another
    /// command: decide again.
    #[error("a stream or the contact's key changed since the command decided")]
    Conflict,
    /// An event of the write is stored already (its id derived from what it is: a message's
    /// `channel_message_id`): the write is a repeat, and nothing of it was stored.
    #[error("an event of the write is stored already")]
    EventExists,
    /// Another request recorded this `Idempotency-Key` first.
    #[error("the Idempotency-Key was recorded by another request")]
    IdempotencyTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(e))
    }
}

impl From<platform::personal::PersonalError> for WriteError {
    fn from(e: platform::personal::PersonalError) -> Self {
        Self::Store(StoreError::Personal(e))
    }
}

type Queued = (Write, oneshot::Sender<Result<(), WriteError>>);

/// How commands' writes are grouped into transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct Grouping {
    /// Tasks storing commands' writes, each a group per transaction: while they all commit, the
    /// commands arriving queue up and form the next groups.
    #[arg(long = "command-writers", env = "COMMAND_WRITERS", default_value_t = Grouping::DEFAULT.writers)]
    pub writers: usize,
    /// The most commands' writes committed in one transaction (1: each command commits alone).
    #[arg(long = "command-group-max", env = "COMMAND_GROUP_MAX", default_value_t = Grouping::DEFAULT.max_group)]
    pub max_group: usize,
}

impl Grouping {
    /// What command-service runs with unless told otherwise (`COMMAND_WRITERS`,
    /// `COMMAND_GROUP_MAX`).
    pub const DEFAULT: Self = Self {
        writers: 2,
        max_group: 64,
    };
}

/// The queue in front of the writer tasks. Cloned into every handler; the tasks stop once the
/// last clone is dropped and the queue is drained.
#[derive(Clone)]
pub struct GroupWriter {
    queue: mpsc::Sender<Queued>,
}

impl std::fmt::Debug for GroupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupWriter").finish_non_exhaustive()
    }
}

/// The `# HELP` text of the families recorded here.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_histogram!(
        "command_group_size",
        Unit::Count,
        "Commands whose writes were committed in one transaction"
    );
    describe_counter!(
        "command_group_commits_total",
        "Groups of commands' writes committed, by way: in one autocommit statement, or in a transaction"
    );
    describe_counter!(
        "command_group_fallbacks_total",
        "Groups rolled back because one write was refused, then stored write by write"
    );
}

impl GroupWriter {
    /// Starts the writer tasks on `pool` (the request login: each write runs in its tenant).
    pub fn start(pool: PgPool, grouping: Grouping) -> Self {
        let max_group = grouping.max_group.max(1);
        let (queue, receiver) = mpsc::channel::<Queued>(max_group * grouping.writers.max(1) * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..grouping.writers.max(1) {
            let (pool, receiver) = (pool.clone(), receiver.clone());
            tokio::spawn(async move {
                while let Some(group) = next_group(&receiver, max_group).await {
                    store_group(&pool, group).await;
                }
            });
        }
        Self { queue }
    }

    /// Stores a write with the others that queued with it; answers once they have committed.
    pub async fn write(&self, write: Write) -> Result<(), WriteError> {
        if write.is_empty() {
            return Ok(());
        }
        let (answer, answered) = oneshot::channel();
        // The writers stop only when the service does.
        let closed = || WriteError::Store(StoreError::Database(sqlx::Error::PoolClosed));
        self.queue
            .send((write, answer))
            .await
            .map_err(|_| closed())?;
        answered.await.map_err(|_| closed())?
    }
}

/// Waits for a write, then takes the ones queued behind it, up to `max`. `None` once every
/// sender is gone and the queue is empty.
async fn next_group(receiver: &Mutex<mpsc::Receiver<Queued>>, max: usize) -> Option<Vec<Queued>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut group = vec![first];
    while group.len() < max {
        match receiver.try_recv() {
            Ok(queued) => group.push(queued),
            Err(_) => break,
        }
    }
    Some(group)
}

async fn store_group(pool: &PgPool, group: Vec<Queued>) {
    let (group, clashing) = apart(group);
    for (_, answer) in clashing {
        let _ = answer.send(Err(WriteError::Conflict));
    }
    metrics::histogram!("command_group_size").record(group.len() as f64);
    if group.len() > 1 {
        let writes: Vec<&Write> = group.iter().map(|(w, _)| w).collect();
        match store_together(pool, &writes).await {
            Together::Committed => {
                for (_, answer) in group {
                    let _ = answer.send(Ok(()));
                }
                return;
            }
            Together::Unknown(e) => {
                // The commit itself failed: whether it took effect is unknown, so nothing is
                // written again (it could be twice); each command answers the error, as a
                // command alone would.
                tracing::warn!(error = %e, writes = group.len(), "the commit of a group of commands failed");
                for (_, answer) in group {
                    let _ = answer.send(Err(WriteError::Store(StoreError::Database(
                        same_failure(&e),
                    ))));
                }
                return;
            }
            Together::RolledBack => {
                metrics::counter!("command_group_fallbacks_total").increment(1);
            }
        }
    }
    for (write, answer) in group {
        let _ = answer.send(store_alone(pool, &write).await);
    }
}

/// Takes out of a group the writes that cannot be stored with an earlier one of it: the same
/// stream position, or a second new key for one contact. Those lost the race already.
fn apart(group: Vec<Queued>) -> (Vec<Queued>, Vec<Queued>) {
    let mut positions = HashSet::new();
    let mut new_keys = HashSet::new();
    group.into_iter().partition(|(write, _)| {
        let mine: Vec<(Uuid, i64)> = write
            .events
            .iter()
            .map(|e| (e.aggregate_id, e.sequence_number))
            .collect();
        let key = write.new_key.as_ref().map(|k| k.contact_id);
        let free = mine.iter().all(|p| !positions.contains(p))
            && key.is_none_or(|c| !new_keys.contains(&c));
        if free {
            positions.extend(mine);
            new_keys.extend(key);
        }
        free
    })
}

enum Together {
    Committed,
    /// A write was refused or a statement failed: nothing of the group was stored.
    RolledBack,
    /// `COMMIT` failed: the group may or may not be stored.
    Unknown(sqlx::Error),
}

async fn store_together(pool: &PgPool, writes: &[&Write]) -> Together {
    if let Some(one) = OneStatement::of(writes) {
        return match one.store(pool).await {
            Ok(()) => Together::Committed,
            Err(e) if took_no_effect(&e) => Together::RolledBack,
            Err(StoreError::Database(e)) => Together::Unknown(e),
            Err(other) => Together::Unknown(sqlx::Error::Protocol(format!(
                "the append of a group of commands failed: {other}"
            ))),
        };
    }
    let mut by_tenant: BTreeMap<&str, Vec<&Write>> = BTreeMap::new();
    for write in writes {
        by_tenant.entry(&write.tenant_id).or_default().push(write);
    }
    let stored = async {
        let mut tenants = by_tenant.iter();
        let (first, writes) = tenants.next().expect("a group holds writes");
        let mut tx = tenant_tx(pool, first).await?;
        store_in_tenant(&mut tx, first, writes).await?;
        for (tenant, writes) in tenants {
            set_tenant(&mut tx, tenant).await?;
            store_in_tenant(&mut tx, tenant, writes).await?;
        }
        Ok::<_, WriteError>(tx)
    };
    match stored.await {
        // Dropping the transaction rolls it back.
        Err(_) => Together::RolledBack,
        Ok(tx) => match tx.commit().await {
            Ok(()) => {
                metrics::counter!("command_group_commits_total", "way" => "transaction")
                    .increment(1);
                Together::Committed
            }
            Err(e) => Together::Unknown(e),
        },
    }
}

async fn store_alone(pool: &PgPool, write: &Write) -> Result<(), WriteError> {
    if let Some(one) = OneStatement::of(&[write]) {
        return one.store(pool).await.map_err(|e| match e {
            StoreError::Conflict => WriteError::Conflict,
            StoreError::EventExists => WriteError::EventExists,
            other => WriteError::Store(other),
        });
    }
    let mut tx = tenant_tx(pool, &write.tenant_id).await?;
    store_in_tenant(&mut tx, &write.tenant_id, &[write]).await?;
    tx.commit().await?;
    metrics::counter!("command_group_commits_total", "way" => "transaction").increment(1);
    Ok(())
}

/// Stores writes of one tenant in the caller's transaction, already in that tenant.
async fn store_in_tenant(
    tx: &mut Transaction<'_, Postgres>,
    tenant_id: &str,
    writes: &[&Write],
) -> Result<(), WriteError> {
    let new_keys: Vec<&NewKey> = writes.iter().filter_map(|w| w.new_key.as_ref()).collect();
    if !new_keys.is_empty()
        && DataKeys::store_new(tx, tenant_id, &new_keys).await? != new_keys.len() as u64
    {
        return Err(WriteError::Conflict);
    }
    let events: Vec<&NewEvent> = writes.iter().flat_map(|w| &w.events).collect();
    if !events.is_empty() {
        EventStore::append(tx, &events).await.map_err(|e| match e {
            StoreError::Conflict => WriteError::Conflict,
            StoreError::EventExists => WriteError::EventExists,
            other => WriteError::Store(other),
        })?;
    }
    // After the appends, so that a write that read a stream another write of the group appends
    // to is refused too (and the group stored write by write, in order).
    let read_only: Vec<(Uuid, i64)> = writes
        .iter()
        .flat_map(|w| w.read_only.iter().copied())
        .collect();
    if !read_only.is_empty() && EventStore::streams_moved(tx, &read_only).await? {
        return Err(WriteError::Conflict);
    }
    for write in writes {
        for (id, version, data) in &write.snapshots {
            EventStore::save_snapshot(tx, tenant_id, *id, *version, data.clone()).await?;
            metrics::counter!("snapshots_written_total").increment(1);
        }
        if write.forget {
            forget(tx, tenant_id, write.contact_id).await?;
        }
        if let Some((project, slot, answer)) = &write.idempotency {
            if !idempotency::record(tx, (*project, tenant_id), slot, answer).await? {
                return Err(WriteError::IdempotencyTaken);
            }
        }
    }
    Ok(())
}

/// In the very transaction that records the erasure: there is no moment at which
/// `contact.forgotten` is stored and the key still opens anything.
async fn forget(
    tx: &mut Transaction<'_, Postgres>,
    tenant_id: &str,
    contact_id: Uuid,
) -> Result<(), WriteError> {
    DataKeys::destroy(tx, tenant_id, contact_id).await?;
    EventStore::delete_contact_snapshots(tx, tenant_id, contact_id).await?;
    // Events the previous release stored in the clear have no key to destroy.
    platform::history::redact_plain_of_contact(tx, tenant_id, contact_id).await?;
    Ok(())
}

/// `error` once more, for each command of the group (an error is not `Clone`): a lost connection
/// stays one, so the command answers 503 as it would alone.
fn same_failure(error: &sqlx::Error) -> sqlx::Error {
    match error {
        sqlx::Error::Io(e) => sqlx::Error::Io(std::io::Error::new(e.kind(), e.to_string())),
        other => {
            sqlx::Error::Protocol(format!("the commit of a group of commands failed: {other}"))
        }
    }
}
