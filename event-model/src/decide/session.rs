//! The session's commands and what they decide: messages, agents, the summary and outcome, and
//! its end.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::contact::{Contact, ContactEvent};
use crate::context::Context;
use crate::error::DomainError;
use crate::event::{DomainEvent, PendingEvent};
use crate::session::{
    EndReason, NewMessage, NewSummary, Outcome, Session, SessionEvent, SessionView,
};
use crate::values::{self, Checks, MAX_LONG_TEXT_LEN, MAX_SESSION_AGENTS, MAX_TAGS, MAX_TEXT_LEN};

/// A command addressed to one session's stream, its values not yet checked: [`decide_session`]
/// validates them.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionCommand {
    /// Record a message on the session; refused unless it is active. Unlike
    /// [`ContactCommand::RecordMessage`](crate::ContactCommand::RecordMessage) it never starts a
    /// session, and it records even on a session already idle past its timeout that the sweeper has
    /// not ended yet.
    RecordMessage(NewMessage),
    /// Put an agent in charge; refused unless the session is active. The agent already in charge
    /// decides nothing.
    AssignAgent {
        /// The agent to put in charge; refused if it would be the session's 65th distinct agent.
        agent_id: Uuid,
        /// How the assignment came about: `manual`, `automatic` or `reassignment_<why>`, at most 64
        /// bytes; `None`: `manual`.
        source: Option<String>,
        /// The routing strategy that chose the agent, free text of at most 255 characters; `None`:
        /// not given.
        strategy: Option<String>,
        /// Why, free text of at most 1,000 characters; personal. `None`: not given.
        reason: Option<String>,
    },
    /// Set the session's summary, also once it has ended; the summary it already holds decides
    /// nothing.
    Summarize(NewSummary),
    /// Mark outcome flags and add outcome tags, also once the session has ended (`resolved` only
    /// then).
    SetOutcome(Outcome),
    /// End the session; refused unless it is active.
    End {
        /// Why; anything but [`EndReason::InactivityTimeout`], which only the system decides.
        reason: EndReason,
    },
    /// The timeout sweeper's command: end the session if, and only if, it has really been idle
    /// for its whole timeout at `ctx.now`.
    EndIfIdle,
}

/// Decides a session command against the session and its contact: the events it causes, in the
/// order they are to be appended, or the rule it breaks. Refused when the session does not exist or
/// its contact is deleted. An empty list means the command changes nothing. Pure: the time comes
/// from `ctx`.
pub fn decide_session(
    session_id: Uuid,
    session: &Session,
    contact: &Contact,
    command: SessionCommand,
    ctx: &Context,
) -> Result<Vec<PendingEvent>, DomainError> {
    if !session.exists() {
        return Err(DomainError::SessionNotFound);
    }
    if contact.is_deleted() {
        return Err(DomainError::ContactDeleted);
    }
    let scope = Scope {
        session_id,
        session,
    };
    match command {
        SessionCommand::RecordMessage(message) => record_message(scope, message),
        SessionCommand::AssignAgent {
            agent_id,
            source,
            strategy,
            reason,
        } => assign_agent(scope, agent_id, source, strategy, reason),
        SessionCommand::Summarize(new) => {
            let event = summarize(new)?;
            Ok(if scope.session.view.has_summary(&event) {
                vec![]
            } else {
                vec![scope.on_session(event)]
            })
        }
        SessionCommand::SetOutcome(outcome) => set_outcome(scope, outcome, ctx),
        SessionCommand::End { reason } => {
            require_active(session)?;
            if reason == EndReason::InactivityTimeout {
                return Err(DomainError::invalid(
                    "reason",
                    "inactivity_timeout is decided by the system",
                ));
            }
            Ok(scope.end(reason, values::instant(ctx.now)))
        }
        SessionCommand::EndIfIdle => {
            require_active(session)?;
            if !session.view.idle_too_long_at(ctx.now) {
                return Err(DomainError::SessionNotTimedOut);
            }
            Ok(scope.end(EndReason::InactivityTimeout, session.view.times_out_at()))
        }
    }
}

/// The session a command addresses.
#[derive(Clone, Copy)]
struct Scope<'a> {
    session_id: Uuid,
    session: &'a Session,
}

impl Scope<'_> {
    fn on_session(self, event: SessionEvent) -> PendingEvent {
        PendingEvent {
            aggregate_id: self.session_id,
            event: DomainEvent::Session(event),
        }
    }

    /// `session.ended`, and `contact.session_closed` on its contact's stream.
    fn end(self, reason: EndReason, ended_at: DateTime<Utc>) -> Vec<PendingEvent> {
        let view = &self.session.view;
        vec![
            self.on_session(SessionEvent::Ended { reason, ended_at }),
            PendingEvent {
                aggregate_id: view.contact_id,
                event: DomainEvent::Contact(ContactEvent::SessionClosed {
                    session_id: self.session_id,
                    channel_type_id: view.channel_type_id,
                }),
            },
        ]
    }
}

fn record_message(scope: Scope<'_>, message: NewMessage) -> Result<Vec<PendingEvent>, DomainError> {
    require_active(scope.session)?;
    let message = message.validated()?;
    if let Some(agent) = message.agent_id {
        room_for_agent(&scope.session.view, agent, "agent_id")?;
    }
    Ok(vec![scope.on_session(
        message.into_event(scope.session.view.channel_type_id),
    )])
}

