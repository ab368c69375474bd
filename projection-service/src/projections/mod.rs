//! The projections: each a pure fold of events into read rows plus the SQL that loads and writes
//! those rows in sets. The live JetStream workers and the replay tool call the very same
//! [`apply_batch`] (the live workers first try [`apply_unlocked`], the same fold and write in two
//! statements and no transaction), so a rebuild gives exactly the rows the live path gives.
//!
//! Exactly-once effect: a batch is applied atomically (in one transaction, or in one statement
//! that checks its rows have not moved since they were read) and also records, for every event
//! it handled, one `processed_events(event_id, consumer_name)` row naming the projections it was
//! applied to ([`consumer_name`]: `contacts+sessions+domain_event_logs` on the live path); a
//! redelivered event finds its row and changes nothing. Each read row also keeps its
//! aggregate's `version`: an event older than the row is a duplicate, and a gap (an event whose
//! predecessors have not arrived) is filled from `contact_event_store` before it is applied.

pub mod contacts;
pub mod event_log;
pub mod sessions;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use contacts::ContactRecord;
use event_model::{AggregateType, ContactEvent, DomainEvent, EventEnvelope};
use platform::event_store::{EventRow, EventStore, StoreError, EVENT_COLUMNS};
use platform::personal::{DataKeys, KeySet, PersonalError};
use serde::Serialize;
use sessions::SessionRecord;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

/// A projection, by the name it records in `processed_events.consumer_name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    Contacts,
    Sessions,
    DomainEventLogs,
}

impl Projection {
    /// In the order a batch applies them: a session row needs its contact row.
    pub const ALL: [Projection; 3] = [
        Projection::Contacts,
        Projection::Sessions,
        Projection::DomainEventLogs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Contacts => "contacts",
            Self::Sessions => "sessions",
            Self::DomainEventLogs => "domain_event_logs",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == raw)
    }

    /// The read table it owns.
    pub fn table(self) -> &'static str {
        self.name()
    }
}

/// The `processed_events.consumer_name` of `projections` applied to an event together: their
/// names in [`Projection::ALL`] order, joined by `+`. One row per event then records all of them
/// (a third of the rows, and of the index entries, that a row per projection would cost).
pub fn consumer_name(projections: &[Projection]) -> String {
    Projection::ALL
        .into_iter()
        .filter(|p| projections.contains(p))
        .map(Projection::name)
        .collect::<Vec<_>>()
        .join("+")
}

/// The projections a `processed_events.consumer_name` covers (see [`consumer_name`]).
pub fn covered(consumer_name: &str) -> impl Iterator<Item = Projection> + '_ {
    consumer_name.split('+').filter_map(Projection::parse)
}

/// SQL: whether `processed_events` row `$row` covers projection `$name` (see [`consumer_name`]).
pub fn covers_sql(row: &str, name: &str) -> String {
    format!("{name} = any(string_to_array({row}.consumer_name, '+'))")
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// An event this code cannot apply (unknown type or version, payload that does not fit).
    #[error("event {} ({}) cannot be applied: {reason}", envelope.event_id, envelope.event_type)]
    Poison {
        envelope: Box<EventEnvelope>,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The batch's data keys could not be read or unwrapped (a missing or wrong `DATA_KEK`):
    /// the whole batch waits, nothing is parked for a configuration fault.
    #[error("reading the batch's data keys: {0}")]
    Keys(#[source] PersonalError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// An event with its decoded form (personal fields opened, or redacted for a forgotten contact).
pub struct Decoded<'a> {
    pub envelope: &'a EventEnvelope,
    pub event: DomainEvent,
}

/// Decodes an event with the batch's keys; one that cannot be (an unknown type, a payload that
/// does not fit, a seal that does not open) is poison.
pub fn decode<'a>(
    keys: &KeySet,
    envelope: &'a EventEnvelope,
) -> Result<Decoded<'a>, ProjectionError> {
    keys.open_event(envelope)
        .map(|event| Decoded { envelope, event })
        .map_err(|e| ProjectionError::Poison {
            envelope: Box::new(envelope.clone()),
            reason: e.to_string(),
        })
}

