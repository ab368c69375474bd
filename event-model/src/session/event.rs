//! A session's events and the enums they carry: what the command side appends and every reader
//! folds.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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

/// What kind of message a `session.message_recorded` is (`messages.content_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentType {
    /// Text only.
    #[default]
    Text,
    /// A picture.
    Image,
    /// An audio file.
    Audio,
    /// A voice note.
    Voice,
    /// A video.
    Video,
    /// A document (PDF, spreadsheet, ...).
    Document,
    /// A sticker.
    Sticker,
    /// A shared location.
    Location,
    /// A shared contact card.
    Contact,
    /// A template message (pre-approved, e.g. by WhatsApp).
    Template,
    /// A message with buttons or a list.
    Interactive,
    /// A reaction to another message.
    Reaction,
    /// A notice from the channel or the system.
    System,
}

impl ContentType {
    /// Every content type, in the order the API documents them.
    pub const ALL: [ContentType; 13] = [
        Self::Text,
        Self::Image,
        Self::Audio,
        Self::Voice,
        Self::Video,
        Self::Document,
        Self::Sticker,
        Self::Location,
        Self::Contact,
        Self::Template,
        Self::Interactive,
        Self::Reaction,
        Self::System,
    ];

    /// The stored name (`messages.content_type`, the same as the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::Audio => "audio",
            Self::Voice => "voice",
            Self::Video => "video",
            Self::Document => "document",
            Self::Sticker => "sticker",
            Self::Location => "location",
            Self::Contact => "contact",
            Self::Template => "template",
            Self::Interactive => "interactive",
            Self::Reaction => "reaction",
            Self::System => "system",
        }
    }

    /// Whether a message of this kind is its media: it needs a `media_url`.
    pub fn is_media(self) -> bool {
        matches!(
            self,
            Self::Image | Self::Audio | Self::Voice | Self::Video | Self::Document | Self::Sticker
        )
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
        /// de-duplicate (`channel_message_id` is): the same id recorded twice counts twice. The
        /// message's own id is the event's.
        message_id: Option<Uuid>,
        /// `true` for a message from the contact, `false` for one from the agent side.
        from_contact: bool,
        /// The agent who sent it: always `None` on a message from the contact, and may be `None` on
        /// one from the agent side. An agent new to the session joins its `agent_ids`.
        agent_id: Option<Uuid>,
        /// When the message was sent, as the caller says, to the microsecond. The metrics use it,
        /// not the time it was recorded, so a replay gives the same numbers.
        sent_at: DateTime<Utc>,
        /// The channel type of its session, so that the message is whole on its own (the
        /// `messages` projection needs nothing else). `None` on messages of earlier releases.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel_type_id: Option<i64>,
        /// What kind of message it is; `text` on messages of earlier releases.
        #[serde(default)]
        content_type: ContentType,
        /// Its text, 1 to 4,096 characters; personal. `None` when it has none, or once redacted.
        #[serde(default)]
        text: Option<String>,
        /// Where its media is, an http(s) URL; personal. `None` when it has none, or once redacted.
        #[serde(default)]
        media_url: Option<String>,
        /// The media's MIME type (`type/subtype`), when it has media.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_mimetype: Option<String>,
        /// The channel's own id of the message (1 to 255 visible characters); personal, as some
        /// channels build it from the phone number. A repeat of it on the same channel type in
        /// the project is the same message: its event id is derived from it, so the store holds
        /// it once.
        #[serde(default)]
        channel_message_id: Option<String>,
        /// The id of the message this one answers (a `session.message_recorded` event's id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<Uuid>,
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
