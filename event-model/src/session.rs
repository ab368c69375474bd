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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// No `session.started` yet: the session does not exist.
    #[default]
    New,
    Active,
    Ended,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Active => "active",
            Self::Ended => "ended",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    InactivityTimeout,
    ManualClose,
    ContactRequest,
    AgentClose,
    SystemClose,
}

impl EndReason {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sentiment {
    Positive,
    Neutral,
    Negative,
    Mixed,
}

impl Sentiment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Positive => "positive",
            Self::Neutral => "neutral",
            Self::Negative => "negative",
            Self::Mixed => "mixed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SessionEvent {
    #[serde(rename = "session.started")]
    Started {
        contact_id: Uuid,
        channel_type_id: i64,
        pipeline_id: Option<Uuid>,
        timeout_seconds: i64,
        started_at: DateTime<Utc>,
    },
    #[serde(rename = "session.message_recorded")]
    MessageRecorded {
        message_id: Option<Uuid>,
        from_contact: bool,
        agent_id: Option<Uuid>,
        sent_at: DateTime<Utc>,
    },
    #[serde(rename = "session.agent_assigned")]
    AgentAssigned {
        agent_id: Uuid,
        source: String,
        previous_agent_id: Option<Uuid>,
        strategy: Option<String>,
        reason: Option<String>,
    },
    /// `summary`, `topics`, `next_steps` and `key_entities` are personal: `None` once redacted.
    #[serde(rename = "session.summarized")]
    Summarized {
        summary: Option<String>,
        sentiment: Option<Sentiment>,
        sentiment_score: Option<f64>,
        topics: Option<Vec<String>>,
        next_steps: Option<Vec<String>>,
        key_entities: Option<serde_json::Value>,
    },
    #[serde(rename = "session.escalated")]
    Escalated { at: DateTime<Utc> },
    #[serde(rename = "session.resolved")]
    Resolved { at: DateTime<Utc> },
    #[serde(rename = "session.converted")]
    Converted { at: DateTime<Utc> },
    #[serde(rename = "session.outcome_tagged")]
    OutcomeTagged { tags: Vec<String> },
    #[serde(rename = "session.ended")]
    Ended {
        reason: EndReason,
        ended_at: DateTime<Utc>,
    },
}

impl SessionEvent {
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
    pub contact_id: Uuid,
    pub channel_type_id: i64,
    pub pipeline_id: Option<Uuid>,
    pub status: SessionStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<EndReason>,
    pub timeout_seconds: i64,
    pub last_activity_at: Option<DateTime<Utc>>,
    pub message_count: i64,
    pub messages_from_contact: i64,
    pub messages_from_agent: i64,
    pub duration_seconds: i64,
    pub first_contact_message_at: Option<DateTime<Utc>>,
    pub first_agent_response_at: Option<DateTime<Utc>>,
    pub agent_response_time_seconds: Option<i64>,
    pub contact_wait_time_seconds: Option<i64>,
    /// Every agent that took part, in order of first appearance.
    pub agent_ids: Vec<Uuid>,
    pub agent_transfers: i64,
    pub summary: Option<String>,
    pub sentiment: Option<Sentiment>,
    pub sentiment_score: Option<f64>,
    pub topics: Option<Vec<String>>,
    pub next_steps: Option<Vec<String>>,
    pub key_entities: Option<serde_json::Value>,
    pub resolved: bool,
    pub escalated: bool,
    pub converted: bool,
    pub outcome_tags: Vec<String>,
}

impl SessionView {
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
    pub version: i64,
    pub view: SessionView,
    pub current_agent: Option<Uuid>,
}

impl Session {
    pub fn exists(&self) -> bool {
        self.version > 0
    }

    pub fn is_active(&self) -> bool {
        self.view.status == SessionStatus::Active
    }

    pub fn apply(&mut self, sequence_number: i64, event: &SessionEvent) {
        self.view.apply(event);
        if let SessionEvent::AgentAssigned { agent_id, .. } = event {
            self.current_agent = Some(*agent_id);
        }
        self.version = sequence_number;
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub message_id: Option<Uuid>,
    pub from_contact: bool,
    pub agent_id: Option<Uuid>,
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

#[derive(Debug, Clone, PartialEq)]
pub struct NewSummary {
    pub summary: String,
    pub sentiment: Option<Sentiment>,
    pub sentiment_score: Option<f64>,
    pub topics: Vec<String>,
    pub next_steps: Vec<String>,
    pub key_entities: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub escalated: Option<bool>,
    pub resolved: Option<bool>,
    pub converted: Option<bool>,
    pub outcome_tags: Option<Vec<String>>,
}