/// What a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchReport {
    /// (event, projection) pairs applied now, gap-filled events included.
    pub applied: usize,
    /// Pairs skipped as already applied.
    pub duplicates: usize,
}

/// Applies `events` (in order) to `projections` inside `tx`, recording `processed_events`; when
/// it applied any, it tells the waiting `min_version` reads on commit ([`crate::projected`]).
///
/// Two statements whatever the batch holds, besides gap fills: one read of what the batch needs
/// ([`read`]: the read rows, locked, the data keys, what was already applied) and one write of
/// every row, audit entry, `processed_events` row and the notification ([`write`]).
pub async fn apply_batch(
    tx: &mut Transaction<'_, Postgres>,
    store: &EventStore,
    keys: &DataKeys,
    projections: &[Projection],
    events: &[EventEnvelope],
) -> Result<BatchReport, ProjectionError> {
    let started = Instant::now();
    let (read, _) = read(tx, keys, projections, ReadBy::Given(events, Done::Read)).await?;
    let folded = fold_batch(tx, store, projections, events, read).await?;
    let report = folded.report;
    let processed = Processed::of(&folded.handled, started);
    let notification = (report.applied > 0).then(|| crate::projected::payload(events));
    write(tx, &folded, Some(&processed), notification, Rows::Locked).await?;
    folded.after_write(tx).await?;
    Ok(report)
}

/// [`apply_batch`] for a reader that is given every event exactly once, in order (a rebuild from
/// the store): `processed_events` is neither read nor written.
pub async fn apply_batch_once(
    tx: &mut Transaction<'_, Postgres>,
    store: &EventStore,
    keys: &DataKeys,
    projections: &[Projection],
    events: &[EventEnvelope],
) -> Result<BatchReport, ProjectionError> {
    let (read, _) = read(tx, keys, projections, ReadBy::Given(events, Done::Unread)).await?;
    let folded = fold_batch(tx, store, projections, events, read).await?;
    write(tx, &folded, None, None, Rows::Locked).await?;
    folded.after_write(tx).await?;
    Ok(folded.report)
}

/// A live batch read in one statement and no transaction ([`read_unlocked`]): the stored events
/// its messages name, and what folding them needs.
pub struct Unlocked {
    /// The stored events, in no particular order.
    pub stored: Vec<EventEnvelope>,
    /// Where the WAL stood when they were read.
    pub wal: Wal,
    read: Read,
    /// The contacts whose keys and rows were read.
    looked_up: HashSet<Uuid>,
}

/// Why [`apply_unlocked`] left a batch to [`apply_batch`] (the label of
/// `projection_batches_locked_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declined {
    /// An event whose contact's rows the read did not look up (its metadata names none readable).
    Unread,
    /// An event that cannot be applied: parking it is the transaction's work.
    Poison,
    /// The batch forgets a contact: its after-write clean-up goes in the same transaction.
    Forgets,
    /// A row changed between the read and the write (the write was aborted, nothing written).
    Moved,
}

impl Declined {
    pub fn label(self) -> &'static str {
        match self {
            Self::Unread => "unread",
            Self::Poison => "poison",
            Self::Forgets => "forgets",
            Self::Moved => "moved",
        }
    }
}

/// The live path's first try at a batch, in two round trips and no transaction: one statement
/// reads the stored events with these ids, their contacts' keys and rows and what was applied
/// already (this); after the caller checked the messages against the stored events,
/// [`apply_unlocked`] folds and writes. Runs on the connection holding the partition's lease, so
/// no other worker writes these rows meanwhile; a rebuild's swap or merge still may, which the
/// write's check catches.
pub async fn read_unlocked(
    conn: &mut PgConnection,
    keys: &DataKeys,
    ids: &[Uuid],
) -> Result<Unlocked, ProjectionError> {
    let (read, stored) = read(conn, keys, &Projection::ALL, ReadBy::Stored(ids)).await?;
    let stored = stored.unwrap_or_default();
    Ok(Unlocked {
        stored: stored
            .events
            .into_iter()
            .map(EventRow::into_envelope)
            .collect::<Result<_, _>>()?,
        wal: stored.wal,
        read,
        looked_up: stored.looked_up,
    })
}

