//! What a decision needs from outside the aggregate.

use chrono::{DateTime, Utc};

use crate::values;

/// What a decision needs from the world outside the aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The time the command is decided at (injected so tests and replays are deterministic).
    pub now: DateTime<Utc>,
    /// The project's session timeout (`projects.session_timeout_minutes`).
    pub session_timeout: values::SessionTimeout,
}
