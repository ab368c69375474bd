//! A batch's one read: the data keys of its events' contacts, the `contacts` and `sessions` rows
//! it folds into with their row versions, which projections already applied each event and, on
//! the live path's first try, the stored events themselves, all in one statement.

use std::collections::{HashMap, HashSet};

use event_model::{AggregateType, EventEnvelope};
use platform::event_store::{EventRow, EVENT_COLUMNS};
use platform::personal::{DataKeys, KeySet};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::contacts::ContactRecord;
use super::projection::{covered, Projection, ProjectionError};
use super::sessions::SessionRecord;
use super::wal::{Wal, WAL_SQL};

/// What a batch reads before it folds.
#[derive(Default)]
pub(super) struct Read {
    /// The `contacts` rows of its events' contacts (locked for the batch, in a transaction).
    pub contacts: HashMap<Uuid, ContactRecord>,
    /// The `sessions` rows of its session events (locked for the batch, in a transaction).
    pub sessions: HashMap<Uuid, SessionRecord>,
    /// Its contacts' data keys as they are now (gap fills of those contacts use them too).
    pub keys: KeySet,
    /// The (event, projection) pairs applied already (`processed_events`).
    pub done: HashSet<(Uuid, Projection)>,
    /// The version (`xmin`) each row was read at.
    pub xmins: Xmins,
}

/// The `xmin` (as text) of each read row: the row version an unlocked write checks it still
/// overwrites (`Rows::Unmoved`).
#[derive(Default)]
pub(super) struct Xmins {
    pub contacts: HashMap<Uuid, String>,
    pub sessions: HashMap<Uuid, String>,
}

/// Which events a batch's read is for.
#[derive(Clone, Copy)]
pub(super) enum ReadBy<'a> {
    /// These events; their rows are locked for the batch's transaction.
    Given(&'a [EventEnvelope], Done),
    /// The stored events with these ids, read by the same statement with everything else, and
    /// nothing locked (the live path's first try, `read_unlocked`).
    Stored(&'a [Uuid]),
}

/// Whether a read looks up which events were applied already.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Done {
    Read,
    /// A rebuild is given every event once.
    Unread,
}

/// The stored events a [`ReadBy::Stored`] read found, the contacts whose keys and rows it read
/// with them, and where the WAL stood.
#[derive(Default)]
pub(super) struct StoredBatch {
    pub events: Vec<EventRow>,
    pub looked_up: HashSet<Uuid>,
    pub wal: Wal,
}

/// Reads what a batch needs in one statement (see the module). Rows of events applied already
/// are read too: which those are is only known from this very read, and a row read for nothing
/// is only a lock held a moment. A projection not in `projections` reads no rows.
pub(super) async fn read(
    conn: &mut PgConnection,
    keys: &DataKeys,
    projections: &[Projection],
    by: ReadBy<'_>,
) -> Result<(Read, Option<StoredBatch>), ProjectionError> {
    if matches!(by, ReadBy::Given(events, _) if events.is_empty()) {
        return Ok((Read::default(), None));
    }
    let (sql, binds) = statement(projections, by);
    if matches!(by, ReadBy::Given(..)) {
        let mut query = sqlx::query_as::<_, ReadRow>(&sql);
        for ids in &binds {
            query = query.bind(ids);
        }
        let row = query.fetch_one(&mut *conn).await?;
        return Ok((row.into_read(keys)?, None));
    }
    let mut query = sqlx::query_as::<_, StoredRow>(&sql);
    for ids in &binds {
        query = query.bind(ids);
    }
    let mut row = None;
    let mut events = Vec::new();
    for stored in query.fetch_all(&mut *conn).await? {
        match stored.event.into_row() {
            Some(event) => events.push(event),
            None => row = Some(stored.read),
        }
    }
    let mut row = row.ok_or(sqlx::Error::RowNotFound)?;
    let stored = StoredBatch {
        events,
        looked_up: row
            .looked_up
            .take()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        wal: Wal {
            inserted: row.wal_inserted.unwrap_or_default(),
            flushed: row.wal_flushed.unwrap_or_default(),
        },
    };
    Ok((row.into_read(keys)?, Some(stored)))
}

