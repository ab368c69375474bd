//! `contact_event_store`, `contact_snapshots` and the outbox's backlog: every SQL statement on
//! them (the reads in `read.rs`, the append in `append.rs`, the snapshots in `snapshots.rs`, a
//! stored row read in `row.rs`).
//!
//! Appends write the events and their `outbox_events` rows in one statement, inside the caller's
//! transaction, so an event is never stored without being queued for publication. A unique
//! violation on `(aggregate_id, sequence_number)` is an optimistic-concurrency conflict.
//!
//! Reading by `position` is only safe below the oldest transaction still running: positions are
//! handed out at insert, so a lower one may commit after a higher one. [`EventStore::read_after`]
//! reads only rows whose writing transaction is older than the oldest of this database's
//! transactions still running, so it never steps past an event that is about to appear.

use chrono::{DateTime, Utc};
use event_model::AggregateType;
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

mod append;
mod read;
mod row;
mod snapshots;

pub use row::{EventRow, EVENT_COLUMNS};
pub use snapshots::{PlainSnapshot, SnapshotRow};

/// The unique constraint on `contact_event_store (aggregate_id, sequence_number)`: a violation
/// is another writer's append to the same stream, a [`StoreError::Conflict`].
pub const SEQUENCE_CONSTRAINT: &str = "contact_event_store_aggregate_seq_key";

/// The primary key of `contact_event_store`: a violation is an event whose id is stored already,
/// a [`StoreError::EventExists`] (an id derived from what the event is, such as a message's id
/// on its channel, is stored once).
pub const EVENT_ID_CONSTRAINT: &str = "contact_event_store_pkey";

/// [`Horizon::Finished`]'s condition on `contact_event_store e`: below the oldest transaction
/// of this database still running in the statement's snapshot (its `xmax` when none is).
///
/// `pg_snapshot_xmin` alone would be the oldest of the whole server's, so one long transaction in
/// any other database (another application's, a test's) would hold every catch-up reader back
/// for as long as it runs. A transaction is left out only when its id is locked, at the time the
/// statement looks, by a backend of another database; one that ended since the snapshot was taken
/// counts as this database's (its rows, if any, are not in the snapshot), so nothing can appear
/// behind a reader that reads up to this horizon.
const FINISHED: &str = "and e.transaction_id < (\
    select coalesce(min(x.id), pg_snapshot_xmax(pg_current_snapshot())) \
      from pg_snapshot_xip(pg_current_snapshot()) x(id) \
     where not exists (\
        select 1 from pg_locks l join pg_stat_activity a on a.pid = l.pid \
         where l.locktype = 'transactionid' and l.transactionid = x.id::xid \
           and a.datname is distinct from current_database()))";
/// [`Horizon::Upto`]'s condition, its bound in `$5` and `$6`.
const UPTO: &str = "and (e.transaction_id, e.position) <= ($5::text::xid8, $6)";

/// Why a statement on the event store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to one of the streams first.
    #[error("concurrent append to the same aggregate")]
    Conflict,
    /// An event with one of the appended ids is stored already: nothing was appended.
    #[error("an event with this id is stored already")]
    EventExists,
    /// A stored event cannot be read back (see [`EventRow::into_envelope`]), or its payload does
    /// not decode.
    #[error("stored event {event_id} is unreadable: {reason}")]
    Corrupt {
        /// The event's id.
        event_id: Uuid,
        /// What is wrong with it.
        reason: String,
    },
    /// The statement failed, the database unreachable included ([`crate::ApiError::internal`]
    /// tells a 503 from a 500).
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A data key could not be read, unwrapped or used (see [`crate::personal`]).
    #[error(transparent)]
    Personal(#[from] crate::personal::PersonalError),
}

