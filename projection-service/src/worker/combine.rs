//! The live batches of every partition an instance runs, applied together: one read and one
//! write statement for the batches that arrived while the last ones were written, where each
//! partition's worker made two of its own. With live traffic a batch holds one or two events,
//! and those two round trips per batch were a third of the statements the whole pipeline made
//! per command.
//!
//! Safe without the partitions' leases: the write changes a row only where it is still at the
//! version the read returned, and inserts one only where none has appeared
//! (`projection_rows_unmoved`), so a group whose rows another writer changed meanwhile (an
//! instance that took a partition over, a rebuild's swap) writes nothing, and each worker applies
//! its own batch again on its lease. A batch whose messages the store does not back (a forged or
//! mutated message) is handed back to its worker before anything is written: parking is the
//! worker's work. Partitions are by contact, so no two batches of a group fold into one row.
//!
//! Natural batching, as the commands' group writer does: one task and no timer. A batch that
//! finds the task idle goes alone at once; the batches that arrive while it writes form the next
//! group.

use event_model::EventEnvelope;
use platform::event_store::EventStore;
use platform::personal::DataKeys;
use sqlx::PgConnection;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::truth::against_the_store;
use super::Leased;
use crate::projections::{
    apply_unlocked, read_unlocked, BatchReport, Commit, ProjectionError, Wal,
};

/// The most batches written together: a group's statements stay small enough to plan and run
/// in a few milliseconds.
const MAX_GROUP: usize = 32;

/// The queue in front of the instance's one combining task. Cloned into every worker; the task
/// stops once the last clone is gone.
#[derive(Clone)]
pub struct Combiner {
    queue: mpsc::Sender<Submitted>,
}

struct Submitted {
    events: Vec<EventEnvelope>,
    answer: oneshot::Sender<Combined>,
}

/// What became of a batch handed to the [`Combiner`].
pub enum Combined {
    /// Written, its commit not waited for ([`Commit::Deferred`]).
    Applied {
        report: BatchReport,
        /// Where the WAL stood before the commit (read with the events).
        wal: Wal,
    },
    /// Nothing of it written: the worker applies it on its own. The reason, for
    /// `projection_combined_declined_total`.
    Declined(&'static str),
}

/// The `# HELP` text of the families recorded here.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_histogram!(
        "projection_combined_batches",
        Unit::Count,
        "Live batches of the instance's partitions written in one read and one write"
    );
    describe_counter!(
        "projection_combined_declined_total",
        "Live batches handed back to their worker unwritten, by reason"
    );
}

impl std::fmt::Debug for Combiner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Combiner").finish_non_exhaustive()
    }
}

impl Combiner {
    /// Starts the combining task; it writes on a connection of `store`'s pool of its own.
    pub fn start(store: EventStore, keys: DataKeys) -> Self {
        let (queue, receiver) = mpsc::channel(MAX_GROUP * 4);
        tokio::spawn(run(store, keys, receiver));
        Self { queue }
    }

    /// Applies a live batch of stored events with the others that queued with it.
    pub async fn apply(&self, events: &[EventEnvelope]) -> Combined {
        let (answer, answered) = oneshot::channel();
        let submitted = Submitted {
            events: events.to_vec(),
            answer,
        };
        if self.queue.send(submitted).await.is_err() {
            return Combined::Declined("stopped");
        }
        answered.await.unwrap_or(Combined::Declined("stopped"))
    }
}

async fn run(store: EventStore, keys: DataKeys, mut receiver: mpsc::Receiver<Submitted>) {
    let mut held: Option<Leased> = None;
    while let Some(first) = receiver.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(more) => group.push(more),
                Err(_) => break,
            }
        }
        metrics::histogram!("projection_combined_batches").record(group.len() as f64);
        let answers = match connection(&store, &mut held).await {
            Ok(conn) => apply_group(conn, &store, &keys, &group).await,
            Err(e) => Err(e.into()),
        };
        let answers = answers.unwrap_or_else(|e| {
            tracing::warn!(error = %e, batches = group.len(), "a combined write failed; each worker applies its own batch");
            // A connection that failed may be broken: the next group takes a new one.
            held = None;
            group.iter().map(|_| Combined::Declined("failed")).collect()
        });
        for (submitted, answer) in group.into_iter().zip(answers) {
            if let Combined::Declined(reason) = answer {
                metrics::counter!("projection_combined_declined_total", "reason" => reason)
                    .increment(1);
            }
            let _ = submitted.answer.send(answer);
        }
    }
}

/// The task's connection, its plans renewed when due (see `GenericPlans`).
async fn connection<'a>(
    store: &EventStore,
    held: &'a mut Option<Leased>,
) -> Result<&'a mut PgConnection, sqlx::Error> {
    if held.is_none() {
        *held = Some(Leased::new(store.pool().acquire().await?.detach()));
    }
    let Some(Leased { conn, plans }) = held.as_mut() else {
        unreachable!("set above")
    };
    plans.refresh(conn).await?;
    Ok(conn)
}

/// Reads every batch's stored events and rows in one statement, hands back the batches the store
/// does not back, and writes the rest in one statement. One answer per batch, in order.
async fn apply_group(
    conn: &mut PgConnection,
    store: &EventStore,
    keys: &DataKeys,
    group: &[Submitted],
) -> Result<Vec<Combined>, ProjectionError> {
    let ids: Vec<Uuid> = group
        .iter()
        .flat_map(|s| s.events.iter().map(|e| e.event_id))
        .collect();
    let unlocked = read_unlocked(conn, keys, &ids).await?;
    let wal = unlocked.wal;
    let mut answers: Vec<Option<Combined>> = group.iter().map(|_| None).collect();
    let mut truths = Vec::with_capacity(group.len());
    let mut taken = Vec::with_capacity(group.len());
    for (i, submitted) in group.iter().enumerate() {
        let (truth, rejected) = against_the_store(&submitted.events, &unlocked.stored);
        if rejected.is_empty() {
            truths.push(truth);
            taken.push(i);
        } else {
            answers[i] = Some(Combined::Declined("rejected"));
        }
    }
    if !taken.is_empty() {
        let parts: Vec<&[EventEnvelope]> = truths.iter().map(Vec::as_slice).collect();
        match apply_unlocked(conn, store, &parts, unlocked, Commit::Deferred).await? {
            Ok(reports) => {
                for (i, report) in taken.into_iter().zip(reports) {
                    answers[i] = Some(Combined::Applied { report, wal });
                }
            }
            Err(declined) => {
                for i in taken {
                    answers[i] = Some(Combined::Declined(declined.label()));
                }
            }
        }
    }
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every batch answered"))
        .collect())
}
