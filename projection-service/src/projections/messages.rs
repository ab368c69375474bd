//! The `messages` projection: one row per `session.message_recorded`, the conversation itself.
//!
//! A row is its event alone (the message's id is the event's id), so the projection reads no row
//! before it writes: a new message is an insert, and a second delivery of it inserts nothing.
//! The text, media URL and channel id are opened with the contact's key like every personal
//! field; once the contact is forgotten they are null, in the rows already written
//! ([`forget_personal_columns`]) and in any rebuilt from the redacted events.

use chrono::NaiveDateTime;
use event_model::{DomainEvent, SessionEvent};
use serde::Serialize;
use serde_json::json;
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

use super::projection::{Decoded, ProjectionError};

/// A `messages` row, as the projection writes it (with `jsonb_populate_recordset`); the columns
/// it leaves out keep their defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageRecord {
    pub id: Uuid,
    pub tenant_id: String,
    pub timestamp: NaiveDateTime,
    /// Who recorded it (the API key's user); nil for the system.
    pub user_id: Uuid,
    pub project_id: Uuid,
    pub channel_type_id: Option<i64>,
    pub from_me: bool,
    pub contact_id: Uuid,
    pub session_id: Uuid,
    pub content_type: &'static str,
    pub text: Option<String>,
    pub media_url: Option<String>,
    pub media_mimetype: Option<String>,
    pub channel_message_id: Option<String>,
    pub reply_to_id: Option<Uuid>,
    pub status: &'static str,
    pub agent_id: Option<Uuid>,
    /// The caller's own `message_id`, when it gave one.
    pub metadata: Option<serde_json::Value>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

pub(super) const COLUMNS: &[&str] = &[
    "id",
    "tenant_id",
    "\"timestamp\"",
    "user_id",
    "project_id",
    "channel_type_id",
    "from_me",
    "contact_id",
    "session_id",
    "content_type",
    "text",
    "media_url",
    "media_mimetype",
    "channel_message_id",
    "reply_to_id",
    "status",
    "agent_id",
    "metadata",
    "created_at",
    "updated_at",
];

/// The rows of the batch's messages, and the events it handled (all of them: an event that is
/// not a message changes no row here).
pub(super) fn apply(events: &[Decoded<'_>]) -> (Vec<MessageRecord>, Vec<Uuid>) {
    let rows = events.iter().filter_map(record).collect();
    (rows, events.iter().map(|d| d.envelope.event_id).collect())
}

fn record(d: &Decoded<'_>) -> Option<MessageRecord> {
    let DomainEvent::Session(SessionEvent::MessageRecorded {
        message_id,
        from_contact,
        agent_id,
        sent_at,
        channel_type_id,
        content_type,
        text,
        media_url,
        media_mimetype,
        channel_message_id,
        reply_to,
    }) = &d.event
    else {
        return None;
    };
    let e = d.envelope;
    let recorded = e.occurred_at.naive_utc();
    Some(MessageRecord {
        id: e.event_id,
        tenant_id: e.tenant_id.clone(),
        timestamp: sent_at.naive_utc(),
        user_id: e.user_id.unwrap_or_default(),
        project_id: e.project_id,
        channel_type_id: *channel_type_id,
        from_me: !from_contact,
        contact_id: e.contact_id,
        session_id: e.aggregate_id,
        content_type: content_type.as_str(),
        text: text.clone(),
        media_url: media_url.clone(),
        media_mimetype: media_mimetype.clone(),
        channel_message_id: channel_message_id.clone(),
        reply_to_id: *reply_to,
        status: "sent",
        agent_id: *agent_id,
        metadata: message_id.map(|id| json!({ "message_id": id })),
        created_at: recorded,
        updated_at: recorded,
    })
}

/// Pushes the insert of `records` onto a batch's statement (its caller opens and closes the
/// part); a message already there is left as it is.
pub(super) fn push_insert<'a>(sql: &mut QueryBuilder<'a, Postgres>, records: &'a [MessageRecord]) {
    let list = COLUMNS.join(", ");
    sql.push(format_args!(
        "insert into messages ({list}) select {list} \
           from jsonb_populate_recordset(null::messages, "
    ))
    .push_bind(Json(records))
    .push(") on conflict (id) do nothing");
}

/// Nulls the personal columns of forgotten contacts' messages: what their now-redacted events
/// give. Run after the batch's write, which may have written some.
pub async fn forget_personal_columns(
    tx: &mut Transaction<'_, Postgres>,
    contact_ids: &[Uuid],
) -> Result<(), ProjectionError> {
    sqlx::query!(
        "update messages set text = null, media_url = null, channel_message_id = null \
          where contact_id = any($1) \
            and (text, media_url, channel_message_id) is distinct from (null, null, null)",
        contact_ids,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
