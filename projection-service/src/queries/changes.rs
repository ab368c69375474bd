//! `GET /changes`: the project's events as a live feed of server-sent events, read from the store.
//!
//! Each event is `id: <store position>`, `event: <event type>`, `data: <the webhook body>`. The
//! feed walks the store in commit order ([`Horizon::Finished`]: nothing can appear behind it), so
//! what it sent is never followed by something older; a client resumes after the last `id` it
//! saw (`Last-Event-ID`, or `?after=`) with no gap and no duplicate. Without either it starts
//! with what is stored from now on. Once it has caught up it looks for new events when a
//! projection batch commits (the notification `min_version` reads wait on: an event is in the
//! store before it is projected) and at least every [`POLL`]; a comment is sent every 15 s when
//! nothing else is. A client that does not keep up
//! gets a final `cut-off` event once [`BUFFER`] events wait for it, and the feed ends: it
//! resumes from its last id.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use event_model::EventEnvelope;
use futures::Stream;
use platform::auth::AuthContext;
use platform::event_store::{Checkpoint, EventStore, Horizon};
use platform::http::Query;
use platform::openapi::QueryErrors;
use platform::ApiError;
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::QueryState;

pub fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new().routes(routes!(changes))
}

/// How often a caught-up feed looks for new events.
const POLL: Duration = Duration::from_millis(250);
/// Events read from the store at a time.
const READ: i64 = 500;
/// Events that may wait for a client before it is cut off.
const BUFFER: usize = 1_000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Filters {
    /// Resume after this store position (the `id` of the last event seen; `Last-Event-ID` says
    /// the same). 0: from the beginning.
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Only this aggregate's events.
    aggregate_id: Option<Uuid>,
    /// Only `contact`, `session` or `project` events.
    #[param(pattern = "^(contact|session|project)$")]
    aggregate_type: Option<String>,
    /// Only this event type, or a prefix ending in `*` (`contact.*`).
    #[param(pattern = "^[a-z_.]{1,100}\\*?$")]
    event_type: Option<String>,
}

impl Filters {
    fn keeps(&self, e: &EventEnvelope) -> bool {
        self.aggregate_id.is_none_or(|id| id == e.aggregate_id)
            && self
                .aggregate_type
                .as_deref()
                .is_none_or(|t| t == e.aggregate_type.as_str())
            && self
                .event_type
                .as_deref()
                .is_none_or(|t| match t.strip_suffix('*') {
                    Some(prefix) => e.event_type.starts_with(prefix),
                    None => t == e.event_type,
                })
    }
}

#[utoipa::path(get, path = "/changes", operation_id = "stream_changes", tag = "changes", summary = "The project's events as they are stored: server-sent events, resumable", description = "text/event-stream. Each event: id = its store position, event = its type, data = the webhook body. Resume with Last-Event-ID or ?after=; a comment every 15 s; a client that falls 1,000 events behind gets a final cut-off event.", params(("project_id" = Uuid, Path, description = "The project"), ("Last-Event-ID" = Option<i64>, Header, description = "The id of the last event seen: the feed resumes after it"), Filters), responses((status = 200, description = "The feed", content_type = "text/event-stream", body = String), QueryErrors), security(("api_key" = [])))]
async fn changes(
    State(state): State<QueryState>,
    auth: AuthContext,
    headers: HeaderMap,
    Query(filters): Query<Filters>,
) -> Result<Response, ApiError> {
    if let Some(t) = &filters.aggregate_type {
        if event_model::AggregateType::parse(t).is_none() {
            return Err(ApiError::BadRequest(
                "aggregate_type must be contact, session or project".into(),
            ));
        }
    }
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|p| *p >= 0)
                .ok_or_else(|| {
                    ApiError::BadRequest("Last-Event-ID must be a store position".into())
                })?,
        ),
    };
    let mut tx = state.tx(&auth.tenant_id).await?;
    let start = match last_event_id.or(filters.after) {
        Some(0) => Checkpoint::default(),
        Some(position) => {
            // The position's transaction: where the commit-order walk stands after it.
            let transaction: Option<i64> = sqlx::query_scalar(
                "select transaction_id::text::bigint from contact_event_store
                  where position = $1 and tenant_id = $2",
            )
            .bind(position)
            .bind(&auth.tenant_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(ApiError::internal)?;
            let transaction_id = transaction.ok_or_else(|| {
                ApiError::NotFound("no event of this tenant at that position".into())
            })?;
            Checkpoint {
                transaction_id,
                position,
            }
        }
        None => EventStore::finished_checkpoint(&mut *tx, Some(&auth.tenant_id))
            .await
            .map_err(ApiError::internal)?,
    };
    drop(tx);
    let (sender, receiver) = mpsc::channel(BUFFER);
    tokio::spawn(feed(state, auth, filters, start, sender));
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (event, receiver))
    });
    Ok(sse(stream).into_response())
}

