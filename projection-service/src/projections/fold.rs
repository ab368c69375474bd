//! The projections' work on a batch in memory: which (event, projection) pairs are new, the rows
//! they change, and the `processed_events` rows that record them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use event_model::{AggregateType, ContactEvent, DomainEvent, EventEnvelope};
use platform::event_store::EventStore;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::contacts::{self, ContactRecord};
use super::messages::{self, MessageRecord};
use super::projection::{consumer_name, decode, BatchReport, Decoded, Projection, ProjectionError};
use super::read::{Read, Xmins};
use super::sessions::{self, SessionRecord};

/// A batch folded in memory: the rows it writes, and which (event, projection) pairs it took
/// care of.
#[derive(Default)]
pub(super) struct Folded {
    pub(super) handled: Vec<(Uuid, Projection)>,
    /// The events of the (event, projection) pairs skipped as applied already.
    pub(super) skipped: Vec<Uuid>,
    pub(super) contacts: Vec<ContactRecord>,
    pub(super) sessions: Vec<SessionRecord>,
    /// The batch's new `messages` rows.
    pub(super) messages: Vec<MessageRecord>,
    /// The events whose audit rows the write copies from the store.
    pub(super) log: Vec<Uuid>,
    /// Contacts forgotten in the batch whose sessions' personal columns are nulled after the
    /// write (it may have written those sessions).
    pub(super) forgotten_sessions: Vec<Uuid>,
    /// Contacts forgotten in the batch whose messages' personal columns are nulled after the
    /// write.
    pub(super) forgotten_messages: Vec<Uuid>,
    /// Contacts forgotten in the batch whose audit rows written from plaintext messages of the
    /// previous release take the store's redacted form.
    pub(super) forgotten_log: Vec<Uuid>,
    /// The row versions its rows were read at.
    pub(super) xmins: Xmins,
}

impl Folded {
    /// What the batch did: the (event, projection) pairs it applied, gap fills included, and
    /// those it skipped as applied already.
    pub(super) fn report(&self) -> BatchReport {
        BatchReport {
            applied: self.handled.len(),
            duplicates: self.skipped.len(),
        }
    }

    /// The report of each part of a batch that several batches made up (the parts, in the order
    /// their events were folded). An event filled in from the store ahead of its part's event is
    /// counted with that part: the folds hand each gap's events over right before the event that
    /// needed them.
    pub(super) fn reports(&self, parts: &[&[EventEnvelope]]) -> Vec<BatchReport> {
        let part_of: HashMap<Uuid, usize> = parts
            .iter()
            .enumerate()
            .flat_map(|(i, part)| part.iter().map(move |e| (e.event_id, i)))
            .collect();
        let mut reports = vec![BatchReport::default(); parts.len()];
        let mut filled = 0;
        for (id, _) in &self.handled {
            match part_of.get(id) {
                Some(&i) => {
                    reports[i].applied += 1 + filled;
                    filled = 0;
                }
                None => filled += 1,
            }
        }
        if let Some(last) = reports.last_mut() {
            last.applied += filled;
        }
        for id in &self.skipped {
            if let Some(&i) = part_of.get(id) {
                reports[i].duplicates += 1;
            }
        }
        reports
    }

    pub(super) async fn after_write(
        &self,
        tx: &mut Transaction<'_, Postgres>,
    ) -> Result<(), ProjectionError> {
        if !self.forgotten_sessions.is_empty() {
            sessions::forget_personal_columns(tx, &self.forgotten_sessions).await?;
        }
        if !self.forgotten_messages.is_empty() {
            messages::forget_personal_columns(tx, &self.forgotten_messages).await?;
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
pub(super) async fn fold_batch(
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
        let mut nothing_to_do = Vec::new();
        for envelope in events {
            if done.contains(&(envelope.event_id, projection)) || !seen.insert(envelope.event_id) {
                folded.skipped.push(envelope.event_id);
            } else if envelope.aggregate_type == AggregateType::Project
                && projection != Projection::DomainEventLogs
            {
                // A project's events (who may call it) are the audit log's alone.
                nothing_to_do.push(envelope.event_id);
            } else {
                list.push(decode(&keys, envelope)?);
            }
        }
        folded
            .handled
            .extend(nothing_to_do.into_iter().map(|id| (id, projection)));
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
            Projection::Messages => {
                let (rows, handled) = messages::apply(&list);
                folded.messages = rows;
                folded.forgotten_messages = forgotten_in(&list);
                handled
            }
            Projection::DomainEventLogs => {
                folded.log = list.iter().map(|d| d.envelope.event_id).collect();
                folded.forgotten_log = forgotten_in(&list);
                folded.log.clone()
            }
        };
        folded
            .handled
            .extend(handled.into_iter().map(|id| (id, projection)));
    }
    Ok(folded)
}

/// The `processed_events` rows of a batch: one per event, naming the projections it was applied
/// to, with the batch's time so far.
pub(super) struct Processed {
    pub(super) ids: Vec<Uuid>,
    pub(super) names: Vec<String>,
    pub(super) duration_ms: i64,
}

impl Processed {
    pub(super) fn of(handled: &[(Uuid, Projection)], started: Instant) -> Self {
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