/// An event about to be appended, with its place in its stream.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The event's id (a UUIDv7); also its `Nats-Msg-Id`, by which the broker drops a
    /// republished copy.
    pub event_id: Uuid,
    /// The stream it is appended to: a contact's id or a session's.
    pub aggregate_id: Uuid,
    /// Which kind of aggregate `aggregate_id` names.
    pub aggregate_type: AggregateType,
    /// The event's stored name, e.g. `contact.created`.
    pub event_type: &'static str,
    /// The form `data` is stored in (`v2`: personal fields sealed).
    pub event_version: &'static str,
    /// Its place in its stream: the stream's version when the command loaded it, plus one per
    /// event. Taken already, the append is a [`StoreError::Conflict`].
    pub sequence_number: i64,
    /// The payload in its stored form, personal fields already sealed with the contact's key
    /// ([`crate::personal::seal_event`]).
    pub data: Value,
    /// The contact it concerns: `aggregate_id` for a contact's event, the session's contact for a
    /// session's. Kept in `metadata`; the broker's partition key.
    pub contact_id: Uuid,
    /// The acting user, kept in `metadata`; `None` for the system's own commands.
    pub user_id: Option<Uuid>,
    /// When the command was decided (stored as a UTC `timestamp`).
    pub occurred_at: DateTime<Utc>,
    /// The tenant it belongs to: in a tenant's transaction, row-level security refuses any other.
    pub tenant_id: String,
    /// The project it was decided in.
    pub project_id: Uuid,
    /// The command that decided it: every event of one command carries its id.
    pub causation_id: Option<Uuid>,
    /// What ties together everything one request caused (its `X-Correlation-Id`, or a new id);
    /// also kept in `metadata`.
    pub correlation_id: Option<Uuid>,
    /// The W3C trace context the event was decided in (kept in `metadata`, sent as a header).
    pub traceparent: Option<String>,
}

/// Where a catch-up reader stands: the last `(transaction_id, position)` it read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Checkpoint {
    /// The writing transaction's id (`contact_event_store.transaction_id`, an `xid8`).
    pub transaction_id: i64,
    /// The event's `position`: the order among one transaction's events.
    pub position: i64,
}

/// How far a catch-up read ([`EventStore::read_after`]) may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Horizon {
    /// Only transactions below this database's oldest running one: nothing can appear behind the
    /// reader.
    Finished,
    /// Everything committed and visible now.
    Visible,
    /// Up to and including a checkpoint that was [`Horizon::Finished`] when it was taken (see
    /// [`EventStore::finished_checkpoint`]): a fixed set, which readers can share out.
    Upto(Checkpoint),
}

/// An event as a catch-up read returns it: the row, and the transaction that wrote it, which
/// with its position is its place in the order such a reader walks.
#[derive(Debug, sqlx::FromRow)]
pub struct OrderedEvent {
    /// The stored row.
    #[sqlx(flatten)]
    pub event: EventRow,
    /// The writing transaction's id (an `xid8`).
    pub transaction_id: i64,
}

impl OrderedEvent {
    /// Where a reader stands once it has read this event: the next read resumes after it.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            transaction_id: self.transaction_id,
            position: self.event.position,
        }
    }
}

/// Every statement on `contact_event_store` and `contact_snapshots`. Each runs on the executor
/// or transaction it is given: what the login of that connection may see (row-level security)
/// is what it reads.
#[derive(Debug, Clone)]
pub struct EventStore {
    pool: PgPool,
}

/// The outbox rows not yet on the broker: how many, and how long the oldest has waited (the
/// relay's gauges and `replay-tool status` read it alike).
pub async fn outbox_backlog(conn: impl PgExecutor<'_>) -> Result<(i64, f64), sqlx::Error> {
    let row = sqlx::query!(
        r#"select count(*) as "rows!", coalesce(extract(epoch from (now() at time zone 'utc') - min(created_at)), 0)::float8 as "oldest_seconds!"
             from outbox_events where status in ('pending', 'processing')"#,
    )
    .fetch_one(conn)
    .await?;
    Ok((row.rows, row.oldest_seconds))
}

impl EventStore {
    /// The store of `pool`: the request paths' pool in command-service, the cross-tenant or the
    /// query pool in projection-service.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool the callers open the transactions and connections its statements run in on.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}
