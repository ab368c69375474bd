//! The Session aggregate: one conversation with a contact on one channel, from its first message
//! to its end, and every metric the product reports on it.
//!
//! Metrics come from event times only (`sent_at`, `started_at`, `ended_at`), never the wall
//! clock, so replaying the events gives the same numbers.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::DomainError;
use crate::values;

/// Where a session is in its life: `New` until `session.started`, `Active` until `session.ended`,
/// then `Ended` for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// No `session.started` yet: the session does not exist.
    #[default]
    New,
    /// Started and not ended: messages and agents may be recorded, and it ends once idle past its
    /// timeout.
    Active,
    /// Ended for good; only its summary and outcome can still change.
    Ended,
}

impl SessionStatus {
    /// The name the `sessions` read table stores: `active` or `ended` (`new` never reaches it,
    /// since a row is written from `session.started` on).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Active => "active",
            Self::Ended => "ended",
        }
    }
}

/// Why a session ended; stored by its snake_case name (`sessions.end_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// No traffic for the session's whole timeout. Only the system decides it (the sweeper, or an
    /// inbound message that finds the session idle too long); a caller cannot.
    InactivityTimeout,
    /// Closed by hand through the API.
    ManualClose,
    /// Closed because the contact asked for it.
    ContactRequest,
    /// Closed by the agent handling it.
    AgentClose,
    /// Closed by the system: its contact was deleted or forgotten. A caller may send it too.
    SystemClose,
}

impl EndReason {
    /// The stored name (`sessions.end_reason`, the same as the serde form), e.g.
    /// `inactivity_timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InactivityTimeout => "inactivity_timeout",
            Self::ManualClose => "manual_close",
            Self::ContactRequest => "contact_request",
            Self::AgentClose => "agent_close",
            Self::SystemClose => "system_close",
        }
    }
}

/// A session's overall sentiment as its summary judges it; stored by its lower-case name
/// (`sessions.sentiment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sentiment {
    /// On the whole positive.
    Positive,
    /// Neither clearly positive nor clearly negative.
    Neutral,
    /// On the whole negative.
    Negative,
    /// Clearly positive and clearly negative parts together, which `Neutral` would hide.
    Mixed,
}

impl Sentiment {
    /// The stored name (`sessions.sentiment`, the same as the serde form): `positive`, `neutral`,
    /// `negative` or `mixed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Positive => "positive",
            Self::Neutral => "neutral",
            Self::Negative => "negative",
            Self::Mixed => "mixed",
        }
    }
}

