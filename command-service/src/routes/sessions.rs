//! `/sessions/{id}`: messages, agents, summary, outcome and end.

use axum::response::Response;
use chrono::{DateTime, Utc};
use event_model::session::{NewMessage, NewSummary, Outcome};
use event_model::{EndReason, Sentiment, SessionCommand};
use platform::body::JsonBody;
use platform::http::Path;
use platform::openapi::CommandErrors;
use platform::ApiError;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::content::{self, ContentFields};
use super::{field_error, Answer, AppState, CommandBody, CommandContext};
use crate::commands::Command;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(record_message))
        .routes(routes!(assign_agent))
        .routes(routes!(summarize))
        .routes(routes!(set_outcome))
        .routes(routes!(end))
}

fn on_session(session_id: Uuid, command: SessionCommand) -> Command {
    Command::Session {
        session_id,
        command,
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Message {
    from_contact: bool,
    agent_id: Option<Uuid>,
    /// When it was sent (default: now); an earlier time is kept (an import), one more than 5
    /// minutes in the future is refused.
    sent_at: Option<DateTime<Utc>>,
    message_id: Option<Uuid>,
    /// The text, 1 to 4,096 characters (personal: sealed with the contact's key).
    text: Option<String>,
    /// One of text (the default), image, audio, voice, video, document, sticker, location,
    /// contact, template, interactive, reaction, system.
    content_type: Option<String>,
    /// An http(s) URL (personal); required for image, audio, voice, video, document, sticker.
    media_url: Option<String>,
    /// The media's MIME type, e.g. image/jpeg.
    media_mimetype: Option<String>,
    /// The channel's own id of the message: a repeat of it on the session's channel is the same
    /// message (200, nothing new).
    channel_message_id: Option<String>,
    /// The id of the message this one answers.
    reply_to: Option<Uuid>,
}

#[utoipa::path(post, path = "/sessions/{session_id}/messages", operation_id = "record_session_message", tag = "sessions", summary = "Record a message on the session", params(("project_id" = Uuid, Path, description = "The project"), ("session_id" = Uuid, Path, description = "The session"), ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless the aggregate is at this version, e.g. \"3\" (or *)", pattern = r#"^[ \t]*(\*|(W/)?"?[0-9]{1,18}"?)[ \t]*$"#), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body gets the first answer (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$"), ("X-Correlation-Id" = Option<String>, Header, description = "Carried into every event; echoed back (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$")), request_body = Message, responses((status = 200, description = "Done: the session's id, new version and the event ids; ETag carries the version", body = CommandBody), CommandErrors), security(("api_key" = [])))]
async fn record_message(
    ctx: CommandContext,
    Path((_, session_id)): Path<(Uuid, Uuid)>,
    body: JsonBody<Message>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let content = ContentFields {
        text: b.text,
        content_type: b.content_type,
        media_url: b.media_url,
        media_mimetype: b.media_mimetype,
        channel_message_id: b.channel_message_id,
        reply_to: b.reply_to,
    }
    .into_content()?;
    let command = SessionCommand::RecordMessage(NewMessage {
        message_id: b.message_id,
        from_contact: b.from_contact,
        agent_id: b.agent_id,
        sent_at: content::sent_at(b.sent_at)?,
        content,
    });
    ctx.run(
        body.sha256,
        on_session(session_id, command),
        Answer::Updated,
    )
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AssignAgent {
    agent_id: Uuid,
    source: Option<String>,
    strategy: Option<String>,
    reason: Option<String>,
}

#[utoipa::path(post, path = "/sessions/{session_id}/agents", operation_id = "assign_session_agent", tag = "sessions", summary = "Assign an agent (another agent than the current one is a transfer)", params(("project_id" = Uuid, Path, description = "The project"), ("session_id" = Uuid, Path, description = "The session"), ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless the aggregate is at this version, e.g. \"3\" (or *)", pattern = r#"^[ \t]*(\*|(W/)?"?[0-9]{1,18}"?)[ \t]*$"#), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body gets the first answer (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$"), ("X-Correlation-Id" = Option<String>, Header, description = "Carried into every event; echoed back (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$")), request_body = AssignAgent, responses((status = 200, description = "Done: the session's id, new version and the event ids; ETag carries the version", body = CommandBody), CommandErrors), security(("api_key" = [])))]
async fn assign_agent(
    ctx: CommandContext,
    Path((_, session_id)): Path<(Uuid, Uuid)>,
    body: JsonBody<AssignAgent>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let command = SessionCommand::AssignAgent {
        agent_id: b.agent_id,
        source: b.source,
        strategy: b.strategy,
        reason: b.reason,
    };
    ctx.run(
        body.sha256,
        on_session(session_id, command),
        Answer::Updated,
    )
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Summary {
    summary: String,
    sentiment: Option<String>,
    sentiment_score: Option<f64>,
    topics: Option<Vec<String>>,
    next_steps: Option<Vec<String>>,
    key_entities: Option<Value>,
}

#[utoipa::path(put, path = "/sessions/{session_id}/summary", operation_id = "summarize_session", tag = "sessions", summary = "Set the session's summary and sentiment", params(("project_id" = Uuid, Path, description = "The project"), ("session_id" = Uuid, Path, description = "The session"), ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless the aggregate is at this version, e.g. \"3\" (or *)", pattern = r#"^[ \t]*(\*|(W/)?"?[0-9]{1,18}"?)[ \t]*$"#), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body gets the first answer (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$"), ("X-Correlation-Id" = Option<String>, Header, description = "Carried into every event; echoed back (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$")), request_body = Summary, responses((status = 200, description = "Done: the session's id, new version and the event ids; ETag carries the version", body = CommandBody), CommandErrors), security(("api_key" = [])))]
async fn summarize(
    ctx: CommandContext,
    Path((_, session_id)): Path<(Uuid, Uuid)>,
    body: JsonBody<Summary>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let sentiment = b
        .sentiment
        .map(|s| {
            serde_json::from_value::<Sentiment>(Value::String(s)).map_err(|_| {
                field_error("sentiment", "must be positive, neutral, negative or mixed")
            })
        })
        .transpose()?;
    let command = SessionCommand::Summarize(NewSummary {
        summary: b.summary,
        sentiment,
        sentiment_score: b.sentiment_score,
        topics: b.topics.unwrap_or_default(),
        next_steps: b.next_steps.unwrap_or_default(),
        key_entities: b.key_entities,
    });
    ctx.run(
        body.sha256,
        on_session(session_id, command),
        Answer::Updated,
    )
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SetOutcome {
    escalated: Option<bool>,
    resolved: Option<bool>,
    converted: Option<bool>,
    outcome_tags: Option<Vec<String>>,
}

#[utoipa::path(put, path = "/sessions/{session_id}/outcome", operation_id = "set_session_outcome", tag = "sessions", summary = "Mark escalated, resolved (only once ended), converted; add outcome tags", params(("project_id" = Uuid, Path, description = "The project"), ("session_id" = Uuid, Path, description = "The session"), ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless the aggregate is at this version, e.g. \"3\" (or *)", pattern = r#"^[ \t]*(\*|(W/)?"?[0-9]{1,18}"?)[ \t]*$"#), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body gets the first answer (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$"), ("X-Correlation-Id" = Option<String>, Header, description = "Carried into every event; echoed back (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$")), request_body = SetOutcome, responses((status = 200, description = "Done: the session's id, new version and the event ids; ETag carries the version", body = CommandBody), CommandErrors), security(("api_key" = [])))]
async fn set_outcome(
    ctx: CommandContext,
    Path((_, session_id)): Path<(Uuid, Uuid)>,
    body: JsonBody<SetOutcome>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let command = SessionCommand::SetOutcome(Outcome {
        escalated: b.escalated,
        resolved: b.resolved,
        converted: b.converted,
        outcome_tags: b.outcome_tags,
    });
    ctx.run(
        body.sha256,
        on_session(session_id, command),
        Answer::Updated,
    )
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct End {
    reason: String,
}

#[utoipa::path(post, path = "/sessions/{session_id}/end", operation_id = "end_session", tag = "sessions", summary = "End the session", params(("project_id" = Uuid, Path, description = "The project"), ("session_id" = Uuid, Path, description = "The session"), ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless the aggregate is at this version, e.g. \"3\" (or *)", pattern = r#"^[ \t]*(\*|(W/)?"?[0-9]{1,18}"?)[ \t]*$"#), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body gets the first answer (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$"), ("X-Correlation-Id" = Option<String>, Header, description = "Carried into every event; echoed back (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$")), request_body = End, responses((status = 200, description = "Done: the session's id, new version and the event ids; ETag carries the version", body = CommandBody), CommandErrors), security(("api_key" = [])))]
async fn end(
    ctx: CommandContext,
    Path((_, session_id)): Path<(Uuid, Uuid)>,
    body: JsonBody<End>,
) -> Result<Response, ApiError> {
    let reason = match serde_json::from_value::<EndReason>(Value::String(body.value.reason)) {
        Ok(EndReason::InactivityTimeout) | Err(_) => {
            return Err(field_error(
                "reason",
                "must be manual_close, contact_request, agent_close or system_close",
            ))
        }
        Ok(reason) => reason,
    };
    ctx.run(
        body.sha256,
        on_session(session_id, SessionCommand::End { reason }),
        Answer::Updated,
    )
    .await
}