fn sse(
    stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("heartbeat"),
    )
}

/// Reads the store from `start` and hands the caller's events over until the client leaves,
/// falls [`BUFFER`] behind, the feed fails, or the service stops (the stream then ends, and
/// the client resumes elsewhere from its last id).
async fn feed(
    state: QueryState,
    auth: AuthContext,
    filters: Filters,
    mut cursor: Checkpoint,
    sender: mpsc::Sender<Result<Event, Infallible>>,
) {
    // Subscribed before the first read: a batch committed between a read and the wait after it
    // still wakes the feed.
    let mut batches = state.projected.subscribe_all();
    while !sender.is_closed() && !state.shutdown.is_cancelled() {
        let read = read_page(&state, &auth, &filters, cursor).await;
        let (events, next) = match read {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "the change feed failed");
                let _ = sender
                    .send(Ok(Event::default()
                        .event("error")
                        .data("the feed failed; resume from the last id")))
                    .await;
                return;
            }
        };
        let caught_up = next == cursor;
        cursor = next;
        for event in events {
            if sender.capacity() <= 1 {
                let _ = sender.try_send(Ok(Event::default()
                    .event("cut-off")
                    .data("the client fell behind; resume from the last id")));
                return;
            }
            if sender.try_send(Ok(event)).is_err() {
                return;
            }
        }
        if caught_up {
            tokio::select! {
                () = sender.closed() => return,
                () = state.shutdown.cancelled() => return,
                () = batches.next() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// The caller's next events after `cursor` as feed events, and where the walk stands after
/// them (`cursor` itself when there is nothing new).
async fn read_page(
    state: &QueryState,
    auth: &AuthContext,
    filters: &Filters,
    cursor: Checkpoint,
) -> anyhow::Result<(Vec<Event>, Checkpoint)> {
    let mut tx = state.tx(&auth.tenant_id).await?;
    let ordered = EventStore::read_after(
        &mut *tx,
        cursor,
        READ,
        Some(&auth.tenant_id),
        Horizon::Finished,
    )
    .await?;
    let Some(next) = ordered.last().map(|o| o.checkpoint()) else {
        return Ok((Vec::new(), cursor));
    };
    let mut envelopes = Vec::with_capacity(ordered.len());
    for o in ordered {
        let e = o.event.into_envelope()?;
        if e.project_id == auth.project_id && filters.keeps(&e) {
            envelopes.push(e);
        }
    }
    let keys = state.keys.load_for(&mut tx, envelopes.iter()).await?;
    let mut events = Vec::with_capacity(envelopes.len());
    for e in &envelopes {
        let payload = keys.open_payload(e.event_id, Some(e.contact_id), e.payload()?)?;
        let body = platform::webhooks::event_body(e, &payload);
        events.push(
            Event::default()
                .id(e.position.to_string())
                .event(&e.event_type)
                .data(serde_json::to_string(&body)?),
        );
    }
    Ok((events, next))
}