/// An event of a session's stream. Serialised as `{"type": <event type>, "data": {...}}`, like
/// [`crate::ContactEvent`]; stored names and fields never change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SessionEvent {
    /// `session.started`: the session exists and is active. Appended with the contact's
    /// `contact.session_opened` in one transaction; always the first event of its stream.
    #[serde(rename = "session.started")]
    Started {
        /// The contact the session is with; the session's events are partitioned under this id.
        contact_id: Uuid,
        /// The channel type the session is on (`channel_types.id`, positive).
        channel_type_id: i64,
        /// The pipeline the session was put in; `None` when the command named none. Not checked
        /// against any table here.
        pipeline_id: Option<Uuid>,
        /// How long, in seconds, the session may go without traffic before it ends: the project's
        /// timeout when it started, fixed for the session's life.
        timeout_seconds: i64,
        /// When it started, to the microsecond: the decision time, or the `sent_at` of the message
        /// that opened it.
        started_at: DateTime<Utc>,
    },
    /// `session.message_recorded`: one message, from the contact or from the agent side, counted in
    /// the session's metrics.
    #[serde(rename = "session.message_recorded")]
    MessageRecorded {
        /// The message's id as the caller gave it; `None` when it gave none. Not used to
        /// de-duplicate: the same id recorded twice counts twice.
        message_id: Option<Uuid>,
        /// `true` for a message from the contact, `false` for one from the agent side.
        from_contact: bool,
        /// The agent who sent it: always `None` on a message from the contact, and may be `None` on
        /// one from the agent side. An agent new to the session joins its `agent_ids`.
        agent_id: Option<Uuid>,
        /// When the message was sent, as the caller says, to the microsecond. The metrics use it,
        /// not the time it was recorded, so a replay gives the same numbers.
        sent_at: DateTime<Utc>,
    },
    /// `session.agent_assigned`: an agent takes charge of the session. Never for the agent already
    /// in charge; a different one is a transfer.
    #[serde(rename = "session.agent_assigned")]
    AgentAssigned {
        /// The agent now in charge.
        agent_id: Uuid,
        /// How the assignment came about: `manual`, `automatic` or `reassignment_<why>`, at most 64
        /// bytes; `manual` when the command named none.
        source: String,
        /// The agent in charge before; `None` for the session's first assignment, which is not a
        /// transfer.
        previous_agent_id: Option<Uuid>,
        /// The routing strategy that chose the agent, free text of at most 255 characters; `None`
        /// when not given.
        strategy: Option<String>,
        /// Why, free text of at most 1,000 characters; personal. `None` when not given or once the
        /// contact is forgotten.
        reason: Option<String>,
    },
    /// `session.summarized`: the session's summary, replacing any earlier one whole.
    ///
    /// `summary`, `topics`, `next_steps` and `key_entities` are personal: `None` once redacted.
    #[serde(rename = "session.summarized")]
    Summarized {
        /// The summary, trimmed, 1 to 20,000 characters.
        summary: Option<String>,
        /// The overall sentiment; `None` when the summary judges none.
        sentiment: Option<Sentiment>,
        /// The sentiment as a number from -1 (most negative) to 1 (most positive), never NaN;
        /// `None` when not given.
        sentiment_score: Option<f64>,
        /// The topics discussed: at most 200, each trimmed and 1 to 1,000 characters.
        topics: Option<Vec<String>>,
        /// The next steps agreed: at most 200, each trimmed and 1 to 1,000 characters.
        next_steps: Option<Vec<String>>,
        /// Entities the session names, as a JSON object or array whose inside is not checked;
        /// `None` also when not given.
        key_entities: Option<serde_json::Value>,
    },
    /// `session.escalated`: the session was escalated; set once, never undone.
    #[serde(rename = "session.escalated")]
    Escalated {
        /// When it was marked: the decision time, to the microsecond.
        at: DateTime<Utc>,
    },
    /// `session.resolved`: the session was resolved; only once it has ended, set once, never
    /// undone.
    #[serde(rename = "session.resolved")]
    Resolved {
        /// When it was marked: the decision time, to the microsecond.
        at: DateTime<Utc>,
    },
    /// `session.converted`: the session led to a conversion; set once, never undone.
    #[serde(rename = "session.converted")]
    Converted {
        /// When it was marked: the decision time, to the microsecond.
        at: DateTime<Utc>,
    },
    /// `session.outcome_tagged`: outcome tags were added (they are never removed).
    #[serde(rename = "session.outcome_tagged")]
    OutcomeTagged {
        /// The tags new to the session, in the order given, each trimmed and 1 to 64
        /// characters; the session then holds at most 200.
        tags: Vec<String>,
    },
    /// `session.ended`: the session is over, for good. Appended with the contact's
    /// `contact.session_closed` in one transaction.
    #[serde(rename = "session.ended")]
    Ended {
        /// Why it ended.
        reason: EndReason,
        /// When it ended, to the microsecond: the decision time, or for an inactivity timeout the
        /// moment the timeout ran out (last activity plus timeout), so that its duration does not
        /// count how late the sweeper came.
        ended_at: DateTime<Utc>,
    },
}

impl SessionEvent {
    /// The event's stored name, `session.<verb>`: the same as its serde tag, and never changed.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Started { .. } => "session.started",
            Self::MessageRecorded { .. } => "session.message_recorded",
            Self::AgentAssigned { .. } => "session.agent_assigned",
            Self::Summarized { .. } => "session.summarized",
            Self::Escalated { .. } => "session.escalated",
            Self::Resolved { .. } => "session.resolved",
            Self::Converted { .. } => "session.converted",
            Self::OutcomeTagged { .. } => "session.outcome_tagged",
            Self::Ended { .. } => "session.ended",
        }
    }
}

