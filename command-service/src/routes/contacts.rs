//! `/contacts`: create, update, tag, picture, delete, and inbound messages and session starts.

use axum::response::Response;
use chrono::{DateTime, Utc};
use event_model::contact::{NewContact, ProfilePatch};
use event_model::session::NewMessage;
use event_model::ContactCommand;
use platform::body::{double_option, JsonBody, OptionalJsonBody};
use platform::http::Path;
use platform::openapi::CommandErrors;
use platform::ApiError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::content::{self, ContentFields};
use super::{check_channel_type, Answer, AppState, CommandBody, CommandContext};
use crate::commands::Command;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(update, remove))
        .routes(routes!(forget))
        .routes(routes!(add_tag))
        .routes(routes!(remove_tag))
        .routes(routes!(set_picture))
        .routes(routes!(record_message))
        .routes(routes!(start_session))
}

fn on_contact(contact_id: Uuid, command: ContactCommand) -> Command {
    Command::Contact {
        contact_id,
        command,
    }
}

#[derive(Debug, Deserialize, ToSchema)]
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

#[utoipa::path(post, path = "/contacts", operation_id = "create_contact", tag = "contacts", summary = "Create a contact", params(("project_id" = Uuid, Path, description = "The project"), ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless the aggregate is at this version, e.g. \"3\" (or *)", pattern = r#"^[ \t]*(\*|(W/)?"?[0-9]{1,18}"?)[ \t]*$"#), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body gets the first answer (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$"), ("X-Correlation-Id" = Option<String>, Header, description = "Carried into every event; echoed back (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$")), request_body = CreateContact, responses((status = 201, description = "Done: the aggregate's id, new version and the event ids; ETag carries the version", body = CommandBody), CommandErrors), security(("api_key" = [])))]
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

#[derive(Debug, Deserialize, ToSchema)]
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

#[utoipa::path(patch, path = "/contacts/{contact_id}", operation_id = "update_contact", tag = "contacts", summary = "Update profile fields (null clears an optional one)", params(("project_id" = Uuid, Path, description = "The project"), ("contact_id" = Uuid, Path, description = "The contact"), ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless the aggregate is at this version, e.g. \"3\" (or *)", pattern = r#"^[ \t]*(\*|(W/)?"?[0-9]{1,18}"?)[ \t]*$"#), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body gets the first answer (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$"), ("X-Correlation-Id" = Option<String>, Header, description = "Carried into every event; echoed back (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$")), request_body = UpdateContact, responses((status = 200, description = "Done: the aggregate's id, new version and the event ids; ETag carries the version", body = CommandBody), CommandErrors), security(("api_key" = [])))]
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Tag {
    tag: String,
}

#[utoipa::path(post, path = "/contacts/{contact_id}/tags", operation_id = "add_contact_tag", tag = "contacts", summary = "Add a tag", params(("project_id" = Uuid, Path, description = "The project"), ("contact_id" = Uuid, Path, description = "The contact"), ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless the aggregate is at this version, e.g. \"3\" (or *)", pattern = r#"^[ \t]*(\*|(W/)?"?[0-9]{1,18}"?)[ \t]*$"#), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body gets the first answer (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$"), ("X-Correlation-Id" = Option<String>, Header, description = "Carried into every event; echoed back (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$")), request_body = Tag, responses((status = 200, description = "Done: the aggregate's id, new version and the event ids; ETag carries the version", body = CommandBody), CommandErrors), security(("api_key" = [])))]
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

#[utoipa::path(delete, path = "/contacts/{contact_id}/tags/{tag}", operation_id = "remove_contact_tag", tag = "contacts", summary = "Remove a tag", params(("project_id" = Uuid, Path, description = "The project"), ("contact_id" = Uuid, Path, description = "The contact"), ("tag" = String, Path, description = "The tag"), ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless the aggregate is at this version, e.g. \"3\" (or *)", pattern = r#"^[ \t]*(\*|(W/)?"?[0-9]{1,18}"?)[ \t]*$"#), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body gets the first answer (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$"), ("X-Correlation-Id" = Option<String>, Header, description = "Carried into every event; echoed back (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$")), responses((status = 200, description = "Done: the aggregate's id, new version and the event ids; ETag carries the version", body = CommandBody), CommandErrors), security(("api_key" = [])))]
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Picture {
    url: String,
    fetched_at: Option<DateTime<Utc>>,
}

