//! Time travel: a contact's or a session's read row as it stood at a version or an instant,
//! folded from the store with the projections' own folds ([`contacts::fold`],
//! [`sessions::fold`]), never read from the read tables.
//!
//! A `contacts` row is not its own stream's fold alone: `first_interaction_at` and
//! `last_interaction_at` come from its sessions' messages. The row at version N is the one the
//! contact had while it was at version N, up to its next event: the contact's stream folded up
//! to N (from the newest snapshot at or below N), and the times of every message recorded
//! before its event N + 1 (or up to now, for its last version). At an instant, the version is
//! the last whose event occurred at or before it, and the messages those recorded by then.
//! A session's row is its own stream's fold (sessions are short: no snapshot is needed).

use chrono::{DateTime, Utc};
use event_model::{Contact, Snapshot};
use platform::event_store::{EventStore, StoreError};
use platform::personal::{DataKeys, KeyState, StoredSnapshot};
use sqlx::PgConnection;
use uuid::Uuid;

use super::contacts::{self, ContactRecord};
use super::projection::{decode, ProjectionError};
use super::sessions::{self, SessionRecord};

/// Where in an aggregate's history to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Right after this version (its `sequence_number`).
    Version(i64),
    /// At this instant: the last version whose event occurred at or before it.
    Instant(DateTime<Utc>),
}

/// A row as of a version.
#[derive(Debug, Clone, PartialEq)]
pub struct AsOf<T> {
    pub row: T,
    pub version: i64,
}

/// Why there is no row to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    /// No such aggregate in this tenant, or no such version of it (before it existed, or
    /// beyond its last).
    NotThere,
    /// The contact was forgotten: its past is forgotten too.
    Forgotten,
}

/// The version `at` names in a stream of this tenant, and whether its contact was forgotten
/// (for a contact's stream).
async fn resolve(
    conn: &mut PgConnection,
    tenant_id: &str,
    id: Uuid,
    aggregate_type: &str,
    at: At,
) -> Result<Result<i64, Absent>, StoreError> {
    // `occurred_at` is a `timestamp` (UTC, as the inventory has it).
    let instant = match at {
        At::Instant(t) => Some(t.naive_utc()),
        At::Version(_) => None,
    };
    // Each from the end of the stream's key: a stream of 10,000 events costs what one of ten
    // does. A forgotten contact's last event is its `contact.forgotten` (nothing is decided for
    // it afterwards).
    let found = sqlx::query!(
        r#"select
             (select e.sequence_number from contact_event_store e
               where e.aggregate_id = $1 and e.tenant_id = $2 and e.aggregate_type = $3
               order by e.sequence_number desc limit 1) as last,
             (select e.event_type = 'contact.forgotten' from contact_event_store e
               where e.aggregate_id = $1 and e.tenant_id = $2 and e.aggregate_type = $3
               order by e.sequence_number desc limit 1) as forgotten,
             case when $4::timestamp is null then null else
               (select e.sequence_number from contact_event_store e
                 where e.aggregate_id = $1 and e.tenant_id = $2 and e.aggregate_type = $3
                   and e.occurred_at <= $4
                 order by e.sequence_number desc limit 1) end as at_instant"#,
        id,
        tenant_id,
        aggregate_type,
        instant,
    )
    .fetch_one(&mut *conn)
    .await?;
    let Some(last) = found.last else {
        return Ok(Err(Absent::NotThere));
    };
    if found.forgotten == Some(true) {
        return Ok(Err(Absent::Forgotten));
    }
    let version = match at {
        At::Version(n) => n,
        At::Instant(_) => found.at_instant.unwrap_or(0),
    };
    Ok(if (1..=last).contains(&version) {
        Ok(version)
    } else {
        Err(Absent::NotThere)
    })
}

