//! The projections: each a pure fold of events into read rows plus the SQL that loads and writes
//! those rows in sets. The live JetStream workers and the replay tool call the very same
//! [`apply_batch`] (the live workers first try [`apply_unlocked`], the same fold and write in two
//! statements and no transaction), so a rebuild gives exactly the rows the live path gives.
//!
//! Exactly-once effect: a batch is applied atomically (in one transaction, or in one statement
//! that checks its rows have not moved since they were read) and also records, for every event
//! it handled, one `processed_events(event_id, consumer_name)` row naming the projections it was
//! applied to ([`consumer_name`]: `contacts+sessions+messages+domain_event_logs` on the live
//! path); a redelivered event finds its row and changes nothing. Each read row also keeps its
//! aggregate's `version`: an event older than the row is a duplicate, and a gap (an event whose
//! predecessors have not arrived) is filled from `contact_event_store` before it is applied.
//! `messages` rows are their events alone: inserted once, never read back to fold.

pub mod as_of;
pub mod contacts;
pub mod event_log;
mod fold;
pub mod messages;
mod projection;
mod read;
pub mod sessions;
mod unlocked;
mod wal;
mod write;

pub use projection::{
    consumer_name, covered, covers_sql, decode, BatchReport, Decoded, Projection, ProjectionError,
};
pub use unlocked::{apply_unlocked, read_unlocked, Declined, Unlocked};
pub use wal::{flush, wal, Commit, Wal};

use std::time::Instant;

use event_model::EventEnvelope;
use fold::{fold_batch, Processed};
use platform::event_store::EventStore;
use platform::personal::DataKeys;
use read::{read, Done, ReadBy};
use sqlx::{Postgres, Transaction};
use write::{write, Rows};

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
    let report = folded.report();
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
    Ok(folded.report())
}
