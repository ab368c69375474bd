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

use event_model::{DomainEvent, EventEnvelope};
use platform::event_store::{EventStore, StoreError};
use platform::personal::{DataKeys, KeySet, PersonalError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::{Postgres, Transaction};
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
    keys.open(envelope)
        .map(|opened| Decoded {
            envelope,
            event: opened.event,
        })
        .map_err(|e| ProjectionError::Poison {
            envelope: Box::new(envelope.clone()),
            reason: e.to_string(),
        })
}

/// The data keys of the contacts in `events`, as they are now, read in the batch's transaction.
async fn batch_keys(
    tx: &mut Transaction<'_, Postgres>,
    keys: &DataKeys,
    events: &[EventEnvelope],
) -> Result<KeySet, ProjectionError> {
    keys.load_for(tx, events)
        .await
        .map_err(ProjectionError::Keys)
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
pub async fn apply_batch(
    tx: &mut Transaction<'_, Postgres>,
    store: &EventStore,
    keys: &DataKeys,
    projections: &[Projection],
    events: &[EventEnvelope],
) -> Result<BatchReport, ProjectionError> {
    let started = Instant::now();
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let done: HashSet<(Uuid, Projection)> = sqlx::query_as::<_, (Uuid, String)>(
        "select event_id, consumer_name::text from processed_events where event_id = any($1)",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .flat_map(|(id, name)| covered(name).map(move |p| (*id, p)))
    .collect();
    let keys = batch_keys(tx, keys, events).await?;
    let (report, processed) = apply_events(tx, store, &keys, projections, events, &done).await?;
    record_processed(tx, &processed, started.elapsed().as_millis() as i64).await?;
    if report.applied > 0 {
        crate::projected::notify(tx, events).await?;
    }
    Ok(report)
}

/// [`apply_batch`] for a reader that is given every event exactly once, in order (a rebuild from
/// the store): `processed_events` is neither read nor written. Returns the report and the ids of
/// the events taken care of (gap fills included; an id may repeat).
pub async fn apply_batch_once(
    tx: &mut Transaction<'_, Postgres>,
    store: &EventStore,
    keys: &DataKeys,
    projections: &[Projection],
    events: &[EventEnvelope],
) -> Result<(BatchReport, Vec<Uuid>), ProjectionError> {
    let keys = batch_keys(tx, keys, events).await?;
    let (report, processed) =
        apply_events(tx, store, &keys, projections, events, &HashSet::new()).await?;
    let mut ids: Vec<Uuid> = processed.into_iter().map(|(id, _)| id).collect();
    ids.sort_unstable();
    ids.dedup();
    Ok((report, ids))
}

/// The projections' work on a batch: every (event, projection) pair not in `done` is applied.
async fn apply_events(
    tx: &mut Transaction<'_, Postgres>,
    store: &EventStore,
    keys: &KeySet,
    projections: &[Projection],
    events: &[EventEnvelope],
    done: &HashSet<(Uuid, Projection)>,
) -> Result<(BatchReport, Vec<(Uuid, Projection)>), ProjectionError> {
    let mut report = BatchReport::default();
    let mut processed: Vec<(Uuid, Projection)> = Vec::new();
    for &projection in projections {
        let mut seen = HashSet::new();
        let mut todo = Vec::new();
        for envelope in events {
            if done.contains(&(envelope.event_id, projection)) || !seen.insert(envelope.event_id) {
                report.duplicates += 1;
            } else {
                todo.push(decode(keys, envelope)?);
            }
        }
        if todo.is_empty() {
            continue;
        }
        let handled = match projection {
            Projection::Contacts => contacts::apply(tx, store, keys, &todo).await?,
            Projection::Sessions => sessions::apply(tx, store, keys, &todo).await?,
            Projection::DomainEventLogs => event_log::apply(tx, &todo).await?,
        };
        report.applied += handled.len();
        processed.extend(handled.into_iter().map(|id| (id, projection)));
    }
    Ok((report, processed))
}

/// One `processed_events` row per event, naming the projections it was applied to.
async fn record_processed(
    tx: &mut Transaction<'_, Postgres>,
    processed: &[(Uuid, Projection)],
    duration_ms: i64,
) -> Result<(), sqlx::Error> {
    if processed.is_empty() {
        return Ok(());
    }
    let mut by_event: BTreeMap<Uuid, Vec<Projection>> = BTreeMap::new();
    for &(id, projection) in processed {
        by_event.entry(id).or_default().push(projection);
    }
    let (ids, names): (Vec<Uuid>, Vec<String>) = by_event
        .into_iter()
        .map(|(id, projections)| (id, consumer_name(&projections)))
        .unzip();
    sqlx::query(
        "insert into processed_events (event_id, consumer_name, processing_duration_ms) \
         select id, name, $3 from unnest($1::uuid[], $2::text[]) as t(id, name) \
         on conflict (event_id, consumer_name) do nothing",
    )
    .bind(&ids)
    .bind(&names)
    .bind(duration_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A read row: the serde record of a table whose field names are the columns, keyed by `id`.
pub(crate) trait ReadRow:
    DeserializeOwned + Serialize + Send + Sync + Unpin + 'static
{
    fn id(&self) -> Uuid;
}

/// Reads rows of a read table by id, locked for the batch (`to_jsonb`), keyed by id. No ids, no
/// round trip (a batch of contact events only has no session rows to read).
pub(crate) async fn load_rows<T: ReadRow>(
    tx: &mut Transaction<'_, Postgres>,
    table: &str,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, T>, ProjectionError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<sqlx::types::Json<T>> = sqlx::query_scalar(&format!(
        "select to_jsonb(t) from {table} t where t.id = any($1) for update"
    ))
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|r| (r.0.id(), r.0)).collect())
}

/// Writes records into a read table in one statement (`jsonb_populate_recordset`), inserting new
/// ids and overwriting every listed column of existing ones. `columns[0]` is the key, `id`.
pub(crate) async fn upsert_rows<T: ReadRow>(
    tx: &mut Transaction<'_, Postgres>,
    table: &str,
    columns: &[&str],
    records: &[&T],
) -> Result<(), ProjectionError> {
    if records.is_empty() {
        return Ok(());
    }
    let list = columns.join(", ");
    let updates = columns[1..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    sqlx::query(&format!(
        "insert into {table} ({list}) select {list} from jsonb_populate_recordset(null::{table}, $1) \
         on conflict (id) do update set {updates}"
    ))
    .bind(sqlx::types::Json(records))
    .execute(&mut **tx)
    .await?;
    Ok(())
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