#[utoipa::path(put, path = "/contacts/{contact_id}/profile-picture", operation_id = "set_contact_profile_picture", tag = "contacts", summary = "Set the profile picture", params(("project_id" = Uuid, Path, description = "The project"), ("contact_id" = Uuid, Path, description = "The contact"), ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless the aggregate is at this version, e.g. \"3\" (or *)", pattern = r#"^[ \t]*(\*|(W/)?"?[0-9]{1,18}"?)[ \t]*$"#), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body gets the first answer (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$"), ("X-Correlation-Id" = Option<String>, Header, description = "Carried into every event; echoed back (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$")), request_body = Picture, responses((status = 200, description = "Done: the aggregate's id, new version and the event ids; ETag carries the version", body = CommandBody), CommandErrors), security(("api_key" = [])))]
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Delete {
    reason: Option<String>,
}

#[utoipa::path(delete, path = "/contacts/{contact_id}", operation_id = "delete_contact", tag = "contacts", summary = "Delete the contact (soft; its open sessions end)", params(("project_id" = Uuid, Path, description = "The project"), ("contact_id" = Uuid, Path, description = "The contact"), ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless the aggregate is at this version, e.g. \"3\" (or *)", pattern = r#"^[ \t]*(\*|(W/)?"?[0-9]{1,18}"?)[ \t]*$"#), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body gets the first answer (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$"), ("X-Correlation-Id" = Option<String>, Header, description = "Carried into every event; echoed back (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$")), request_body = Option<Delete>, responses((status = 200, description = "Done: the aggregate's id, new version and the event ids; ETag carries the version", body = CommandBody), CommandErrors), security(("api_key" = [])))]
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

/// Why the contact is forgotten. It stays readable after the erasure, so that the erasure is
/// itself accountable: say why (a ticket, a legal basis), never who.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Forget {
    reason: Option<String>,
}

