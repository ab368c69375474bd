//! The store is the truth: what a worker applies is each message's event as
//! `contact_event_store` holds it, never the message itself.

use event_model::EventEnvelope;

/// Why a message was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rejected {
    /// No stored event has its id.
    NotInStore,
    /// The stored event with its id is not what the message says.
    Differs,
}

impl Rejected {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::NotInStore => "not_in_store",
            Self::Differs => "differs",
        }
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotInStore => "rejected: no stored event has this id; never applied",
            Self::Differs => {
                "rejected: the stored event with this id differs from the message; the stored one was applied"
            }
        })
    }
}

/// The events to apply (the stored ones the messages name, in message order) and the messages
/// rejected, with why.
pub(super) fn against_the_store(
    received: &[EventEnvelope],
    stored: &[EventEnvelope],
) -> (Vec<EventEnvelope>, Vec<(EventEnvelope, Rejected)>) {
    let stored: std::collections::HashMap<_, _> = stored.iter().map(|e| (e.event_id, e)).collect();
    let mut truth = Vec::with_capacity(received.len());
    let mut rejected = Vec::new();
    for message in received {
        match stored.get(&message.event_id) {
            None => rejected.push((message.clone(), Rejected::NotInStore)),
            Some(event) => {
                if *event != message {
                    rejected.push((message.clone(), Rejected::Differs));
                }
                // A second message naming the same event is a duplicate the batch skips.
                truth.push((*event).clone());
            }
        }
    }
    (truth, rejected)
}
