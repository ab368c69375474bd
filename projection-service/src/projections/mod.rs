//! The projections: each a pure fold of events into read rows plus the SQL that loads and writes
//! those rows in sets. The live JetStream workers and the replay tool call the very same
//! [`apply_batch`], so a rebuild gives exactly the rows the live path gives.
//!
//! Exactly-once effect: a batch is applied in one transaction that also records, for every event
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
use platform::event_store::{EventStore, StoreError};
use platform::personal::{DataKeys, KeySet, PersonalError};
use serde::Serialize;
use sessions::SessionRecord;
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Transaction};
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
    let read = read(tx, keys, projections, events, true).await?;
    let folded = fold_batch(tx, store, projections, events, read).await?;
    let report = folded.report;
    let processed = Processed::of(&folded.handled, started);
    let notification = (report.applied > 0).then(|| crate::projected::payload(events));
    write(tx, &folded, Some(&processed), notification).await?;
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
    let read = read(tx, keys, projections, events, false).await?;
    let folded = fold_batch(tx, store, projections, events, read).await?;
    write(tx, &folded, None, None).await?;
    folded.after_write(tx).await?;
    Ok(folded.report)
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
    tx: &mut Transaction<'_, Postgres>,
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
    } = read;
    let mut folded = Folded::default();
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
                let (changed, handled) = contacts::apply(tx, store, &keys, &list, rows).await?;
                folded.contacts = changed;
                handled
            }
            Projection::Sessions => {
                let rows = std::mem::take(&mut session_rows);
                let (changed, handled) = sessions::apply(tx, store, &keys, &list, rows).await?;
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
    /// The `contacts` rows of its events' contacts, locked for the batch.
    contacts: HashMap<Uuid, ContactRecord>,
    /// The `sessions` rows of its session events, locked for the batch.
    sessions: HashMap<Uuid, SessionRecord>,
    /// Its contacts' data keys as they are now (gap fills of those contacts use them too).
    keys: KeySet,
    /// The (event, projection) pairs applied already (`processed_events`).
    done: HashSet<(Uuid, Projection)>,
}

