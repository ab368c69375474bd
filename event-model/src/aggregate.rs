//! The kinds of stream, by the name their streams and events carry.

use serde::{Deserialize, Serialize};

/// The kind of aggregate a stream belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateType {
    /// A contact's stream: its id is the contact's id and it holds the `contact.*` events.
    Contact,
    /// A session's stream: its id is the session's id and it holds the `session.*` events.
    Session,
    /// A project's stream: its id is the project's id and it holds the `project.*` events, the
    /// audit of who may call the project.
    Project,
}

impl AggregateType {
    /// The name stores and messages carry (`contact_event_store.aggregate_type`, envelopes,
    /// snapshots): `contact`, `session` or `project`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Contact => "contact",
            Self::Session => "session",
            Self::Project => "project",
        }
    }

    /// The type a stored name stands for ([`AggregateType::as_str`] read back); `None` for any
    /// other text.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "contact" => Some(Self::Contact),
            "session" => Some(Self::Session),
            "project" => Some(Self::Project),
            _ => None,
        }
    }
}

impl std::fmt::Display for AggregateType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