#[utoipa::path(post, path = "/contacts/{contact_id}/forget", operation_id = "forget_contact", tag = "contacts", summary = "Forget the contact: its personal data becomes unreadable everywhere, for good (owner and admin only)", description = "Ends its active sessions, deletes it if it is not yet, records contact.forgotten and destroys its data key in the same transaction. Its events stay, with their personal fields redacted; its read row keeps only non-personal columns. Forgetting again answers 200 and changes nothing.", params(("project_id" = Uuid, Path, description = "The project"), ("contact_id" = Uuid, Path, description = "The contact"), ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless the aggregate is at this version, e.g. \"3\" (or *)", pattern = r#"^[ \t]*(\*|(W/)?"?[0-9]{1,18}"?)[ \t]*$"#), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body gets the first answer (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$"), ("X-Correlation-Id" = Option<String>, Header, description = "Carried into every event; echoed back (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$")), request_body = Option<Forget>, responses((status = 200, description = "Done: the aggregate's id, new version and the event ids; ETag carries the version", body = CommandBody), CommandErrors), security(("api_key" = [])))]
async fn forget(
    ctx: CommandContext,
    Path((_, contact_id)): Path<(Uuid, Uuid)>,
    OptionalJsonBody(body): OptionalJsonBody<Forget>,
) -> Result<Response, ApiError> {
    let (reason, sha256) = match body {
        Some(b) => (b.value.reason, b.sha256),
        None => (None, Sha256::digest(b"").into()),
    };
    ctx.run(
        sha256,
        on_contact(contact_id, ContactCommand::Forget { reason }),
        Answer::Updated,
    )
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ContactMessage {
    #[serde(deserialize_with = "platform::body::integer")]
    channel_type_id: i64,
    from_contact: bool,
    agent_id: Option<Uuid>,
    /// When it was sent (default: now); an earlier time is kept (an import), one more than 5
    /// minutes in the future is refused.
    sent_at: Option<DateTime<Utc>>,
    message_id: Option<Uuid>,
    pipeline_id: Option<Uuid>,
    /// The text, 1 to 4,096 characters (personal: sealed with the contact's key).
    text: Option<String>,
    /// One of text (the default), image, audio, voice, video, document, sticker, location,
    /// contact, template, interactive, reaction, system.
    content_type: Option<String>,
    /// An http(s) URL (personal); required for image, audio, voice, video, document, sticker.
    media_url: Option<String>,
    /// The media's MIME type, e.g. image/jpeg.
    media_mimetype: Option<String>,
    /// The channel's own id of the message: a repeat of it on this channel is the same message
    /// (200, nothing new).
    channel_message_id: Option<String>,
    /// The id of the message this one answers.
    reply_to: Option<Uuid>,
}

#[utoipa::path(post, path = "/contacts/{contact_id}/messages", operation_id = "record_contact_message", tag = "contacts", summary = "Record a message on the contact's active session of that channel, starting one if none", params(("project_id" = Uuid, Path, description = "The project"), ("contact_id" = Uuid, Path, description = "The contact"), ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless the aggregate is at this version, e.g. \"3\" (or *)", pattern = r#"^[ \t]*(\*|(W/)?"?[0-9]{1,18}"?)[ \t]*$"#), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body gets the first answer (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$"), ("X-Correlation-Id" = Option<String>, Header, description = "Carried into every event; echoed back (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$")), request_body = ContactMessage, responses((status = 200, description = "Done: the aggregate's id, new version and the event ids; ETag carries the version", body = CommandBody), CommandErrors), security(("api_key" = [])))]
async fn record_message(
    ctx: CommandContext,
    Path((_, contact_id)): Path<(Uuid, Uuid)>,
    body: JsonBody<ContactMessage>,
) -> Result<Response, ApiError> {
    let b = body.value;
    check_channel_type(&ctx.state, b.channel_type_id).await?;
    let content = ContentFields {
        text: b.text,
        content_type: b.content_type,
        media_url: b.media_url,
        media_mimetype: b.media_mimetype,
        channel_message_id: b.channel_message_id,
        reply_to: b.reply_to,
    }
    .into_content()?;
    let command = ContactCommand::RecordMessage {
        channel_type_id: b.channel_type_id,
        pipeline_id: b.pipeline_id,
        message: NewMessage {
            message_id: b.message_id,
            from_contact: b.from_contact,
            agent_id: b.agent_id,
            sent_at: content::sent_at(b.sent_at)?,
            content,
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StartSession {
    #[serde(deserialize_with = "platform::body::integer")]
    channel_type_id: i64,
    pipeline_id: Option<Uuid>,
}

#[utoipa::path(post, path = "/contacts/{contact_id}/sessions", operation_id = "start_contact_session", tag = "contacts", summary = "Start a session on a channel (409 if one is active there)", params(("project_id" = Uuid, Path, description = "The project"), ("contact_id" = Uuid, Path, description = "The contact"), ("If-Match" = Option<String>, Header, description = "Refuse with 412 unless the aggregate is at this version, e.g. \"3\" (or *)", pattern = r#"^[ \t]*(\*|(W/)?"?[0-9]{1,18}"?)[ \t]*$"#), ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key and body gets the first answer (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$"), ("X-Correlation-Id" = Option<String>, Header, description = "Carried into every event; echoed back (1 to 255 visible ASCII characters)", pattern = r"^[ \t]*[!-~]([ -~]{0,253}[!-~])?[ \t]*$")), request_body = StartSession, responses((status = 201, description = "Done: the aggregate's id, new version and the event ids; ETag carries the version", body = CommandBody), CommandErrors), security(("api_key" = [])))]
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
