//! The projections by name, what a batch reports, and how an event is decoded for them.

use event_model::{DomainEvent, EventEnvelope};
use platform::event_store::StoreError;
use platform::personal::{KeySet, PersonalError};

/// A projection, by the name it records in `processed_events.consumer_name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    Contacts,
    Sessions,
    Messages,
    DomainEventLogs,
}

impl Projection {
    /// In the order a batch applies them: a session row needs its contact row, a message its
    /// session's.
    pub const ALL: [Projection; 4] = [
        Projection::Contacts,
        Projection::Sessions,
        Projection::Messages,
        Projection::DomainEventLogs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Contacts => "contacts",
            Self::Sessions => "sessions",
            Self::Messages => "messages",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_name_lists_its_projections_in_apply_order_and_reads_back() {
        assert_eq!(
            consumer_name(&Projection::ALL),
            "contacts+sessions+messages+domain_event_logs"
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