/// The ids each part of the statement reads by, as SQL expressions.
struct Sources {
    /// `with` parts the others read from (the stored events and their contacts).
    prefix: String,
    contacts: String,
    /// `None`: no session rows to read.
    sessions: Option<String>,
    /// The events whose `processed_events` rows are read; `None`: none are.
    events: Option<String>,
    lock: &'static str,
}

/// The ids a read is by, bound as `$1`, `$2`, ... (returned in that order).
fn sources(by: ReadBy<'_>) -> (Sources, Vec<Vec<Uuid>>) {
    let mut binds: Vec<Vec<Uuid>> = Vec::new();
    let mut bind = |mut ids: Vec<Uuid>| {
        ids.sort_unstable();
        ids.dedup();
        binds.push(ids);
        format!("${}", binds.len())
    };
    let sources = match by {
        ReadBy::Given(events, done) => {
            let contacts = bind(events.iter().map(|e| e.contact_id).collect());
            let session_ids: Vec<Uuid> = events
                .iter()
                .filter(|e| e.aggregate_type == AggregateType::Session)
                .map(|e| e.aggregate_id)
                .collect();
            let sessions = (!session_ids.is_empty()).then(|| bind(session_ids));
            let events =
                (done == Done::Read).then(|| bind(events.iter().map(|e| e.event_id).collect()));
            Sources {
                prefix: String::new(),
                contacts,
                sessions,
                events,
                lock: " for update",
            }
        }
        ReadBy::Stored(ids) => {
            let ids = bind(ids.to_vec());
            // A session event's contact is the one its metadata names (`EventRow::into_envelope`);
            // one that names none readable looks up nothing, and the batch is declined.
            let prefix = format!(
                "batch as (select {EVENT_COLUMNS} from contact_event_store e where e.id = any({ids})), \
                 batch_contacts as (select distinct case when aggregate_type = 'session' \
                    then case when metadata->>'contact_id' ~* '{UUID_PATTERN}' \
                              then (metadata->>'contact_id')::uuid end \
                    else aggregate_id end as id from batch), "
            );
            Sources {
                prefix,
                contacts: "array(select id from batch_contacts where id is not null)".to_owned(),
                sessions: Some(
                    "array(select aggregate_id from batch where aggregate_type = 'session')"
                        .to_owned(),
                ),
                events: Some(ids),
                lock: "",
            }
        }
    };
    (sources, binds)
}