/// The agent already assigned decides nothing.
fn assign_agent(
    scope: Scope<'_>,
    agent_id: Uuid,
    source: Option<String>,
    strategy: Option<String>,
    reason: Option<String>,
) -> Result<Vec<PendingEvent>, DomainError> {
    let session = scope.session;
    require_active(session)?;
    let mut checks = Checks::default();
    let source = checks
        .check(values::assignment_source(source))
        .unwrap_or_default();
    let strategy = strategy.and_then(|s| checks.check(values::optional_text("strategy", &s, 255)));
    let reason =
        reason.and_then(|r| checks.check(values::optional_text("reason", &r, MAX_TEXT_LEN)));
    checks.finish()?;
    if session.current_agent == Some(agent_id) {
        return Ok(vec![]);
    }
    room_for_agent(&session.view, agent_id, "agent_id")?;
    Ok(vec![scope.on_session(SessionEvent::AgentAssigned {
        agent_id,
        source,
        previous_agent_id: session.current_agent,
        strategy,
        reason,
    })])
}

/// Flags are set once and never undone; a session is resolved only once it has ended; outcome
/// tags are added, never removed.
fn set_outcome(
    scope: Scope<'_>,
    outcome: Outcome,
    ctx: &Context,
) -> Result<Vec<PendingEvent>, DomainError> {
    let (session, view) = (scope.session, &scope.session.view);
    let at = values::instant(ctx.now);
    let mut events = Vec::new();
    let mut flag = |wanted: Option<bool>, current: bool, name: &'static str, event| {
        match (wanted, current) {
            (Some(true), false) => events.push(scope.on_session(event)),
            (Some(false), true) => return Err(DomainError::CannotUndo(name)),
            _ => {}
        }
        Ok(())
    };
    flag(
        outcome.escalated,
        view.escalated,
        "escalated",
        SessionEvent::Escalated { at },
    )?;
    if outcome.resolved == Some(true) && !view.resolved && session.is_active() {
        return Err(DomainError::ResolveActiveSession);
    }
    flag(
        outcome.resolved,
        view.resolved,
        "resolved",
        SessionEvent::Resolved { at },
    )?;
    flag(
        outcome.converted,
        view.converted,
        "converted",
        SessionEvent::Converted { at },
    )?;
    if let Some(tags) = outcome.outcome_tags {
        let new_tags = new_outcome_tags(view, &tags)?;
        if !new_tags.is_empty() {
            events.push(scope.on_session(SessionEvent::OutcomeTagged { tags: new_tags }));
        }
    }
    Ok(events)
}

/// The tags of `tags` the session does not have yet, refused when any is invalid or when the
/// session would hold more than it may.
fn new_outcome_tags(view: &SessionView, tags: &[String]) -> Result<Vec<String>, DomainError> {
    if tags.len() > MAX_TAGS {
        return Err(DomainError::invalid(
            "outcome_tags",
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    let mut checks = Checks::default();
    let mut new_tags: Vec<String> = Vec::new();
    for (i, raw) in tags.iter().enumerate() {
        if let Some(tag) = checks.check(values::tag(&format!("outcome_tags[{i}]"), raw)) {
            if !view.outcome_tags.contains(&tag) && !new_tags.contains(&tag) {
                new_tags.push(tag);
            }
        }
    }
    checks.finish()?;
    if view.outcome_tags.len() + new_tags.len() > MAX_TAGS {
        return Err(DomainError::invalid(
            "outcome_tags",
            format!("a session has at most {MAX_TAGS} outcome tags"),
        ));
    }
    Ok(new_tags)
}

/// Refuses an agent that would make the session's participants more than it may hold.
pub(super) fn room_for_agent(
    view: &SessionView,
    agent: Uuid,
    field: &str,
) -> Result<(), DomainError> {
    if view.agent_ids.len() >= MAX_SESSION_AGENTS && !view.agent_ids.contains(&agent) {
        return Err(DomainError::invalid(
            field,
            format!("a session has at most {MAX_SESSION_AGENTS} agents"),
        ));
    }
    Ok(())
}

fn require_active(session: &Session) -> Result<(), DomainError> {
    if session.is_active() {
        Ok(())
    } else {
        Err(DomainError::SessionEnded)
    }
}

fn summarize(new: NewSummary) -> Result<SessionEvent, DomainError> {
    let mut checks = Checks::default();
    let summary = checks.check(values::required_text(
        "summary",
        &new.summary,
        MAX_LONG_TEXT_LEN,
    ));
    if let Some(score) = new.sentiment_score {
        if !(-1.0..=1.0).contains(&score) || score.is_nan() {
            checks.push(crate::FieldError::new(
                "sentiment_score",
                "must be between -1 and 1",
            ));
        }
    }
    let mut list = |field: &str, items: Vec<String>| -> Vec<String> {
        if items.len() > MAX_TAGS {
            checks.push(crate::FieldError::new(
                field,
                format!("at most {MAX_TAGS} items"),
            ));
            return vec![];
        }
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                checks.check(values::required_text(
                    &format!("{field}[{i}]"),
                    item,
                    MAX_TEXT_LEN,
                ))
            })
            .collect()
    };
    let topics = list("topics", new.topics);
    let next_steps = list("next_steps", new.next_steps);
    if let Some(entities) = &new.key_entities {
        if !(entities.is_object() || entities.is_array()) {
            checks.push(crate::FieldError::new(
                "key_entities",
                "must be a JSON object or array",
            ));
        }
    }
    checks.finish()?;
    Ok(SessionEvent::Summarized {
        summary: Some(summary.unwrap_or_default()),
        sentiment: new.sentiment,
        sentiment_score: new.sentiment_score,
        topics: Some(topics),
        next_steps: Some(next_steps),
        key_entities: new.key_entities,
    })
}
