//! `/contacts`: create, update, tag, picture, delete, and inbound messages and session starts.

use axum::response::Response;
use axum::routing::{delete, patch, post, put};
use axum::Router;
use chrono::{DateTime, Utc};
use event_model::contact::{NewContact, ProfilePatch};
use event_model::session::NewMessage;
use event_model::ContactCommand;
use platform::body::{double_option, JsonBody, OptionalJsonBody};
use platform::http::Path;
use platform::ApiError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{check_channel_type, Answer, AppState, CommandContext};
use crate::commands::Command;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/contacts", post(create))
        .route("/contacts/{contact_id}", patch(update).delete(remove))
        .route("/contacts/{contact_id}/tags", post(add_tag))
        .route("/contacts/{contact_id}/tags/{tag}", delete(remove_tag))
        .route("/contacts/{contact_id}/profile-picture", put(set_picture))
        .route("/contacts/{contact_id}/messages", post(record_message))
        .route("/contacts/{contact_id}/sessions", post(start_session))
}

fn on_contact(contact_id: Uuid, command: ContactCommand) -> Command {
    Command::Contact {
        contact_id,
        command,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateContact {
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    external_id: Option<String>,
    source_channel: Option<String>,
    language: Option<String>,
    timezone: Option<String>,
    tags: Option<Vec<String>>,
}

async fn create(ctx: CommandContext, body: JsonBody<CreateContact>) -> Result<Response, ApiError> {
    let b = body.value;
    let contact_id = Uuid::now_v7();
    let command = ContactCommand::Create(NewContact {
        contact_id,
        name: b.name.unwrap_or_default(),
        email: b.email,
        phone: b.phone,
        external_id: b.external_id,
        source_channel: b.source_channel,
        language: b.language,
        timezone: b.timezone,
        tags: b.tags.unwrap_or_default(),
    });
    ctx.run(
        body.sha256,
        on_contact(contact_id, command),
        Answer::CreatedContact,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateContact {
    #[serde(default, deserialize_with = "double_option")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    external_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    source_channel: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    language: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    timezone: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    tags: Option<Option<Vec<String>>>,
}

async fn update(
    ctx: CommandContext,
    Path((_, contact_id)): Path<(Uuid, Uuid)>,
    body: JsonBody<UpdateContact>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let patch = ProfilePatch {
        name: b.name,
        email: b.email,
        phone: b.phone,
        external_id: b.external_id,
        source_channel: b.source_channel,
        language: b.language,
        timezone: b.timezone,
        tags: b.tags,
    };
    ctx.run(
        body.sha256,
        on_contact(contact_id, ContactCommand::UpdateProfile(patch)),
        Answer::Updated,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tag {
    tag: String,
}

async fn add_tag(
    ctx: CommandContext,
    Path((_, contact_id)): Path<(Uuid, Uuid)>,
    body: JsonBody<Tag>,
) -> Result<Response, ApiError> {
    let command = ContactCommand::AddTag {
        tag: body.value.tag,
    };
    ctx.run(
        body.sha256,
        on_contact(contact_id, command),
        Answer::Updated,
    )
    .await
}

async fn remove_tag(
    ctx: CommandContext,
    Path((_, contact_id, tag)): Path<(Uuid, Uuid, String)>,
) -> Result<Response, ApiError> {
    let command = ContactCommand::RemoveTag { tag };
    ctx.run(
        Sha256::digest(b"").into(),
        on_contact(contact_id, command),
        Answer::Updated,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Picture {
    url: String,
    fetched_at: Option<DateTime<Utc>>,
}

async fn set_picture(
    ctx: CommandContext,
    Path((_, contact_id)): Path<(Uuid, Uuid)>,
    body: JsonBody<Picture>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let command = ContactCommand::SetProfilePicture {
        url: b.url,
        fetched_at: b.fetched_at.unwrap_or_else(Utc::now),
    };
    ctx.run(
        body.sha256,
        on_contact(contact_id, command),
        Answer::Updated,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Delete {
    reason: Option<String>,
}

async fn remove(
    ctx: CommandContext,
    Path((_, contact_id)): Path<(Uuid, Uuid)>,
    OptionalJsonBody(body): OptionalJsonBody<Delete>,
) -> Result<Response, ApiError> {
    let (reason, sha256) = match body {
        Some(b) => (b.value.reason, b.sha256),
        None => (None, Sha256::digest(b"").into()),
    };
    ctx.run(
        sha256,
        on_contact(contact_id, ContactCommand::Delete { reason }),
        Answer::Updated,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactMessage {
    channel_type_id: i64,
    from_contact: bool,
    agent_id: Option<Uuid>,
    sent_at: Option<DateTime<Utc>>,
    message_id: Option<Uuid>,
    pipeline_id: Option<Uuid>,
}

async fn record_message(
    ctx: CommandContext,
    Path((_, contact_id)): Path<(Uuid, Uuid)>,
    body: JsonBody<ContactMessage>,
) -> Result<Response, ApiError> {
    let b = body.value;
    check_channel_type(&ctx.state, b.channel_type_id).await?;
    let command = ContactCommand::RecordMessage {
        channel_type_id: b.channel_type_id,
        pipeline_id: b.pipeline_id,
        message: NewMessage {
            message_id: b.message_id,
            from_contact: b.from_contact,
            agent_id: b.agent_id,
            sent_at: b.sent_at.unwrap_or_else(Utc::now),
        },
        new_session_id: Uuid::now_v7(),
    };
    ctx.run(
        body.sha256,
        on_contact(contact_id, command),
        Answer::Updated,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartSession {
    channel_type_id: i64,
    pipeline_id: Option<Uuid>,
}

async fn start_session(
    ctx: CommandContext,
    Path((_, contact_id)): Path<(Uuid, Uuid)>,
    body: JsonBody<StartSession>,
) -> Result<Response, ApiError> {
    let b = body.value;
    check_channel_type(&ctx.state, b.channel_type_id).await?;
    let command = ContactCommand::StartSession {
        session_id: Uuid::now_v7(),
        channel_type_id: b.channel_type_id,
        pipeline_id: b.pipeline_id,
    };
    ctx.run(
        body.sha256,
        on_contact(contact_id, command),
        Answer::CreatedSession,
    )
    .await
}
