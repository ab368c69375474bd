//! `contact_event_store` and `contact_snapshots`: every SQL statement on those two tables (the
//! append in `append.rs`, the snapshots in `snapshots.rs`, a stored row read in `row.rs`).
//!
//! Appends write the events and their `outbox_events` rows in one statement, inside the caller's
//! transaction, so an event is never stored without being queued for publication. A unique
//! violation on `(aggregate_id, sequence_number)` is an optimistic-concurrency conflict.
//!
//! Reading by `position` is only safe below the oldest transaction still running: positions are
//! handed out at insert, so a lower one may commit after a higher one. [`EventStore::read_after`]
//! reads only rows whose writing transaction is older than `pg_snapshot_xmin`, so it never steps
//! past an event that is about to appear.

use chrono::{DateTime, Utc};
use event_model::{AggregateType, EventEnvelope};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};
use uuid::Uuid;

mod append;
mod row;
mod snapshots;

pub use row::{EventRow, EVENT_COLUMNS};
pub use snapshots::SnapshotRow;

/// The unique constraint on `contact_event_store (aggregate_id, sequence_number)`: a violation
/// is another writer's append to the same stream, a [`StoreError::Conflict`].
pub const SEQUENCE_CONSTRAINT: &str = "contact_event_store_aggregate_seq_key";

/// [`Horizon::Finished`]'s condition on `contact_event_store e`.
const FINISHED: &str = "and e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())";
/// [`Horizon::Upto`]'s condition, its bound in `$5` and `$6`.
const UPTO: &str = "and (e.transaction_id, e.position) <= ($5::text::xid8, $6)";

/// Why a statement on the event store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to one of the streams first.
    #[error("concurrent append to the same aggregate")]
    Conflict,
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
    /// Only transactions below `pg_snapshot_xmin`: nothing can appear behind the reader.
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

impl Checkpoint {
    /// Past every event: the greatest `xid8` an `i64` holds, and the greatest position.
    pub const END: Checkpoint = Checkpoint {
        transaction_id: i64::MAX,
        position: i64::MAX,
    };
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

