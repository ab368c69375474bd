//! The one sanctioned rewrite of history: the personal fields of events stored in the clear
//! (`v1`) are sealed with their contact's key (or, for a forgotten contact, dropped), in the
//! store and in every copy of them at once: the outbox, the audit log (`domain_event_logs`) and
//! the dead letters. Snapshots stored in the clear are sealed too.
//!
//! Nothing else ever changes a stored event. The rewrite is idempotent (a row is rewritten only
//! while it is `v1`) and resumable (rewritten rows leave the partial index it walks), so
//! `replay-tool encrypt-history` may be stopped and run again at any time, beside live traffic:
//! readers accept both forms. What it cannot reach is the broker: messages published in the clear
//! stay in the stream until its max age (`replay-tool` says so).

use std::collections::HashMap;

use event_model::{EventEnvelope, Payload, Personal};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::event_store::{EventRow, EventStore, StoreError, EVENT_COLUMNS};
use crate::personal::{self, DataKeys, KeyState};

/// What a rewrite changed (or, dry, would change).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rewritten {
    /// Events sealed (their contact has a key).
    pub events_sealed: u64,
    /// Events of forgotten contacts whose personal fields were dropped.
    pub events_redacted: u64,
    /// Their `outbox_events` copies rewritten.
    pub outbox_rows: u64,
    /// Their audit copies (`domain_event_logs`) rewritten.
    pub log_rows: u64,
    /// Their dead letters (`dead_letter_events`) rewritten.
    pub dead_letters: u64,
    /// Snapshots sealed in place.
    pub snapshots_sealed: u64,
    /// Snapshots of forgotten contacts, or unreadable, deleted (the loader folds events instead).
    pub snapshots_deleted: u64,
    /// Contacts that had no data key (all their events in the clear) and were given one.
    pub keys_created: u64,
}

impl std::ops::AddAssign for Rewritten {
    fn add_assign(&mut self, o: Self) {
        self.events_sealed += o.events_sealed;
        self.events_redacted += o.events_redacted;
        self.outbox_rows += o.outbox_rows;
        self.log_rows += o.log_rows;
        self.dead_letters += o.dead_letters;
        self.snapshots_sealed += o.snapshots_sealed;
        self.snapshots_deleted += o.snapshots_deleted;
        self.keys_created += o.keys_created;
    }
}

/// How many events are still stored in the clear (the work `encrypt-history` has left).
pub async fn plain_events_left(conn: &mut PgConnection) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"select count(*) as "count!" from contact_event_store where event_version = 'v1'"#
    )
    .fetch_one(conn)
    .await?)
}

/// Up to `limit` events stored in the clear, in store order after `after_position`.
pub async fn plain_events(
    conn: &mut PgConnection,
    after_position: i64,
    limit: i64,
) -> Result<Vec<EventEnvelope>, StoreError> {
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "select {EVENT_COLUMNS} from contact_event_store e \
          where e.event_version = 'v1' and e.position > $1 order by e.position limit $2"
    ))
    .bind(after_position)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(EventRow::into_envelope).collect()
}

