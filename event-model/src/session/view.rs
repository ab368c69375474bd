//! The session as a reader sees it, its status, and the fold that the aggregate, the `sessions`
//! projection and the replay share.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event::{EndReason, Sentiment, SessionEvent};

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
            SessionEvent::Started { .. } => self.start(event),
            SessionEvent::MessageRecorded {
                from_contact,
                agent_id,
                sent_at,
                ..
            } => self.record_message(*from_contact, *agent_id, *sent_at),
            SessionEvent::AgentAssigned {
                agent_id,
                previous_agent_id,
                ..
            } => self.assign_agent(*agent_id, *previous_agent_id),
            SessionEvent::Summarized { .. } => self.summarize(event),
            SessionEvent::Escalated { .. } => self.escalated = true,
            SessionEvent::Resolved { .. } => self.resolved = true,
            SessionEvent::Converted { .. } => self.converted = true,
            SessionEvent::OutcomeTagged { tags } => self.add_outcome_tags(tags),
            SessionEvent::Ended { reason, ended_at } => self.end(*reason, *ended_at),
        }
    }

    /// `session.started`: the view starts over, active from `started_at`. Takes the whole event,
    /// as every field of it lands in the view; does nothing with another event.
    fn start(&mut self, event: &SessionEvent) {
        let SessionEvent::Started {
            contact_id,
            channel_type_id,
            pipeline_id,
            timeout_seconds,
            started_at,
        } = event
        else {
            return;
        };
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

    /// `session.message_recorded`: counts the message and moves the first-message times, the
    /// last activity and the response metrics.
    fn record_message(
        &mut self,
        from_contact: bool,
        agent_id: Option<Uuid>,
        sent_at: DateTime<Utc>,
    ) {
        self.message_count += 1;
        if from_contact {
            self.messages_from_contact += 1;
            self.first_contact_message_at = Some(earliest(self.first_contact_message_at, sent_at));
        } else {
            self.messages_from_agent += 1;
            self.first_agent_response_at = Some(earliest(self.first_agent_response_at, sent_at));
        }
        if let Some(agent) = agent_id {
            self.add_agent(agent);
        }
        self.last_activity_at = Some(self.last_activity_at.map_or(sent_at, |at| at.max(sent_at)));
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

    /// `session.agent_assigned`: the agent joins `agent_ids`; replacing another agent is a
    /// transfer.
    fn assign_agent(&mut self, agent_id: Uuid, previous_agent_id: Option<Uuid>) {
        if previous_agent_id.is_some_and(|previous| previous != agent_id) {
            self.agent_transfers += 1;
        }
        self.add_agent(agent_id);
    }

    /// `session.summarized`: the summary replaces the one before, whole. Takes the whole event,
    /// as every field of it lands in the view; does nothing with another event.
    fn summarize(&mut self, event: &SessionEvent) {
        let SessionEvent::Summarized {
            summary,
            sentiment,
            sentiment_score,
            topics,
            next_steps,
            key_entities,
        } = event
        else {
            return;
        };
        self.summary = summary.clone();
        self.sentiment = *sentiment;
        self.sentiment_score = *sentiment_score;
        self.topics = topics.clone();
        self.next_steps = next_steps.clone();
        self.key_entities = key_entities.clone();
    }

    /// `session.outcome_tagged`: each tag the session does not hold yet joins its tags, in order.
    fn add_outcome_tags(&mut self, tags: &[String]) {
        for tag in tags {
            if !self.outcome_tags.contains(tag) {
                self.outcome_tags.push(tag.clone());
            }
        }
    }

    /// `session.ended`: the session is over, its duration measured from its start (never
    /// negative).
    fn end(&mut self, reason: EndReason, ended_at: DateTime<Utc>) {
        self.status = SessionStatus::Ended;
        self.end_reason = Some(reason);
        self.ended_at = Some(ended_at);
        self.duration_seconds = self
            .started_at
            .map_or(0, |started| (ended_at - started).num_seconds().max(0));
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
