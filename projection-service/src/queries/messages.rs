//! `GET /sessions/{id}/messages` and `GET /contacts/{id}/messages`: a conversation, oldest first,
//! from the `messages` read model.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, Utc};
use platform::auth::AuthContext;
use platform::http::{Path, Query};
use platform::openapi::{ParameterRule, QueryErrors};
use platform::ApiError;
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::contacts::read_contact;
use super::sessions::read_session;
use super::{read_at_least, with_etag, Page, PageParams, QueryState, ReadParams};
use crate::projections::contacts::ContactRecord;
use crate::projections::sessions::SessionRecord;

pub fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new()
        .routes(routes!(of_session))
        .routes(routes!(of_contact))
        .routes(routes!(search))
}

/// A message as it was recorded: who sent it, when, and what it said or carried.
#[derive(Debug, Serialize, ToSchema, FromRow)]
pub struct MessageDto {
    /// The message's id: the id of its `session.message_recorded` event (what `reply_to` names).
    pub id: Uuid,
    pub session_id: Uuid,
    pub contact_id: Uuid,
    pub channel_type_id: Option<i64>,
    /// From the contact (`true`) or from the agent side.
    pub from_contact: bool,
    pub agent_id: Option<Uuid>,
    /// When it was sent, as recorded.
    pub sent_at: DateTime<Utc>,
    /// text, image, audio, voice, video, document, sticker, location, contact, template,
    /// interactive, reaction or system.
    pub content_type: String,
    /// `null` when it has none, or once its contact was forgotten.
    pub text: Option<String>,
    /// `null` when it has none, or once its contact was forgotten.
    pub media_url: Option<String>,
    pub media_mimetype: Option<String>,
    /// The channel's own id; `null` once its contact was forgotten.
    pub channel_message_id: Option<String>,
    pub reply_to: Option<Uuid>,
    /// The `message_id` the caller gave, if any.
    pub message_id: Option<Uuid>,
    /// When it was recorded.
    pub recorded_at: Option<DateTime<Utc>>,
}

/// The columns of a [`MessageDto`], read from `messages m`.
const DTO_COLUMNS: &str = "m.id, m.session_id, m.contact_id, \
     m.channel_type_id, not coalesce(m.from_me, false) as from_contact, m.agent_id, \
     m.\"timestamp\" at time zone 'UTC' as sent_at, m.content_type, m.text, m.media_url, \
     m.media_mimetype, m.channel_message_id, m.reply_to_id as reply_to, \
     (m.metadata->>'message_id')::uuid as message_id, \
     m.created_at at time zone 'UTC' as recorded_at";

/// `?limit=&after=&before=&min_version=&wait_ms=`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MessagePage {
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// The messages after this one (a previous page's `next_cursor`), oldest first.
    pub after: Option<Uuid>,
    /// The same as `after` (the name every other list uses).
    pub cursor: Option<Uuid>,
    /// The messages right before this one, still oldest first: the page that ends just before
    /// it. Its `next_cursor` is the `before` of the page before that.
    pub before: Option<Uuid>,
    /// Wait until the session (or contact) read model holds at least this version.
    pub min_version: Option<i64>,
    /// How long to wait for `min_version`, in milliseconds: 0 to 25000 (default 2000).
    #[param(minimum = 0, maximum = 25000)]
    pub wait_ms: Option<u64>,
}

/// Whose conversation a page is.
#[derive(Clone, Copy)]
enum Of {
    Session(Uuid),
    Contact(Uuid),
}

impl Of {
    fn column(self) -> &'static str {
        match self {
            Self::Session(_) => "session_id",
            Self::Contact(_) => "contact_id",
        }
    }

    fn id(self) -> Uuid {
        match self {
            Self::Session(id) | Self::Contact(id) => id,
        }
    }
}

/// Where a page starts, by a message of the same conversation.
enum Anchor {
    Start,
    After(Uuid),
    Before(Uuid),
}

impl MessagePage {
    fn anchor(&self) -> Result<Anchor, ApiError> {
        if self.after.is_some() && self.cursor.is_some() {
            return Err(super::parameter_rule(
                "cursor",
                "give after or cursor, not both",
            ));
        }
        match (self.after.or(self.cursor), self.before) {
            (Some(_), Some(_)) => Err(super::parameter_rule(
                "before",
                "give after (or cursor) or before, not both",
            )),
            (Some(after), None) => Ok(Anchor::After(after)),
            (None, Some(before)) => Ok(Anchor::Before(before)),
            (None, None) => Ok(Anchor::Start),
        }
    }