/// Seals (or, for forgotten contacts, redacts) `events`, which are `v1`, and every copy of them.
/// Contacts without a key get one. With `dry` nothing is written (the counts say what would be).
pub async fn seal_plain(
    tx: &mut Transaction<'_, Postgres>,
    keys: &DataKeys,
    events: &[EventEnvelope],
    dry: bool,
) -> Result<Rewritten, StoreError> {
    let mut done = Rewritten::default();
    let mut states: HashMap<Uuid, Option<KeyState>> = HashMap::new();
    for e in events {
        if states.contains_key(&e.contact_id) {
            continue;
        }
        let state = if dry {
            keys.load(tx, &[e.contact_id])
                .await?
                .get(e.contact_id)
                .cloned()
        } else {
            match keys.for_writing(tx, &e.tenant_id, e.contact_id).await? {
                Some(w) => {
                    done.keys_created += u64::from(w.created);
                    Some(KeyState::Active(w.key))
                }
                None => Some(KeyState::Destroyed),
            }
        };
        if dry && state.is_none() {
            done.keys_created += 1;
        }
        states.insert(e.contact_id, state);
    }
    let mut ids = Vec::with_capacity(events.len());
    let mut data = Vec::with_capacity(events.len());
    for e in events {
        let mut payload = payload_of(e)?;
        let stored = match states.get(&e.contact_id).cloned().flatten() {
            Some(KeyState::Destroyed) => {
                done.events_redacted += 1;
                if matches!(payload.personal, Personal::Plain(_)) {
                    payload.personal = Personal::Redacted;
                }
                payload
                    .into_stored()
                    .map_err(personal::PersonalError::from)?
            }
            Some(KeyState::Active(key)) => {
                done.events_sealed += 1;
                personal::seal_payload(&key, e.contact_id, e.event_id, payload)?
            }
            None => {
                done.events_sealed += 1; // dry: its key would be created
                continue;
            }
        };
        ids.push(e.event_id);
        data.push(stored);
    }
    if dry {
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let copies = sqlx::query!(
            r#"select (select count(*) from outbox_events where event_id = any($1)) as "outbox!",
                      (select count(*) from domain_event_logs where id = any($1)) as "logs!",
                      (select count(*) from dead_letter_events where event_id = any($1)) as "dead!""#,
            &ids,
        )
        .fetch_one(&mut **tx)
        .await?;
        done.outbox_rows = copies.outbox as u64;
        done.log_rows = copies.logs as u64;
        done.dead_letters = copies.dead as u64;
        return Ok(done);
    }
    let copies = rewrite(tx, &ids, &data).await?;
    done.outbox_rows = copies.outbox_rows;
    done.log_rows = copies.log_rows;
    done.dead_letters = copies.dead_letters;
    Ok(done)
}