/// The session as a reader sees it: every column of the `sessions` read table that the
/// session's events determine. The aggregate and the `sessions` projection fold it with the same
/// [`SessionView::apply`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    /// The contact the session is with.
    pub contact_id: Uuid,
    /// The channel type the session is on.
    pub channel_type_id: i64,
    /// The pipeline the session was put in; `None` when none was named.
    pub pipeline_id: Option<Uuid>,
    /// Where the session is in its life; `New` only before `session.started`.
    pub status: SessionStatus,
    /// When the session started; `None` only before `session.started`.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended; `None` while it has not.
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it ended; `None` while it has not.
    pub end_reason: Option<EndReason>,
    /// The inactivity timeout in seconds, fixed when the session started (the read table holds it
    /// in nanoseconds, `timeout_duration`: see [`crate::values::SessionTimeout`]).
    pub timeout_seconds: i64,
    /// The latest `sent_at` of its messages, or its start while it has none: what the timeout
    /// counts from. Never moves back, whatever order messages arrive in.
    pub last_activity_at: Option<DateTime<Utc>>,
    /// Messages recorded, from either side.
    pub message_count: i64,
    /// Messages from the contact.
    pub messages_from_contact: i64,
    /// Messages from the agent side, with or without an agent id.
    pub messages_from_agent: i64,
    /// Whole seconds from start to end, never negative; 0 until it ends.
    pub duration_seconds: i64,
    /// The earliest `sent_at` of a message from the contact (earliest, whatever order they were
    /// recorded in); `None` until one.
    pub first_contact_message_at: Option<DateTime<Utc>>,
    /// The earliest `sent_at` of a message from the agent side; `None` until one.
    pub first_agent_response_at: Option<DateTime<Utc>>,
    /// Whole seconds from the contact's first message to the agent side's first, when the contact
    /// spoke first (or both at once); `None` until both sides have spoken, or when the agent side
    /// spoke first.
    pub agent_response_time_seconds: Option<i64>,
    /// Whole seconds from the agent side's first message to the contact's first, when the agent
    /// side spoke first; `None` until both sides have spoken, or when the contact spoke first.
    pub contact_wait_time_seconds: Option<i64>,
    /// Every agent that took part, in order of first appearance.
    pub agent_ids: Vec<Uuid>,
    /// How many assignments replaced one agent with another (a first assignment is not a transfer).
    pub agent_transfers: i64,
    /// The latest summary; personal. `None` until summarized, or once redacted (its contact
    /// forgotten).
    pub summary: Option<String>,
    /// The latest summary's sentiment; `None` when it gave none.
    pub sentiment: Option<Sentiment>,
    /// The latest summary's score, -1 to 1; `None` when it gave none.
    pub sentiment_score: Option<f64>,
    /// The latest summary's topics; personal. `None` until summarized, or once redacted.
    pub topics: Option<Vec<String>>,
    /// The latest summary's next steps; personal. `None` until summarized, or once redacted.
    pub next_steps: Option<Vec<String>>,
    /// The latest summary's key entities (a JSON object or array); personal. `None` when not given,
    /// or once redacted.
    pub key_entities: Option<serde_json::Value>,
    /// Whether the session was marked resolved (only after it ended); never reset.
    pub resolved: bool,
    /// Whether the session was escalated; never reset.
    pub escalated: bool,
    /// Whether the session led to a conversion; never reset.
    pub converted: bool,
    /// Outcome tags in the order first added, without duplicates, at most 200.
    pub outcome_tags: Vec<String>,
}