    /// The events of one stream in this tenant after `after_sequence`, in order.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant_id, aggregate_id = %aggregate_id), err(level = "debug"))]
    pub async fn load_stream(
        &self,
        executor: impl PgExecutor<'_>,
        tenant_id: &str,
        aggregate_type: AggregateType,
        aggregate_id: Uuid,
        after_sequence: i64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "select {EVENT_COLUMNS} from contact_event_store e \
              where e.aggregate_id = $1 and e.tenant_id = $2 and e.aggregate_type = $3 and e.sequence_number > $4 \
              order by e.sequence_number"
        ))
        .bind(aggregate_id)
        .bind(tenant_id)
        .bind(aggregate_type.as_str())
        .bind(after_sequence)
        .fetch_all(executor)
        .await?;
        rows.into_iter().map(EventRow::into_envelope).collect()
    }

    /// The events of several streams in this tenant, each after its own sequence number, in one
    /// round trip: `(type, id, after)` per stream. The result is ordered by stream, then sequence.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant_id, streams = streams.len()), err(level = "debug"))]
    pub async fn load_streams(
        &self,
        executor: impl PgExecutor<'_>,
        tenant_id: &str,
        streams: &[(AggregateType, Uuid, i64)],
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let types: Vec<&str> = streams.iter().map(|s| s.0.as_str()).collect();
        let ids: Vec<Uuid> = streams.iter().map(|s| s.1).collect();
        let after: Vec<i64> = streams.iter().map(|s| s.2).collect();
        // A lateral subquery per stream: one index range scan each, whatever the planner thinks
        // of the array's size.
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "select {EVENT_COLUMNS} from unnest($1::uuid[], $2::text[], $3::int8[]) with ordinality as s(id, kind, after, n) \
              cross join lateral (select * from contact_event_store e \
                                   where e.aggregate_id = s.id and e.tenant_id = $4 and e.aggregate_type = s.kind \
                                     and e.sequence_number > s.after \
                                   order by e.sequence_number) e \
              order by s.n, e.sequence_number"
        ))
        .bind(&ids)
        .bind(&types)
        .bind(&after)
        .bind(tenant_id)
        .fetch_all(executor)
        .await?;
        rows.into_iter().map(EventRow::into_envelope).collect()
    }

    /// Events `from..=to` of one stream (the projections' gap fill).
    #[tracing::instrument(level = "debug", skip_all, fields(aggregate_id = %aggregate_id), err(level = "debug"))]
    pub async fn read_range(
        &self,
        executor: impl PgExecutor<'_>,
        aggregate_id: Uuid,
        from_sequence: i64,
        to_sequence: i64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "select {EVENT_COLUMNS} from contact_event_store e \
              where e.aggregate_id = $1 and e.sequence_number between $2 and $3 \
              order by e.sequence_number"
        ))
        .bind(aggregate_id)
        .bind(from_sequence)
        .bind(to_sequence)
        .fetch_all(executor)
        .await?;
        rows.into_iter().map(EventRow::into_envelope).collect()
    }

    /// The stored events with these ids (those the store has), in no particular order: what a
    /// projection worker applies instead of the messages that named them (the store is the
    /// truth; a message is only a notice).
    pub async fn read_by_ids(
        executor: impl PgExecutor<'_>,
        ids: &[Uuid],
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "select {EVENT_COLUMNS} from contact_event_store e where e.id = any($1)"
        ))
        .bind(ids)
        .fetch_all(executor)
        .await?;
        rows.into_iter().map(EventRow::into_envelope).collect()
    }

    /// A contact's events and its sessions' events in store order, optionally after a position.
    pub async fn read_contact_history(
        &self,
        executor: impl PgExecutor<'_>,
        tenant_id: &str,
        contact_id: Uuid,
        after_position: i64,
        limit: i64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "select {EVENT_COLUMNS} from contact_event_store e \
              where e.tenant_id = $1 and e.position > $3 \
                and (e.aggregate_id = $2 or (e.aggregate_type = 'session' and e.metadata->>'contact_id' = $2::text)) \
              order by e.position limit $4"
        ))
        .bind(tenant_id)
        .bind(contact_id)
        .bind(after_position)
        .bind(limit)
        .fetch_all(executor)
        .await?;
        rows.into_iter().map(EventRow::into_envelope).collect()
    }

    /// Up to `limit` events after `after` in `(transaction_id, position)` order: the order a
    /// catch-up reader can walk without ever having a row appear behind it (see the module docs).
    /// With `Horizon::Finished` only rows of transactions below `pg_snapshot_xmin` are read, so
    /// the checkpoint can be kept and resumed; `Horizon::Visible` also reads rows committed by
    /// younger transactions, for a reader that keeps no checkpoint (a rebuild's last pass).
    pub async fn read_after(
        executor: impl PgExecutor<'_>,
        after: Checkpoint,
        limit: i64,
        tenant_id: Option<&str>,
        horizon: Horizon,
    ) -> Result<Vec<OrderedEvent>, StoreError> {
        let upto = match horizon {
            Horizon::Finished => FINISHED,
            Horizon::Visible => "",
            Horizon::Upto(_) => UPTO,
        };
        let sql = format!(
            "select {EVENT_COLUMNS}, e.transaction_id::text::bigint as transaction_id \
               from contact_event_store e \
              where (e.transaction_id, e.position) > ($1::text::xid8, $2) {upto} \
                and ($3::text is null or e.tenant_id = $3) \
              order by e.transaction_id, e.position limit $4"
        );
        let mut query = sqlx::query_as(&sql)
            .bind(after.transaction_id.to_string())
            .bind(after.position)
            .bind(tenant_id)
            .bind(limit);
        if let Horizon::Upto(bound) = horizon {
            query = query
                .bind(bound.transaction_id.to_string())
                .bind(bound.position);
        }
        Ok(query.fetch_all(executor).await?)
    }

    /// The last event (of `tenant_id`, or of all) whose transaction is finished: with
    /// [`Horizon::Upto`], a fixed part of the history that nothing can join any more. The
    /// default checkpoint when there is none.
    pub async fn finished_checkpoint(
        executor: impl PgExecutor<'_>,
        tenant_id: Option<&str>,
    ) -> Result<Checkpoint, StoreError> {
        let last: Option<(i64, i64)> = sqlx::query_as(&format!(
            "select e.transaction_id::text::bigint, e.position from contact_event_store e \
              where true {FINISHED} and ($1::text is null or e.tenant_id = $1) \
              order by e.transaction_id desc, e.position desc limit 1"
        ))
        .bind(tenant_id)
        .fetch_optional(executor)
        .await?;
        Ok(last
            .map(|(transaction_id, position)| Checkpoint {
                transaction_id,
                position,
            })
            .unwrap_or_default())
    }

    /// A contact's events after `after_sequence` that were stored before `before_position`: what
    /// a session event presupposes of its contact (the projections' gap fill).
    pub async fn read_contact_before(
        &self,
        executor: impl PgExecutor<'_>,
        contact_id: Uuid,
        after_sequence: i64,
        before_position: i64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "select {EVENT_COLUMNS} from contact_event_store e \
              where e.aggregate_id = $1 and e.sequence_number > $2 and e.position < $3 \
              order by e.sequence_number"
        ))
        .bind(contact_id)
        .bind(after_sequence)
        .bind(before_position)
        .fetch_all(executor)
        .await?;
        rows.into_iter().map(EventRow::into_envelope).collect()
    }

    /// How many events are stored up to and including `upto` (all of them: [`Checkpoint::END`]),
    /// of one tenant or (`None`) of all.
    pub async fn count_upto(
        executor: impl PgExecutor<'_>,
        upto: Checkpoint,
        tenant_id: Option<&str>,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar!(
            r#"select count(*) as "count!" from contact_event_store e
                where (e.transaction_id, e.position) <= ($1::text::xid8, $2)
                  and ($3::text is null or e.tenant_id = $3)"#,
            upto.transaction_id.to_string(),
            upto.position,
            tenant_id,
        )
        .fetch_one(executor)
        .await?)
    }

    /// The last sequence number of a stream of this type in this tenant; `None`: no such stream.
    pub async fn stream_version(
        executor: impl PgExecutor<'_>,
        tenant_id: &str,
        aggregate_id: Uuid,
        aggregate_type: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar!(
            "select max(sequence_number)::bigint from contact_event_store \
              where aggregate_id = $1 and tenant_id = $2 and aggregate_type = $3",
            aggregate_id,
            tenant_id,
            aggregate_type,
        )
        .fetch_one(executor)
        .await?)
    }

    /// Whether any of these streams is no longer at the given version (its last sequence
    /// number; 0: no events), as the caller's transaction sees them: one statement (the rule is
    /// the database's `streams_moved`, migration 0029).
    pub async fn streams_moved(
        tx: &mut Transaction<'_, Postgres>,
        streams: &[(Uuid, i64)],
    ) -> Result<bool, StoreError> {
        let (ids, versions): (Vec<Uuid>, Vec<i64>) = streams.iter().copied().unzip();
        Ok(sqlx::query_scalar!(
            r#"select streams_moved($1::uuid[], $2::int8[]) as "moved!""#,
            &ids,
            &versions,
        )
        .fetch_one(&mut **tx)
        .await?)
    }
}