/// Drops the personal fields of a forgotten contact's events still stored in the clear (and of
/// every copy): run in the transaction that forgets it, after `contact.forgotten` was appended
/// and its key destroyed.
pub async fn redact_plain_of_contact(
    tx: &mut Transaction<'_, Postgres>,
    tenant_id: &str,
    contact_id: Uuid,
) -> Result<u64, StoreError> {
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "select {EVENT_COLUMNS} from contact_event_store e \
          where e.tenant_id = $1 and e.event_version = 'v1' \
            and (e.aggregate_id = $2 or (e.aggregate_type = 'session' and e.metadata->>'contact_id' = $2::text))"
    ))
    .bind(tenant_id)
    .bind(contact_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut ids = Vec::new();
    let mut data = Vec::new();
    for row in rows {
        let e = row.into_envelope()?;
        let mut payload = payload_of(&e)?;
        if !matches!(payload.personal, Personal::Plain(_)) {
            continue; // nothing personal in it
        }
        payload.personal = Personal::Redacted;
        ids.push(e.event_id);
        data.push(
            payload
                .into_stored()
                .map_err(personal::PersonalError::from)?,
        );
    }
    if ids.is_empty() {
        return Ok(0);
    }
    // The request role may not update history: a function of the owner's does it, after checking
    // that each row is this tenant's, its contact forgotten and the new payload only a redaction
    // (migration 0023).
    let rewritten = sqlx::query_scalar!(
        r#"select redact_forgotten_plain_events($1, $2) as "rewritten!""#,
        &ids,
        &data,
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(rewritten as u64)
}

/// A stored event's payload in the current shape; one that cannot be read is corrupt.
fn payload_of(e: &EventEnvelope) -> Result<Payload, StoreError> {
    e.payload().map_err(|err| StoreError::Corrupt {
        event_id: e.event_id,
        reason: err.to_string(),
    })
}

/// Rewrites events (still `v1`) to their `v2` data in the store and every copy, in one
/// statement.
async fn rewrite(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[Uuid],
    data: &[Value],
) -> Result<Rewritten, StoreError> {
    let copies = sqlx::query!(
        r#"with new as (select * from unnest($1::uuid[], $2::jsonb[]) as t(id, data)),
           events as (update contact_event_store e set event_data = n.data, event_version = 'v2'
                        from new n where e.id = n.id and e.event_version = 'v1' returning e.id),
           outbox as (update outbox_events o set event_data = n.data, event_version = 'v2'
                        from new n where o.event_id = n.id returning 1),
           logs as (update domain_event_logs l set payload = n.data
                      from new n where l.id = n.id returning 1),
           dead as (update dead_letter_events d
                       set envelope = jsonb_set(jsonb_set(d.envelope, '{data}', n.data), '{event_version}', '"v2"')
                      from new n where d.event_id = n.id returning 1)
           select (select count(*) from events) as "events!", (select count(*) from outbox) as "outbox!",
                  (select count(*) from logs) as "logs!", (select count(*) from dead) as "dead!""#,
        ids,
        data,
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(Rewritten {
        outbox_rows: copies.outbox as u64,
        log_rows: copies.logs as u64,
        dead_letters: copies.dead as u64,
        ..Rewritten::default()
    })
}

/// Audit rows whose payload differs from their stored event's (a projection that wrote a
/// message published in the clear after the store was rewritten): brought to the store's.
pub async fn sync_log_copies(conn: &mut PgConnection) -> Result<u64, StoreError> {
    Ok(sqlx::query!(
        "update domain_event_logs l set payload = e.event_data from contact_event_store e \
          where l.id = e.id and e.event_version = 'v2' and l.payload is distinct from e.event_data",
    )
    .execute(conn)
    .await?
    .rows_affected())
}

/// [`sync_log_copies`] for the events of these contacts and their sessions only (the audit
/// projection, when it applies `contact.forgotten`).
pub async fn sync_log_copies_of(
    conn: &mut PgConnection,
    contact_ids: &[Uuid],
) -> Result<u64, StoreError> {
    let as_text: Vec<String> = contact_ids.iter().map(Uuid::to_string).collect();
    Ok(sqlx::query!(
        "update domain_event_logs l set payload = e.event_data from contact_event_store e \
          where l.id = e.id and l.payload is distinct from e.event_data \
            and (e.aggregate_id = any($1) \
                 or (e.aggregate_type = 'session' and e.metadata->>'contact_id' = any($2)))",
        contact_ids,
        &as_text,
    )
    .execute(conn)
    .await?
    .rows_affected())
}

/// Seals up to `limit` snapshots stored in the clear with their contact's key; deletes those of
/// forgotten contacts and those that do not say whose they are.
pub async fn seal_plain_snapshots(
    tx: &mut Transaction<'_, Postgres>,
    keys: &DataKeys,
    limit: i64,
    dry: bool,
) -> Result<Rewritten, StoreError> {
    let rows = EventStore::plain_snapshots(&mut **tx, limit).await?;
    let mut done = Rewritten::default();
    for row in rows {
        let contact = match row
            .snapshot_data
            .get("aggregate_type")
            .and_then(Value::as_str)
        {
            Some("contact") => Some(row.aggregate_id),
            Some("session") => row
                .snapshot_data
                .pointer("/state/view/contact_id")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok()),
            _ => None,
        };
        let key = match contact {
            Some(contact) if !dry => keys
                .for_writing(tx, &row.tenant_id, contact)
                .await?
                .map(|w| (contact, w.key)),
            _ => None,
        };
        if dry {
            done.snapshots_sealed += 1;
            continue;
        }
        match key {
            Some((contact, key)) => {
                let sealed = personal::seal_snapshot(
                    &key,
                    contact,
                    row.aggregate_id,
                    row.last_sequence_number,
                    &row.snapshot_data,
                );
                EventStore::replace_snapshot(&mut **tx, row.id, sealed).await?;
                done.snapshots_sealed += 1;
            }
            None => {
                EventStore::delete_snapshot(&mut **tx, row.id).await?;
                done.snapshots_deleted += 1;
            }
        }
    }
    Ok(done)
}