/// The read's statement and what it binds.
fn statement(projections: &[Projection], by: ReadBy<'_>) -> (String, Vec<Vec<Uuid>>) {
    let (from, binds) = sources(by);
    let mut sql = format!(
        "with {}keys_read as ({})",
        from.prefix,
        DataKeys::rows_sql(&from.contacts)
    );
    let mut columns = vec![
        "(select array_agg(contact_id order by contact_id) from keys_read) as key_contacts"
            .to_owned(),
        "(select array_agg(key_material order by contact_id) from keys_read) as key_material"
            .to_owned(),
        "(select array_agg(kek_id order by contact_id) from keys_read) as kek_ids".to_owned(),
    ];
    let mut rows_of = |table: &str, ids: Option<&str>| match ids {
        Some(ids) => {
            sql.push_str(&format!(
                ", {table}_read as (select to_jsonb(t) as row, t.id, t.xmin::text as xmin \
                    from {table} t where t.id = any({ids}){})",
                from.lock
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
        }
        None => columns.push(format!(
            "null::jsonb as {table}, null::uuid[] as {table}_ids, null::text[] as {table}_xmins"
        )),
    };
    let contacts = projections.contains(&Projection::Contacts);
    rows_of("contacts", contacts.then_some(from.contacts.as_str()));
    let sessions = projections.contains(&Projection::Sessions);
    rows_of("sessions", from.sessions.as_deref().filter(|_| sessions));
    match &from.events {
        Some(ids) => {
            sql.push_str(&format!(
                ", done_read as (select event_id, consumer_name::text as name \
                    from processed_events where event_id = any({ids}))"
            ));
            columns.push("(select array_agg(event_id) from done_read) as done_ids".to_owned());
            columns.push("(select array_agg(name) from done_read) as done_names".to_owned());
        }
        None => columns.push("null::uuid[] as done_ids, null::text[] as done_names".to_owned()),
    }
    if matches!(by, ReadBy::Stored(_)) {
        columns.push("(select array_agg(id) from batch_contacts) as looked_up".to_owned());
        columns.push(WAL_SQL.to_owned());
        // The stored events as rows of their own below the one row of the rest (each side's
        // columns null on the other's rows): as JSON in that one row, building it cost more
        // than all the rest of the statement (38 of 41 ms for 256 events).
        sql.push_str(&format!(
            ", rest as (select {}) \
             select rest.*, b.* from rest left join batch b on false \
             union all select rest.*, b.* from batch b left join rest on false",
            columns.join(", ")
        ));
    } else {
        columns.push(
            "null::uuid[] as looked_up, null::bigint as wal_inserted, \
             null::bigint as wal_flushed"
                .to_owned(),
        );
        sql.push_str(" select ");
        sql.push_str(&columns.join(", "));
    }
    (sql, binds)
}

/// A uuid in its hyphenated text form, the one `EventRow::into_envelope` reads.
const UUID_PATTERN: &str = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

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
    looked_up: Option<Vec<Uuid>>,
    wal_inserted: Option<i64>,
    wal_flushed: Option<i64>,
}

/// A row of a [`ReadBy::Stored`] read: the one row of the rest, or one stored event.
#[derive(sqlx::FromRow)]
struct StoredRow {
    #[sqlx(flatten)]
    read: ReadRow,
    #[sqlx(flatten)]
    event: MaybeEvent,
}

/// [`EventRow`]'s columns, null on the row of the rest.
#[derive(sqlx::FromRow)]
struct MaybeEvent {
    id: Option<Uuid>,
    aggregate_id: Option<Uuid>,
    aggregate_type: Option<String>,
    event_type: Option<String>,
    event_version: Option<String>,
    sequence_number: Option<i64>,
    event_data: Option<serde_json::Value>,
    metadata: Option<serde_json::Value>,
    occurred_at: Option<chrono::NaiveDateTime>,
    created_at: Option<chrono::NaiveDateTime>,
    tenant_id: Option<String>,
    project_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    correlation_id: Option<Uuid>,
    position: Option<i64>,
}

impl MaybeEvent {
    /// The event, unless this is the row of the rest (every column of the store's key and
    /// `not null` columns is there on an event's row).
    fn into_row(self) -> Option<EventRow> {
        Some(EventRow {
            id: self.id?,
            aggregate_id: self.aggregate_id?,
            aggregate_type: self.aggregate_type,
            event_type: self.event_type?,
            event_version: self.event_version,
            sequence_number: self.sequence_number?,
            event_data: self.event_data?,
            metadata: self.metadata,
            occurred_at: self.occurred_at?,
            created_at: self.created_at,
            tenant_id: self.tenant_id?,
            project_id: self.project_id,
            causation_id: self.causation_id,
            correlation_id: self.correlation_id,
            position: self.position?,
        })
    }
}

impl ReadRow {
    fn into_read(self, keys: &DataKeys) -> Result<Read, ProjectionError> {
        let key_rows = self
            .key_contacts
            .unwrap_or_default()
            .into_iter()
            .zip(self.key_material.unwrap_or_default())
            .zip(self.kek_ids.unwrap_or_default())
            .map(|((contact, material), kek)| (contact, material, kek));
        let done = self
            .done_ids
            .unwrap_or_default()
            .into_iter()
            .zip(self.done_names.unwrap_or_default())
            .flat_map(|(id, name)| covered(&name).map(move |p| (id, p)).collect::<Vec<_>>())
            .collect();
        let versions = |ids: Option<Vec<Uuid>>, xmins: Option<Vec<String>>| {
            ids.unwrap_or_default()
                .into_iter()
                .zip(xmins.unwrap_or_default())
                .collect()
        };
        Ok(Read {
            contacts: self
                .contacts
                .map(|r| r.0.into_iter().map(|r| (r.id, r)).collect())
                .unwrap_or_default(),
            sessions: self
                .sessions
                .map(|r| r.0.into_iter().map(|r| (r.id, r)).collect())
                .unwrap_or_default(),
            keys: keys.set_of(key_rows).map_err(ProjectionError::Keys)?,
            done,
            xmins: Xmins {
                contacts: versions(self.contacts_ids, self.contacts_xmins),
                sessions: versions(self.sessions_ids, self.sessions_xmins),
            },
        })
    }
}