impl SessionView {
    /// Folds one event of the session. Infallible: a stored event is a fact. `session.started`
    /// resets the view whole; every metric comes from times the events carry.
    pub fn apply(&mut self, event: &SessionEvent) {
        match event {
            SessionEvent::Started {
                contact_id,
                channel_type_id,
                pipeline_id,
                timeout_seconds,
                started_at,
            } => {
                *self = SessionView {
                    contact_id: *contact_id,
                    channel_type_id: *channel_type_id,
                    pipeline_id: *pipeline_id,
                    status: SessionStatus::Active,
                    started_at: Some(*started_at),
                    timeout_seconds: *timeout_seconds,
                    last_activity_at: Some(*started_at),
                    ..SessionView::default()
                };
            }
            SessionEvent::MessageRecorded {
                from_contact,
                agent_id,
                sent_at,
                ..
            } => {
                self.message_count += 1;
                if *from_contact {
                    self.messages_from_contact += 1;
                    self.first_contact_message_at =
                        Some(earliest(self.first_contact_message_at, *sent_at));
                } else {
                    self.messages_from_agent += 1;
                    self.first_agent_response_at =
                        Some(earliest(self.first_agent_response_at, *sent_at));
                }
                if let Some(agent) = agent_id {
                    self.add_agent(*agent);
                }
                self.last_activity_at = Some(
                    self.last_activity_at
                        .map_or(*sent_at, |at| at.max(*sent_at)),
                );
                // Whoever spoke first waited for the other: the agent's response time when the
                // contact opened, the contact's wait when an agent opened.
                (
                    self.agent_response_time_seconds,
                    self.contact_wait_time_seconds,
                ) = match (self.first_contact_message_at, self.first_agent_response_at) {
                    (Some(contact), Some(agent)) if contact <= agent => {
                        (Some((agent - contact).num_seconds()), None)
                    }
                    (Some(contact), Some(agent)) => (None, Some((contact - agent).num_seconds())),
                    _ => (None, None),
                };
            }
            SessionEvent::AgentAssigned {
                agent_id,
                previous_agent_id,
                ..
            } => {
                if previous_agent_id.is_some_and(|previous| previous != *agent_id) {
                    self.agent_transfers += 1;
                }
                self.add_agent(*agent_id);
            }
            SessionEvent::Summarized {
                summary,
                sentiment,
                sentiment_score,
                topics,
                next_steps,
                key_entities,
            } => {
                self.summary = summary.clone();
                self.sentiment = *sentiment;
                self.sentiment_score = *sentiment_score;
                self.topics = topics.clone();
                self.next_steps = next_steps.clone();
                self.key_entities = key_entities.clone();
            }
            SessionEvent::Escalated { .. } => self.escalated = true,
            SessionEvent::Resolved { .. } => self.resolved = true,
            SessionEvent::Converted { .. } => self.converted = true,
            SessionEvent::OutcomeTagged { tags } => {
                for tag in tags {
                    if !self.outcome_tags.contains(tag) {
                        self.outcome_tags.push(tag.clone());
                    }
                }
            }
            SessionEvent::Ended { reason, ended_at } => {
                self.status = SessionStatus::Ended;
                self.end_reason = Some(*reason);
                self.ended_at = Some(*ended_at);
                self.duration_seconds = self
                    .started_at
                    .map_or(0, |started| (*ended_at - started).num_seconds().max(0));
            }
        }
    }

    fn add_agent(&mut self, agent: Uuid) {
        if !self.agent_ids.contains(&agent) {
            self.agent_ids.push(agent);
        }
    }

    /// When an active session stops being active for lack of traffic.
    pub fn times_out_at(&self) -> DateTime<Utc> {
        let last = self
            .last_activity_at
            .or(self.started_at)
            .unwrap_or_default();
        last + crate::values::SessionTimeout::from_seconds(self.timeout_seconds).duration()
    }

    /// Whether something happening at `at` comes after the session has already timed out.
    pub fn idle_too_long_at(&self, at: DateTime<Utc>) -> bool {
        self.status == SessionStatus::Active && at > self.times_out_at()
    }

    /// Whether `event` is a summary the session holds already (summarizing it again changes
    /// nothing).
    pub fn has_summary(&self, event: &SessionEvent) -> bool {
        matches!(event, SessionEvent::Summarized { summary, sentiment, sentiment_score, topics, next_steps, key_entities }
            if self.summary == *summary
                && self.sentiment == *sentiment
                && self.sentiment_score == *sentiment_score
                && self.topics == *topics
                && self.next_steps == *next_steps
                && self.key_entities == *key_entities)
    }
}