/// Applies `events` (stored events, in order, of [`read_unlocked`]'s batch) to every projection
/// in one statement without a transaction: each row is written only where it is still as read
/// (see [`Rows::Unmoved`]). A batch that needs more (a transaction to park or forget in) or whose
/// rows moved is declined with nothing written, for [`apply_batch`] to apply.
pub async fn apply_unlocked(
    conn: &mut PgConnection,
    store: &EventStore,
    events: &[EventEnvelope],
    unlocked: Unlocked,
    commit: Commit,
) -> Result<Result<BatchReport, Declined>, ProjectionError> {
    let started = Instant::now();
    if events
        .iter()
        .any(|e| !unlocked.looked_up.contains(&e.contact_id))
    {
        return Ok(Err(Declined::Unread));
    }
    let folded = match fold_batch(conn, store, &Projection::ALL, events, unlocked.read).await {
        Ok(folded) => folded,
        Err(ProjectionError::Poison { .. }) => return Ok(Err(Declined::Poison)),
        Err(other) => return Err(other),
    };
    if !folded.forgotten_sessions.is_empty() || !folded.forgotten_log.is_empty() {
        return Ok(Err(Declined::Forgets));
    }
    let report = folded.report;
    let processed = Processed::of(&folded.handled, started);
    let notification = (report.applied > 0).then(|| crate::projected::payload(events));
    let rows = Rows::Unmoved(commit);
    match write(conn, &folded, Some(&processed), notification, rows).await {
        Ok(()) => Ok(Ok(report)),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(ROWS_MOVED) => {
            Ok(Err(Declined::Moved))
        }
        Err(other) => Err(other.into()),
    }
}

/// The SQLSTATE `projection_rows_unmoved` aborts a write with (serialization_failure).
const ROWS_MOVED: &str = "40001";

/// Whether an unlocked write's commit waits for its WAL to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// As every other commit of the system: durable when the statement returns.
    Durable,
    /// Visible at once, on disk within PostgreSQL's WAL writer delay (`synchronous_commit` off
    /// for this statement alone). The caller must not ack its messages before [`Wal`] says the
    /// WAL is flushed past a position read after the commit: a database crash in between loses
    /// the batch, and the broker then delivers it again.
    Deferred,
}

/// Two WAL positions (bytes from the start) read together: how far WAL has been written, and
/// how far it is on disk. Any commit that returned before they were read ends at or before
/// `inserted`, and is on disk once a `flushed` read later reaches that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wal {
    pub inserted: i64,
    pub flushed: i64,
}

/// SQL: the two columns of a [`Wal`], `wal_inserted` and `wal_flushed`.
const WAL_SQL: &str = "(pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint as wal_inserted, \
     (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint as wal_flushed";

/// Where the WAL stands now (see [`Wal`]).
pub async fn wal(conn: &mut PgConnection) -> Result<Wal, sqlx::Error> {
    let (inserted, flushed) = sqlx::query_as(&format!("select {WAL_SQL}"))
        .fetch_one(conn)
        .await?;
    Ok(Wal { inserted, flushed })
}

/// A batch folded in memory: the rows it writes, and which (event, projection) pairs it took
/// care of.
#[derive(Default)]
struct Folded {
    report: BatchReport,
    handled: Vec<(Uuid, Projection)>,
    contacts: Vec<ContactRecord>,
    sessions: Vec<SessionRecord>,
    /// The events whose audit rows the write copies from the store.
    log: Vec<Uuid>,
    /// Contacts forgotten in the batch whose sessions' personal columns are nulled after the
    /// write (it may have written those sessions).
    forgotten_sessions: Vec<Uuid>,
    /// Contacts forgotten in the batch whose audit rows written from plaintext messages of the
    /// previous release take the store's redacted form.
    forgotten_log: Vec<Uuid>,
    /// The row versions its rows were read at.
    xmins: Xmins,
}

impl Folded {
    async fn after_write(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), ProjectionError> {
        if !self.forgotten_sessions.is_empty() {
            sessions::forget_personal_columns(tx, &self.forgotten_sessions).await?;
        }
        if !self.forgotten_log.is_empty() {
            platform::history::sync_log_copies_of(tx, &self.forgotten_log).await?;
        }
        Ok(())
    }
}

