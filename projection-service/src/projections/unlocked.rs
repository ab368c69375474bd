//! The live path's first try at a batch: two round trips and no transaction of its own (see
//! [`read_unlocked`]), its commit durable or [`Commit::Deferred`].

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::Instant;

use event_model::EventEnvelope;
use platform::event_store::{EventRow, EventStore};
use platform::personal::DataKeys;
use sqlx::PgConnection;
use uuid::Uuid;

use super::fold::{fold_batch, Processed};
use super::projection::{BatchReport, Projection, ProjectionError};
use super::read::{read, Read, ReadBy};
use super::wal::{Commit, Wal};
use super::write::{write, Rows};

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

/// Applies the stored events of [`read_unlocked`]'s batch to every projection in one statement
/// without a transaction: each row is written only where it is still as read (see
/// [`Rows::Unmoved`]). The batch may be made of several partitions' batches, its `parts` (each in
/// order, no two with events of one contact); the answer is each part's report. A batch that
/// needs more (a transaction to park or forget in) or whose rows moved is declined with nothing
/// written, for [`apply_batch`] to apply.
pub async fn apply_unlocked(
    conn: &mut PgConnection,
    store: &EventStore,
    parts: &[&[EventEnvelope]],
    unlocked: Unlocked,
    commit: Commit,
) -> Result<Result<Vec<BatchReport>, Declined>, ProjectionError> {
    let started = Instant::now();
    let events: Cow<'_, [EventEnvelope]> = match parts {
        [one] => Cow::Borrowed(one),
        several => Cow::Owned(several.concat()),
    };
    let events = &*events;
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
    if !folded.forgotten_sessions.is_empty()
        || !folded.forgotten_messages.is_empty()
        || !folded.forgotten_log.is_empty()
    {
        return Ok(Err(Declined::Forgets));
    }
    let processed = Processed::of(&folded.handled, started);
    let notification = (folded.report().applied > 0).then(|| crate::projected::payload(events));
    let rows = Rows::Unmoved(commit);
    match write(conn, &folded, Some(&processed), notification, rows).await {
        Ok(()) => Ok(Ok(folded.reports(parts))),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(ROWS_MOVED) => {
            Ok(Err(Declined::Moved))
        }
        Err(other) => Err(other.into()),
    }
}

/// The SQLSTATE `projection_rows_unmoved` aborts a write with (serialization_failure).
const ROWS_MOVED: &str = "40001";