/// Reads what a batch needs in one statement: the data keys of its events' contacts, the
/// `contacts` and `sessions` rows its projections fold into (locked for the batch; a projection
/// not in `projections` reads none), and, `with_done`, which projections already applied each
/// event. Rows of events applied already are read too: which those are is only known from this
/// very read, and a row read for nothing is only a lock held a moment.
async fn read(
    tx: &mut Transaction<'_, Postgres>,
    keys: &DataKeys,
    projections: &[Projection],
    events: &[EventEnvelope],
    with_done: bool,
) -> Result<Read, ProjectionError> {
    if events.is_empty() {
        return Ok(Read {
            contacts: HashMap::new(),
            sessions: HashMap::new(),
            keys: KeySet::default(),
            done: HashSet::new(),
        });
    }
    let sorted = |ids: Vec<Uuid>| {
        let mut ids = ids;
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let contact_ids = sorted(events.iter().map(|e| e.contact_id).collect());
    let session_ids = sorted(
        events
            .iter()
            .filter(|e| e.aggregate_type == AggregateType::Session)
            .map(|e| e.aggregate_id)
            .collect(),
    );
    let event_ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let mut sql = format!("with keys_read as ({})", DataKeys::rows_sql("$1"));
    let mut columns = vec![
        "(select array_agg(contact_id order by contact_id) from keys_read) as key_contacts"
            .to_owned(),
        "(select array_agg(key_material order by contact_id) from keys_read) as key_material"
            .to_owned(),
        "(select array_agg(kek_id order by contact_id) from keys_read) as kek_ids".to_owned(),
    ];
    // `$1`, the batch's contacts, keys both their keys and their rows.
    let mut binds = 1;
    let mut rows_of = |table: &str, param: usize, read: bool| {
        if read {
            sql.push_str(&format!(
                ", {table}_read as (select to_jsonb(t) as row from {table} t \
                    where t.id = any(${param}) for update)"
            ));
            columns.push(format!(
                "(select jsonb_agg(row) from {table}_read) as {table}"
            ));
        } else {
            columns.push(format!("null::jsonb as {table}"));
        }
    };
    rows_of("contacts", 1, projections.contains(&Projection::Contacts));
    let reads_sessions = projections.contains(&Projection::Sessions) && !session_ids.is_empty();
    if reads_sessions {
        binds += 1;
    }
    rows_of("sessions", binds, reads_sessions);
    if with_done {
        binds += 1;
        sql.push_str(&format!(
            ", done_read as (select event_id, consumer_name::text as name from processed_events \
                where event_id = any(${binds}))"
        ));
        columns.push("(select array_agg(event_id) from done_read) as done_ids".to_owned());
        columns.push("(select array_agg(name) from done_read) as done_names".to_owned());
    } else {
        columns.push("null::uuid[] as done_ids".to_owned());
        columns.push("null::text[] as done_names".to_owned());
    }
    sql.push_str(" select ");
    sql.push_str(&columns.join(", "));
    let mut query = sqlx::query_as::<_, ReadRow>(&sql).bind(&contact_ids);
    if reads_sessions {
        query = query.bind(&session_ids);
    }
    if with_done {
        query = query.bind(&event_ids);
    }
    let row = query.fetch_one(&mut **tx).await?;
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
    Ok(Read {
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
    })
}

/// The one row of [`read`]'s statement.
#[derive(sqlx::FromRow)]
struct ReadRow {
    key_contacts: Option<Vec<Uuid>>,
    key_material: Option<Vec<Option<Vec<u8>>>>,
    kek_ids: Option<Vec<String>>,
    contacts: Option<Json<Vec<ContactRecord>>>,
    sessions: Option<Json<Vec<SessionRecord>>>,
    done_ids: Option<Vec<Uuid>>,
    done_names: Option<Vec<String>>,
}

/// Writes a folded batch in one statement: the changed `contacts` and `sessions` rows (inserted,
/// or every column overwritten), the audit rows (a second delivery inserts nothing), the
/// `processed_events` rows and the notification, each part only when it has something to write.
/// A session row's foreign key to its contact's row is checked at the statement's end, after both.
async fn write(
    tx: &mut Transaction<'_, Postgres>,
    folded: &Folded,
    processed: Option<&Processed>,
    notification: Option<String>,
) -> Result<(), sqlx::Error> {
    let mut sql = QueryBuilder::<Postgres>::new("");
    let mut parts = 0;
    let mut part = |sql: &mut QueryBuilder<'_, Postgres>, name: &str| {
        sql.push(if parts == 0 { "with " } else { ", " })
            .push(name)
            .push(" as (");
        parts += 1;
    };
    if !folded.contacts.is_empty() {
        part(&mut sql, "contacts_written");
        upsert(
            &mut sql,
            "contacts",
            contacts::COLUMNS,
            Json(&folded.contacts),
        );
    }
    if !folded.sessions.is_empty() {
        part(&mut sql, "sessions_written");
        upsert(
            &mut sql,
            "sessions",
            sessions::COLUMNS,
            Json(&folded.sessions),
        );
    }
    if !folded.log.is_empty() {
        part(&mut sql, "logged");
        sql.push(event_log::copy_sql())
            .push(" where e.id = any(")
            .push_bind(&folded.log)
            .push(")")
            .push(event_log::KEEP_EXISTING)
            .push(")");
    }
    if let Some(processed) = processed.filter(|p| !p.ids.is_empty()) {
        part(&mut sql, "processed");
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
    if parts == 0 && notification.is_none() {
        return Ok(());
    }
    match notification {
        Some(payload) => {
            sql.push(" select pg_notify(")
                .push_bind(crate::projected::CHANNEL)
                .push(", ")
                .push_bind(payload)
                .push(")");
        }
        None => {
            sql.push(" select 1");
        }
    }
    sql.build().execute(&mut **tx).await?;
    Ok(())
}

/// `insert … on conflict (id) do update` of every column of `table` from the records in `rows`
/// (`jsonb_populate_recordset`: the records' field names are the columns); closes the part.
fn upsert<'a, T: Serialize + Sync>(
    sql: &mut QueryBuilder<'a, Postgres>,
    table: &str,
    columns: &[&str],
    rows: Json<&'a Vec<T>>,
) {
    let list = columns.join(", ");
    let updates = columns[1..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    sql.push(format_args!(
        "insert into {table} ({list}) select {list} from jsonb_populate_recordset(null::{table}, "
    ))
    .push_bind(rows)
    .push(format_args!(") on conflict (id) do update set {updates})"));
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