/// The contacts that `events` forget.
fn forgotten_in(events: &[Decoded<'_>]) -> Vec<Uuid> {
    events
        .iter()
        .filter(|d| {
            matches!(
                d.event,
                DomainEvent::Contact(ContactEvent::Forgotten { .. })
            )
        })
        .map(|d| d.envelope.contact_id)
        .collect()
}

/// The projections' work on a batch: every (event, projection) pair not applied yet is folded
/// into the rows `read` holds.
async fn fold_batch(
    conn: &mut PgConnection,
    store: &EventStore,
    projections: &[Projection],
    events: &[EventEnvelope],
    read: Read,
) -> Result<Folded, ProjectionError> {
    let Read {
        contacts: mut contact_rows,
        sessions: mut session_rows,
        keys,
        done,
        xmins,
    } = read;
    let mut folded = Folded {
        xmins,
        ..Folded::default()
    };
    for &projection in projections {
        let mut seen = HashSet::new();
        let mut list = Vec::new();
        for envelope in events {
            if done.contains(&(envelope.event_id, projection)) || !seen.insert(envelope.event_id) {
                folded.report.duplicates += 1;
            } else {
                list.push(decode(&keys, envelope)?);
            }
        }
        if list.is_empty() {
            continue;
        }
        let handled = match projection {
            Projection::Contacts => {
                let rows = std::mem::take(&mut contact_rows);
                let (changed, handled) = contacts::apply(conn, store, &keys, &list, rows).await?;
                folded.contacts = changed;
                handled
            }
            Projection::Sessions => {
                let rows = std::mem::take(&mut session_rows);
                let (changed, handled) = sessions::apply(conn, store, &keys, &list, rows).await?;
                folded.sessions = changed;
                folded.forgotten_sessions = forgotten_in(&list);
                handled
            }
            Projection::DomainEventLogs => {
                folded.log = list.iter().map(|d| d.envelope.event_id).collect();
                folded.forgotten_log = forgotten_in(&list);
                folded.log.clone()
            }
        };
        folded.report.applied += handled.len();
        folded
            .handled
            .extend(handled.into_iter().map(|id| (id, projection)));
    }
    Ok(folded)
}

/// The `processed_events` rows of a batch: one per event, naming the projections it was applied
/// to, with the batch's time so far.
struct Processed {
    ids: Vec<Uuid>,
    names: Vec<String>,
    duration_ms: i64,
}

impl Processed {
    fn of(handled: &[(Uuid, Projection)], started: Instant) -> Self {
        let mut by_event: BTreeMap<Uuid, Vec<Projection>> = BTreeMap::new();
        for &(id, projection) in handled {
            by_event.entry(id).or_default().push(projection);
        }
        let (ids, names) = by_event
            .into_iter()
            .map(|(id, projections)| (id, consumer_name(&projections)))
            .unzip();
        Self {
            ids,
            names,
            duration_ms: started.elapsed().as_millis() as i64,
        }
    }
}

/// What a batch reads before it folds.
struct Read {
    /// The `contacts` rows of its events' contacts (locked for the batch, in a transaction).
    contacts: HashMap<Uuid, ContactRecord>,
    /// The `sessions` rows of its session events (locked for the batch, in a transaction).
    sessions: HashMap<Uuid, SessionRecord>,
    /// Its contacts' data keys as they are now (gap fills of those contacts use them too).
    keys: KeySet,
    /// The (event, projection) pairs applied already (`processed_events`).
    done: HashSet<(Uuid, Projection)>,
    /// The version (`xmin`) each row was read at.
    xmins: Xmins,
}

/// The `xmin` (as text) of each read row: the row version an unlocked write checks it still
/// overwrites ([`Rows::Unmoved`]).
#[derive(Default)]
struct Xmins {
    contacts: HashMap<Uuid, String>,
    sessions: HashMap<Uuid, String>,
}

/// Which events a batch's read is for.
enum ReadBy<'a> {
    /// These events; their rows are locked for the batch's transaction.
    Given(&'a [EventEnvelope], Done),
    /// The stored events with these ids, read by the same statement with everything else, and
    /// nothing locked (the live path's first try, [`read_unlocked`]).
    Stored(&'a [Uuid]),
}

/// Whether a read looks up which events were applied already.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Done {
    Read,
    /// A rebuild is given every event once.
    Unread,
}

/// Reads what a batch needs in one statement: the data keys of its events' contacts, the
/// `contacts` and `sessions` rows its projections fold into (a projection not in `projections`
/// reads none) with their versions, which projections already applied each event, and, read by
/// id, the stored events themselves. Rows of events applied already are read too: which those are
/// is only known from this very read, and a row read for nothing is only a lock held a moment.
async fn read(
    conn: &mut PgConnection,
    keys: &DataKeys,
    projections: &[Projection],
    by: ReadBy<'_>,
) -> Result<(Read, Option<StoredBatch>), ProjectionError> {
    if matches!(by, ReadBy::Given(events, _) if events.is_empty()) {
        let nothing = Read {
            contacts: HashMap::new(),
            sessions: HashMap::new(),
            keys: KeySet::default(),
            done: HashSet::new(),
            xmins: Xmins::default(),
        };
        return Ok((nothing, None));
    }
    let sorted = |ids: Vec<Uuid>| {
        let mut ids = ids;
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    // The SQL expressions of the ids each part reads by, and the values bound to them.
    let mut sql = String::from("with ");
    let mut binds: Vec<Vec<Uuid>> = Vec::new();
    let mut bind = |ids: Vec<Uuid>| {
        binds.push(ids);
        format!("${}", binds.len())
    };
    let (contact_ids, session_ids, event_ids, lock) = match by {
        ReadBy::Given(events, done) => {
            let contacts = sorted(events.iter().map(|e| e.contact_id).collect());
            let sessions = sorted(
                events
                    .iter()
                    .filter(|e| e.aggregate_type == AggregateType::Session)
                    .map(|e| e.aggregate_id)
                    .collect(),
            );
            let contacts = bind(contacts);
            let sessions = (!sessions.is_empty()).then(|| bind(sessions));
            let done =
                (done == Done::Read).then(|| bind(events.iter().map(|e| e.event_id).collect()));
            (contacts, sessions, done, " for update")
        }
        ReadBy::Stored(ids) => {
            let ids = bind(ids.to_vec());
            // A session event's contact is the one its metadata names (`EventRow::into_envelope`);
            // one that names none readable looks up nothing, and the batch is declined.
            sql.push_str(&format!(
                "batch as (select {EVENT_COLUMNS} from contact_event_store e where e.id = any({ids})), \
                 batch_contacts as (select distinct case when aggregate_type = 'session' \
                    then case when metadata->>'contact_id' ~* '{UUID_PATTERN}' \
                              then (metadata->>'contact_id')::uuid end \
                    else aggregate_id end as id from batch), "
            ));
            (
                "array(select id from batch_contacts where id is not null)".to_owned(),
                Some(
                    "array(select aggregate_id from batch where aggregate_type = 'session')"
                        .to_owned(),
                ),
                Some(ids),
                "",
            )
        }
    };
    sql.push_str(&format!(
        "keys_read as ({})",
        DataKeys::rows_sql(&contact_ids)
    ));
    let mut columns = vec![
        "(select array_agg(contact_id order by contact_id) from keys_read) as key_contacts"
            .to_owned(),
        "(select array_agg(key_material order by contact_id) from keys_read) as key_material"
            .to_owned(),
        "(select array_agg(kek_id order by contact_id) from keys_read) as kek_ids".to_owned(),
    ];
    let mut rows_of = |table: &str, ids: Option<&str>| {
        if let Some(ids) = ids {
            sql.push_str(&format!(
                ", {table}_read as (select to_jsonb(t) as row, t.id, t.xmin::text as xmin \
                    from {table} t where t.id = any({ids}){lock})"
            ));
            columns.push(format!(
                "(select jsonb_agg(row) from {table}_read) as {table}"
            ));
            columns.push(format!(
                "(select array_agg(id order by id) from {table}_read) as {table}_ids"
            ));
            columns.push(format!(
                "(select array_agg(xmin order by id) from {table}_read) as {table}_xmins"
            ));
        } else {
            columns.push(format!("null::jsonb as {table}"));
            columns.push(format!("null::uuid[] as {table}_ids"));
            columns.push(format!("null::text[] as {table}_xmins"));
        }
    };
    rows_of(
        "contacts",
        projections
            .contains(&Projection::Contacts)
            .then_some(contact_ids.as_str()),
    );
    rows_of(
        "sessions",
        session_ids
            .as_deref()
            .filter(|_| projections.contains(&Projection::Sessions)),
    );
    match &event_ids {
        Some(ids) => {
            sql.push_str(&format!(
                ", done_read as (select event_id, consumer_name::text as name \
                    from processed_events where event_id = any({ids}))"
            ));
            columns.push("(select array_agg(event_id) from done_read) as done_ids".to_owned());
            columns.push("(select array_agg(name) from done_read) as done_names".to_owned());
        }
        None => {
            columns.push("null::uuid[] as done_ids".to_owned());
            columns.push("null::text[] as done_names".to_owned());
        }
    }
    if matches!(by, ReadBy::Stored(_)) {
        columns.push("(select jsonb_agg(to_jsonb(b)) from batch b) as events".to_owned());
        columns.push("(select array_agg(id) from batch_contacts) as looked_up".to_owned());
        columns.push(WAL_SQL.to_owned());
    } else {
        columns.push("null::jsonb as events".to_owned());
        columns.push("null::uuid[] as looked_up".to_owned());
        columns.push("null::bigint as wal_inserted, null::bigint as wal_flushed".to_owned());
    }
    sql.push_str(" select ");
    sql.push_str(&columns.join(", "));
    let mut query = sqlx::query_as::<_, ReadRow>(&sql);
    for ids in &binds {
        query = query.bind(ids);
    }
    let row = query.fetch_one(&mut *conn).await?;
    let key_rows = row
        .key_contacts
        .unwrap_or_default()
        .into_iter()
        .zip(row.key_material.unwrap_or_default())
        .zip(row.kek_ids.unwrap_or_default())
        .map(|((contact, material), kek)| (contact, material, kek));
    let done = row
        .done_ids
        .unwrap_or_default()
        .into_iter()
        .zip(row.done_names.unwrap_or_default())
        .flat_map(|(id, name)| covered(&name).map(move |p| (id, p)).collect::<Vec<_>>())
        .collect();
    let versions = |ids: Option<Vec<Uuid>>, xmins: Option<Vec<String>>| {
        ids.unwrap_or_default()
            .into_iter()
            .zip(xmins.unwrap_or_default())
            .collect()
    };
    let stored = matches!(by, ReadBy::Stored(_)).then(|| StoredBatch {
        events: row.events.map(|Json(rows)| rows).unwrap_or_default(),
        looked_up: row.looked_up.unwrap_or_default().into_iter().collect(),
        wal: Wal {
            inserted: row.wal_inserted.unwrap_or_default(),
            flushed: row.wal_flushed.unwrap_or_default(),
        },
    });
    let read = Read {
        contacts: row
            .contacts
            .map(|r| r.0.into_iter().map(|r| (r.id, r)).collect())
            .unwrap_or_default(),
        sessions: row
            .sessions
            .map(|r| r.0.into_iter().map(|r| (r.id, r)).collect())
            .unwrap_or_default(),
        keys: keys.set_of(key_rows).map_err(ProjectionError::Keys)?,
        done,
        xmins: Xmins {
            contacts: versions(row.contacts_ids, row.contacts_xmins),
            sessions: versions(row.sessions_ids, row.sessions_xmins),
        },
    };
    Ok((read, stored))
}

/// A uuid in its hyphenated text form, the one `EventRow::into_envelope` reads.
const UUID_PATTERN: &str = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

/// The stored events a [`ReadBy::Stored`] read found, and the contacts whose keys and rows it
/// read with them.
#[derive(Default)]
struct StoredBatch {
    events: Vec<EventRow>,
    looked_up: HashSet<Uuid>,
    wal: Wal,
}

/// The one row of [`read`]'s statement.
#[derive(sqlx::FromRow)]
struct ReadRow {
    key_contacts: Option<Vec<Uuid>>,
    key_material: Option<Vec<Option<Vec<u8>>>>,
    kek_ids: Option<Vec<String>>,
    contacts: Option<Json<Vec<ContactRecord>>>,
    contacts_ids: Option<Vec<Uuid>>,
    contacts_xmins: Option<Vec<String>>,
    sessions: Option<Json<Vec<SessionRecord>>>,
    sessions_ids: Option<Vec<Uuid>>,
    sessions_xmins: Option<Vec<String>>,
    done_ids: Option<Vec<Uuid>>,
    done_names: Option<Vec<String>>,
    events: Option<Json<Vec<EventRow>>>,
    looked_up: Option<Vec<Uuid>>,
    wal_inserted: Option<i64>,
    wal_flushed: Option<i64>,
}

/// How a write treats the rows it overwrites.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rows {
    /// Locked by the batch's read: overwritten as they are.
    Locked,
    /// Read without a lock: each is overwritten only where it is still the version read (and
    /// inserted only where none has appeared since), and the statement is aborted, with nothing
    /// written, when one is not (`projection_rows_unmoved`, migration 0028). The statement is
    /// its own transaction, committed as it says.
    Unmoved(Commit),
}

/// Writes a folded batch in one statement: the changed `contacts` and `sessions` rows (inserted,
/// or every column overwritten), the audit rows (a second delivery inserts nothing), the
/// `processed_events` rows and the notification, each part only when it has something to write.
/// A session row's foreign key to its contact's row is checked at the statement's end, after both.
async fn write(
    conn: &mut PgConnection,
    folded: &Folded,
    processed: Option<&Processed>,
    notification: Option<String>,
    rows: Rows,
) -> Result<(), sqlx::Error> {
    let mut sql = QueryBuilder::<Postgres>::new("");
    let mut parts = Parts::default();
    // The parts whose row counts the unmoved check adds up.
    let mut counted = Vec::new();
    let contact_rows = (&folded.contacts, &folded.xmins.contacts);
    write_rows(
        &mut sql,
        &mut parts,
        &mut counted,
        "contacts",
        contacts::COLUMNS,
        contact_rows,
        rows,
    );
    let session_rows = (&folded.sessions, &folded.xmins.sessions);
    write_rows(
        &mut sql,
        &mut parts,
        &mut counted,
        "sessions",
        sessions::COLUMNS,
        session_rows,
        rows,
    );
    if !folded.log.is_empty() {
        parts.open(&mut sql, "logged");
        sql.push(event_log::copy_sql())
            .push(" where e.id = any(")
            .push_bind(&folded.log)
            .push(")")
            .push(event_log::KEEP_EXISTING)
            .push(")");
    }
    if let Some(processed) = processed.filter(|p| !p.ids.is_empty()) {
        parts.open(&mut sql, "processed");
        sql.push(
            "insert into processed_events (event_id, consumer_name, processing_duration_ms) \
             select id, name, ",
        )
        .push_bind(processed.duration_ms)
        .push(" from unnest(")
        .push_bind(&processed.ids)
        .push("::uuid[], ")
        .push_bind(&processed.names)
        .push("::text[]) as t(id, name) on conflict (event_id, consumer_name) do nothing)");
    }
    if parts.0 == 0 && notification.is_none() {
        return Ok(());
    }
    let mut results = Vec::new();
    if !counted.is_empty() {
        let expected = (folded.contacts.len() + folded.sessions.len()) as i64;
        let written = counted
            .iter()
            .map(|part| format!("(select count(*) from {part})"))
            .collect::<Vec<_>>()
            .join(" + ");
        results.push(format!("projection_rows_unmoved({expected}, {written})"));
    }
    if rows == Rows::Unmoved(Commit::Deferred) {
        // Read at the statement's commit, which this statement is.
        results.push("set_config('synchronous_commit', 'off', true)".to_owned());
    }
    sql.push(" select ");
    match notification {
        Some(payload) => {
            for result in &results {
                sql.push(result).push(", ");
            }
            sql.push("pg_notify(")
                .push_bind(crate::projected::CHANNEL)
                .push(", ")
                .push_bind(payload)
                .push(")");
        }
        None if results.is_empty() => {
            sql.push("1");
        }
        None => {
            sql.push(results.join(", "));
        }
    }
    sql.build().execute(&mut *conn).await?;
    Ok(())
}

/// The `with` parts of a statement, counted as they are opened.
#[derive(Default)]
struct Parts(usize);

impl Parts {
    /// Opens part `name` (`with name as (` or `, name as (`); its writer closes it.
    fn open(&mut self, sql: &mut QueryBuilder<'_, Postgres>, name: &str) {
        sql.push(if self.0 == 0 { "with " } else { ", " })
            .push(name)
            .push(" as (");
        self.0 += 1;
    }
}

/// A read row: its id.
trait Keyed {
    fn id(&self) -> Uuid;
}

impl Keyed for ContactRecord {
    fn id(&self) -> Uuid {
        self.id
    }
}

impl Keyed for SessionRecord {
    fn id(&self) -> Uuid {
        self.id
    }
}

/// The parts of [`write`] that write `table`'s changed rows (`records`, with the versions they
/// were read at): one upsert of them all ([`Rows::Locked`]), or an update of those read that
/// are still at the version read and an insert of the others where none has appeared since
/// ([`Rows::Unmoved`], whose parts go to `counted`).
fn write_rows<'a, T: Serialize + Keyed + Sync>(
    sql: &mut QueryBuilder<'a, Postgres>,
    parts: &mut Parts,
    counted: &mut Vec<String>,
    table: &str,
    columns: &[&str],
    (records, xmins): (&'a Vec<T>, &HashMap<Uuid, String>),
    rows: Rows,
) {
    if records.is_empty() {
        return;
    }
    let list = columns.join(", ");
    let set = |from: &str| {
        columns[1..]
            .iter()
            .map(|c| format!("{c} = {from}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let records = Json(records);
    if rows == Rows::Locked {
        parts.open(sql, &format!("{table}_written"));
        sql.push(format_args!(
            "insert into {table} ({list}) select {list} from jsonb_populate_recordset(null::{table}, "
        ))
        .push_bind(records)
        .push(format_args!(
            ") on conflict (id) do update set {})",
            set("excluded")
        ));
        return;
    }
    let (read_ids, read_xmins): (Vec<Uuid>, Vec<String>) = records
        .0
        .iter()
        .filter_map(|r| xmins.get(&r.id()).map(|x| (r.id(), x.clone())))
        .unzip();
    parts.open(sql, &format!("{table}_rows"));
    sql.push(format_args!(
        "select * from jsonb_populate_recordset(null::{table}, "
    ))
    .push_bind(records)
    .push("))");
    parts.open(sql, &format!("{table}_updated"));
    sql.push(format_args!(
        "update {table} t set {} from {table}_rows r join unnest(",
        set("r")
    ))
    .push_bind(read_ids.clone())
    .push("::uuid[], ")
    .push_bind(read_xmins)
    .push(
        "::text[]) as g(id, xmin) on g.id = r.id \
         where t.id = r.id and t.xmin = g.xmin::xid returning 1)",
    );
    parts.open(sql, &format!("{table}_inserted"));
    sql.push(format_args!(
        "insert into {table} ({list}) select {list} from {table}_rows r where r.id <> all("
    ))
    .push_bind(read_ids)
    .push("::uuid[]) on conflict (id) do nothing returning 1)");
    counted.push(format!("{table}_updated"));
    counted.push(format!("{table}_inserted"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_name_lists_its_projections_in_apply_order_and_reads_back() {
        assert_eq!(
            consumer_name(&Projection::ALL),
            "contacts+sessions+domain_event_logs"
        );
        assert_eq!(
            consumer_name(&[Projection::DomainEventLogs, Projection::Contacts]),
            "contacts+domain_event_logs"
        );
        for subset in [
            vec![Projection::Sessions],
            vec![Projection::Contacts, Projection::DomainEventLogs],
            Projection::ALL.to_vec(),
        ] {
            assert_eq!(covered(&consumer_name(&subset)).collect::<Vec<_>>(), subset);
        }
        // Rows written one per projection (before the names were joined) still read back.
        assert_eq!(
            covered("domain_event_logs").collect::<Vec<_>>(),
            [Projection::DomainEventLogs]
        );
        assert_eq!(covered("something-else").count(), 0);
    }
}