    fn read_params(&self) -> ReadParams {
        ReadParams {
            min_version: self.min_version,
            wait_ms: self.wait_ms,
        }
    }
}

async fn list(
    state: &QueryState,
    tenant_id: &str,
    of: Of,
    params: &MessagePage,
) -> Result<Page<MessageDto>, ApiError> {
    let limit = PageParams {
        limit: params.limit,
        cursor: None,
    }
    .limit()?;
    let from = params.anchor()?;
    let mut tx = state.tx(tenant_id).await?;
    let column = of.column();
    let anchor = match &from {
        Anchor::Start => None,
        Anchor::After(id) | Anchor::Before(id) => {
            let at: Option<NaiveDateTime> = sqlx::query_scalar(&format!(
                "select \"timestamp\" from messages where id = $1 and {column} = $2"
            ))
            .bind(id)
            .bind(of.id())
            .fetch_optional(&mut *tx)
            .await
            .map_err(ApiError::internal)?;
            let Some(at) = at else {
                return Err(ApiError::NotFound(format!(
                    "no message {id} in this conversation to page from"
                )));
            };
            Some((at, *id))
        }
    };
    let mut sql = QueryBuilder::new(format!(
        "select {DTO_COLUMNS} from messages m where m.{column} = "
    ));
    sql.push_bind(of.id())
        .push(" and m.tenant_id = ")
        .push_bind(tenant_id.to_owned());
    let backwards = matches!(from, Anchor::Before(_));
    if let Some((at, id)) = anchor {
        sql.push(if backwards {
            " and (m.\"timestamp\", m.id) < ("
        } else {
            " and (m.\"timestamp\", m.id) > ("
        })
        .push_bind(at)
        .push(", ")
        .push_bind(id)
        .push(")");
    }
    sql.push(if backwards {
        " order by m.\"timestamp\" desc, m.id desc limit "
    } else {
        " order by m.\"timestamp\", m.id limit "
    })
    .push_bind(limit + 1);
    let mut rows: Vec<MessageDto> = sql
        .build_query_as()
        .fetch_all(&mut *tx)
        .await
        .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    if backwards {
        rows.reverse();
    }
    let next_cursor = more
        .then(|| if backwards { rows.first() } else { rows.last() })
        .flatten()
        .map(|m| m.id.to_string());
    Ok(Page {
        items: rows,
        next_cursor,
    })
}

#[utoipa::path(get, path = "/sessions/{session_id}/messages", operation_id = "list_session_messages", tag = "sessions", summary = "A session's messages, oldest first", params(("project_id" = Uuid, Path, description = "The project"), ("session_id" = Uuid, Path, description = "The session"), MessagePage), responses((status = 200, description = "OK; ETag carries the version (one resource) or a content hash (a list)", body = Page<MessageDto>), ParameterRule, QueryErrors), security(("api_key" = [])))]
async fn of_session(
    State(state): State<QueryState>,
    auth: AuthContext,
    Path((_, session_id)): Path<(Uuid, Uuid)>,
    Query(params): Query<MessagePage>,
) -> Result<Response, ApiError> {
    read_at_least(
        &state,
        &auth.tenant_id,
        "session",
        session_id,
        &params.read_params(),
        |r: &SessionRecord| r.version,
        || read_session(&state, &auth.tenant_id, session_id),
    )
    .await?;
    let page = list(&state, &auth.tenant_id, Of::Session(session_id), &params).await?;
    Ok(with_etag(page, None))
}

#[utoipa::path(get, path = "/contacts/{contact_id}/messages", operation_id = "list_contact_messages", tag = "contacts", summary = "A contact's messages across its sessions, oldest first", params(("project_id" = Uuid, Path, description = "The project"), ("contact_id" = Uuid, Path, description = "The contact"), MessagePage), responses((status = 200, description = "OK; ETag carries the version (one resource) or a content hash (a list)", body = Page<MessageDto>), ParameterRule, QueryErrors), security(("api_key" = [])))]
async fn of_contact(
    State(state): State<QueryState>,
    auth: AuthContext,
    Path((_, contact_id)): Path<(Uuid, Uuid)>,
    Query(params): Query<MessagePage>,
) -> Result<Response, ApiError> {
    let contact = read_at_least(
        &state,
        &auth.tenant_id,
        "contact",
        contact_id,
        &params.read_params(),
        |r: &ContactRecord| r.version,
        || read_contact(&state, &auth.tenant_id, contact_id),
    )
    .await?;
    if contact.forgotten_at.is_some() {
        return Err(super::not_found());
    }
    let page = list(&state, &auth.tenant_id, Of::Contact(contact_id), &params).await?;
    Ok(with_etag(page, None))
}