fn earliest(current: Option<DateTime<Utc>>, candidate: DateTime<Utc>) -> DateTime<Utc> {
    current.map_or(candidate, |c| c.min(candidate))
}

/// The Session aggregate's state: its view plus the agent currently in charge.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The last applied `sequence_number` (0 = no such session).
    pub version: i64,
    /// What readers see of the session: folded by the same [`SessionView::apply`] as the `sessions`
    /// projection.
    pub view: SessionView,
    /// The agent in charge: the last `session.agent_assigned`'s. `None` until the first assignment;
    /// an agent who only sends messages does not take charge.
    pub current_agent: Option<Uuid>,
}

impl Session {
    /// Whether the session's stream has any event (it starts with `session.started`).
    pub fn exists(&self) -> bool {
        self.version > 0
    }

    /// Whether the session has started and not ended.
    pub fn is_active(&self) -> bool {
        self.view.status == SessionStatus::Active
    }

    /// Folds one stored event, `sequence_number` being its place in the stream. Infallible: a
    /// stored event is a fact.
    pub fn apply(&mut self, sequence_number: i64, event: &SessionEvent) {
        self.view.apply(event);
        if let SessionEvent::AgentAssigned { agent_id, .. } = event {
            self.current_agent = Some(*agent_id);
        }
        self.version = sequence_number;
    }
}

/// A message to record, as a command gives it, not yet checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// The message's id, if the caller has one; not used to de-duplicate.
    pub message_id: Option<Uuid>,
    /// `true` when the contact sent it, `false` for the agent side.
    pub from_contact: bool,
    /// The agent who sent it; must be `None` when `from_contact`.
    /// [`crate::SessionCommand::RecordMessage`] refuses one that would be the session's 65th
    /// distinct agent.
    pub agent_id: Option<Uuid>,
    /// When it was sent, as the caller says; kept to the microsecond. Not checked against the
    /// session's start or the present.
    pub sent_at: DateTime<Utc>,
}

impl NewMessage {
    pub(crate) fn validated(self) -> Result<Self, DomainError> {
        if self.from_contact && self.agent_id.is_some() {
            return Err(DomainError::invalid(
                "agent_id",
                "must be absent on a message from the contact",
            ));
        }
        Ok(Self {
            sent_at: values::instant(self.sent_at),
            ..self
        })
    }

    pub(crate) fn into_event(self) -> SessionEvent {
        SessionEvent::MessageRecorded {
            message_id: self.message_id,
            from_contact: self.from_contact,
            agent_id: self.agent_id,
            sent_at: self.sent_at,
        }
    }
}

/// A session summary as the summarize command gives it, not yet checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSummary {
    /// The summary; required: trimmed, it must be 1 to 20,000 characters.
    pub summary: String,
    /// The overall sentiment; `None`: not judged.
    pub sentiment: Option<Sentiment>,
    /// A score from -1 (most negative) to 1 (most positive); `None`: not given.
    pub sentiment_score: Option<f64>,
    /// The topics discussed: at most 200, each trimmed and 1 to 1,000 characters.
    pub topics: Vec<String>,
    /// The next steps agreed: at most 200, each trimmed and 1 to 1,000 characters.
    pub next_steps: Vec<String>,
    /// Entities the session names, a JSON object or array; `None`: not given.
    pub key_entities: Option<serde_json::Value>,
}

/// An outcome change as the set-outcome command gives it; each `None` leaves that part as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// `Some(true)` marks the session escalated; `Some(false)` is refused once it is (a flag is
    /// never undone).
    pub escalated: Option<bool>,
    /// `Some(true)` marks it resolved, refused while it is still active; `Some(false)` is refused
    /// once it is resolved.
    pub resolved: Option<bool>,
    /// `Some(true)` marks it converted; `Some(false)` is refused once it is.
    pub converted: Option<bool>,
    /// Tags to add (never removed): at most 200 in the list, each trimmed and 1 to 64 characters;
    /// the session then holds at most 200.
    pub outcome_tags: Option<Vec<String>>,
}