/// The contact's `contacts` row as of `at` (see the module).
pub async fn contact(
    conn: &mut PgConnection,
    store: &EventStore,
    keys: &DataKeys,
    tenant_id: &str,
    id: Uuid,
    at: At,
) -> Result<Result<AsOf<ContactRecord>, Absent>, ProjectionError> {
    let version = match resolve(conn, tenant_id, id, "contact", at).await? {
        Ok(version) => version,
        Err(absent) => return Ok(Err(absent)),
    };
    let keys = keys
        .load(conn, &[id])
        .await
        .map_err(ProjectionError::Keys)?;
    let start = restore(conn, store, &keys, tenant_id, id, version).await?;
    let events = store
        .read_range(&mut *conn, id, start.version + 1, version)
        .await?;
    let mut record = None;
    for envelope in &events {
        let event = decode(&keys, envelope)?.event;
        let row = record.get_or_insert_with(|| ContactRecord::at(&start, envelope));
        contacts::fold(row, envelope, &event);
    }
    let mut record = match record {
        Some(record) => record,
        None => {
            // The snapshot is at the version itself: its tenant and project are the stream's.
            let first = store.read_range(&mut *conn, id, 1, 1).await?;
            let first = first.first().ok_or(StoreError::Corrupt {
                event_id: id,
                reason: "a contact with versions and no first event".into(),
            })?;
            ContactRecord::at(&start, first)
        }
    };
    let cut = match at {
        At::Version(_) => Cut::BeforeVersion(version + 1),
        At::Instant(t) => Cut::At(t),
    };
    let (first, last) = interaction_times(conn, tenant_id, id, cut).await?;
    record.first_interaction_at = first.map(|t| t.naive_utc());
    record.last_interaction_at = last.map(|t| t.naive_utc());
    Ok(Ok(AsOf {
        row: record,
        version,
    }))
}

/// Which messages count for a contact's interaction times.
enum Cut {
    /// Those recorded before the contact's event of this version (all, when it has none yet).
    BeforeVersion(i64),
    /// Those that occurred at or before this instant.
    At(DateTime<Utc>),
}

async fn interaction_times(
    conn: &mut PgConnection,
    tenant_id: &str,
    contact_id: Uuid,
    cut: Cut,
) -> Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>), StoreError> {
    let (next_version, instant) = match cut {
        Cut::BeforeVersion(v) => (Some(v), None),
        Cut::At(t) => (None, Some(t.naive_utc())),
    };
    let times = sqlx::query!(
        r#"select min((e.event_data->>'sent_at')::timestamptz) as first,
                  max((e.event_data->>'sent_at')::timestamptz) as last
             from contact_event_store e
            where e.metadata->>'contact_id' = $5 and e.tenant_id = $2
              and e.aggregate_type = 'session' and e.event_type = 'session.message_recorded'
              and ($3::bigint is null or e.position < coalesce(
                    (select n.position from contact_event_store n
                      where n.aggregate_id = $1 and n.sequence_number = $3),
                    9223372036854775807))
              and ($4::timestamp is null or e.occurred_at <= $4)"#,
        contact_id,
        tenant_id,
        next_version,
        instant,
        contact_id.to_string(),
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((times.first, times.last))
}

/// The contact as of its newest snapshot at or below `version` that opens; the empty contact
/// (version 0) when there is none.
async fn restore(
    conn: &mut PgConnection,
    store: &EventStore,
    keys: &platform::personal::KeySet,
    tenant_id: &str,
    id: Uuid,
    version: i64,
) -> Result<Contact, StoreError> {
    let Some(snapshot) = store
        .snapshot_at_or_below(&mut *conn, tenant_id, id, version)
        .await?
    else {
        return Ok(Contact::default());
    };
    let at = snapshot.last_sequence_number;
    let data = match StoredSnapshot::parse(snapshot.snapshot_data) {
        Ok(StoredSnapshot::Plain(data)) => Some(data),
        Ok(sealed @ StoredSnapshot::Sealed { contact_id, .. }) => match keys.get(contact_id) {
            Some(state @ KeyState::Active(_)) => sealed.open(state, id, at).ok().flatten(),
            _ => None,
        },
        Err(_) => None,
    };
    // A snapshot is a shortcut: one that does not open or is of another schema is passed over.
    Ok(match data.map(Contact::decode) {
        Some(Ok(contact)) if contact.version == at => contact,
        _ => Contact::default(),
    })
}

/// The session's `sessions` row as of `at`; a forgotten contact's session reads as it does now,
/// its personal columns null.
pub async fn session(
    conn: &mut PgConnection,
    store: &EventStore,
    keys: &DataKeys,
    tenant_id: &str,
    id: Uuid,
    at: At,
) -> Result<Result<AsOf<SessionRecord>, Absent>, ProjectionError> {
    let version = match resolve(conn, tenant_id, id, "session", at).await? {
        Ok(version) => version,
        Err(absent) => return Ok(Err(absent)),
    };
    let events = store.read_range(&mut *conn, id, 1, version).await?;
    let Some(contact_id) = events.first().map(|e| e.contact_id) else {
        return Ok(Err(Absent::NotThere));
    };
    let keys = keys
        .load(conn, &[contact_id])
        .await
        .map_err(ProjectionError::Keys)?;
    let mut record = None;
    for envelope in &events {
        let event = decode(&keys, envelope)?.event;
        record = sessions::fold(record, envelope, &event);
    }
    Ok(match record {
        Some(row) => Ok(AsOf { row, version }),
        None => Err(Absent::NotThere),
    })
}