/// The longest search a request may send, in characters.
const MAX_QUERY_CHARS: usize = 200;

/// `?q=&limit=&cursor=`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Words to find in message text, as a web search takes them: all of them by default,
    /// `"a phrase"`, `or`, `-word` (1 to 200 characters; no stemming, any language).
    #[param(min_length = 1, max_length = 200)]
    pub q: String,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// The previous page's `next_cursor`: the hits older than that message.
    pub cursor: Option<Uuid>,
}

/// A message that matched, with its contact and its session.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageHit {
    pub message: MessageDto,
    pub contact: HitContact,
    pub session: HitSession,
}

/// The contact of a hit.
#[derive(Debug, Serialize, ToSchema, FromRow)]
pub struct HitContact {
    pub id: Uuid,
    pub name: Option<String>,
}

/// The session of a hit.
#[derive(Debug, Serialize, ToSchema, FromRow)]
pub struct HitSession {
    pub id: Uuid,
    pub status: Option<String>,
    pub channel_type_id: Option<i64>,
    pub started_at: Option<DateTime<Utc>>,
}

#[derive(FromRow)]
struct HitRow {
    #[sqlx(flatten)]
    message: MessageDto,
    hit_contact_name: Option<String>,
    hit_session_status: Option<String>,
    hit_session_started_at: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/messages", operation_id = "search_messages", tag = "messages", summary = "Full-text search over the project's message text, newest first, each hit with its contact and session", params(("project_id" = Uuid, Path, description = "The project"), SearchParams), responses((status = 200, description = "OK; ETag carries the version (one resource) or a content hash (a list)", body = Page<MessageHit>), ParameterRule, QueryErrors), security(("api_key" = [])))]
async fn search(
    State(state): State<QueryState>,
    auth: AuthContext,
    Query(params): Query<SearchParams>,
) -> Result<Response, ApiError> {
    let q = params.q.trim();
    if q.is_empty() || q.chars().count() > MAX_QUERY_CHARS || q.contains('\0') {
        return Err(super::parameter_rule(
            "q",
            "must be 1 to 200 characters of words to find",
        ));
    }
    let limit = PageParams {
        limit: params.limit,
        cursor: None,
    }
    .limit()?;
    let tenant_id = auth.tenant_id.as_str();
    let mut tx = state.tx(tenant_id).await?;
    let anchor = match params.cursor {
        None => None,
        Some(id) => {
            let at: Option<NaiveDateTime> =
                sqlx::query_scalar("select \"timestamp\" from messages where id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(ApiError::internal)?;
            Some((at.ok_or_else(super::not_found)?, id))
        }
    };
    // The match is on the very expression the GIN index (0030) holds.
    let mut sql = QueryBuilder::new(format!(
        "select {DTO_COLUMNS}, c.name as hit_contact_name, s.status as hit_session_status, \
                s.started_at at time zone 'UTC' as hit_session_started_at \
           from messages m \
           left join contacts c on c.id = m.contact_id \
           left join sessions s on s.id = m.session_id \
          where m.tenant_id = "
    ));
    sql.push_bind(tenant_id.to_owned())
        .push(" and to_tsvector('simple', coalesce(m.text, '')) @@ websearch_to_tsquery('simple', ")
        .push_bind(q.to_owned())
        .push(")");
    if let Some((at, id)) = anchor {
        sql.push(" and (m.\"timestamp\", m.id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    sql.push(" order by m.\"timestamp\" desc, m.id desc limit ")
        .push_bind(limit + 1);
    let rows: Vec<HitRow> = sql
        .build_query_as()
        .fetch_all(&mut *tx)
        .await
        .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    let hits: Vec<MessageHit> = rows
        .into_iter()
        .map(|r| MessageHit {
            contact: HitContact {
                id: r.message.contact_id,
                name: r.hit_contact_name,
            },
            session: HitSession {
                id: r.message.session_id,
                status: r.hit_session_status,
                channel_type_id: r.message.channel_type_id,
                started_at: r.hit_session_started_at,
            },
            message: r.message,
        })
        .collect();
    Ok(with_etag(super::page(hits, limit, |h| h.message.id), None))
}
