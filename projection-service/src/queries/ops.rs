//! The operator routes the console reads (`/ops/...`): the pipeline as `replay-tool status`
//! sees it, and the caller's parked events with a retry (the code `replay-tool dead-letters
//! retry` runs). The pipeline is shared by every tenant, so its numbers are the broker's and the
//! locks' (positions, backlogs, who leads), never another tenant's data; the parked events are
//! the caller's tenant's only.

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use platform::auth::AuthContext;
use platform::event_store::EventStore;
use platform::http::Path;
use platform::nats::StreamSettings;
use platform::openapi::QueryErrors;
use platform::ApiError;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{with_etag, QueryState};
use crate::pipeline::{self, ConsumerStatus, History, Holder, Instance, Sample};

/// What the operator routes need beyond the queries' state.
#[derive(Clone)]
pub struct Ops {
    /// The cross-tenant pool (the locks, the outbox's backlog, a retry's projection writes).
    pub system: PgPool,
    pub nats: async_nats::Client,
    pub stream: StreamSettings,
    pub history: History,
}

pub fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new()
        .routes(routes!(pipeline_status))
        .routes(routes!(list_parked))
        .routes(routes!(retry_parked))
}

/// A partition consumer and its last 15 minutes.
#[derive(Debug, Serialize, ToSchema)]
struct Consumer {
    #[serde(flatten)]
    status: ConsumerStatus,
    /// The instance that owns the partition now (none while no one does).
    owner: Option<String>,
    /// Its lag sampled every 5 s over the last 15 minutes, oldest first.
    history: Vec<Sample>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Outbox {
    /// Events stored and not yet published.
    pending: i64,
    /// How long the oldest of them has waited, in seconds.
    oldest_pending_seconds: f64,
}

#[derive(Debug, Serialize, ToSchema)]
struct Pipeline {
    /// When this was read.
    at: DateTime<Utc>,
    outbox: Outbox,
    /// Who relays the outbox to the broker now (none: no command-service relays).
    relay: Option<Holder>,
    /// Who rebuilds the read tables now (none: no rebuild runs).
    rebuild: Option<Holder>,
    consumers: Vec<Consumer>,
    instances: Vec<Instance>,
}

#[utoipa::path(get, path = "/ops/pipeline", operation_id = "get_pipeline", tag = "operations",
    summary = "The pipeline: each partition consumer's position, backlog and lag, the outbox's backlog, who relays, who owns which partition, whether a rebuild runs",
    params(("project_id" = Uuid, Path, description = "The project")),
    responses((status = 200, description = "OK", body = Pipeline), QueryErrors),
    security(("api_key" = [])))]
async fn pipeline_status(
    State(state): State<QueryState>,
    _auth: AuthContext,
) -> Result<Response, ApiError> {
    let ops = &state.ops;
    let unavailable = |e: anyhow::Error| {
        tracing::warn!(error = %e, "reading the pipeline's state failed");
        ApiError::Unavailable {
            detail: "the broker or the database did not answer; retry shortly".into(),
            retry_after_secs: 2,
        }
    };
    let (pending, oldest_pending_seconds) = platform::event_store::outbox_backlog(&ops.system)
        .await
        .map_err(ApiError::internal)?;
    let consumers = pipeline::consumers(&ops.nats, &ops.stream)
        .await
        .map_err(unavailable)?;
    let instances = pipeline::instances(&ops.system, &ops.stream)
        .await
        .map_err(unavailable)?;
    let relay = pipeline::holder(&ops.system, pipeline::RELAY_LOCK)
        .await
        .map_err(unavailable)?;
    let rebuild = pipeline::holder(&ops.system, pipeline::REBUILD_LOCK)
        .await
        .map_err(unavailable)?;
    let consumers = consumers
        .into_iter()
        .map(|status| Consumer {
            owner: instances
                .iter()
                .find(|i| i.partitions.contains(&status.partition))
                .map(|i| i.instance.clone()),
            history: ops.history.of(status.partition),
            status,
        })
        .collect();
    Ok(with_etag(
        Pipeline {
            at: Utc::now(),
            outbox: Outbox {
                pending,
                oldest_pending_seconds,
            },
            relay,
            rebuild,
            consumers,
            instances,
        },
        None,
    ))
}

/// A parked event of the caller's tenant, with the event as the store holds it.
#[derive(Debug, Serialize, ToSchema)]
struct Parked {
    id: Uuid,
    event_id: Uuid,
    /// The partition consumer that parked it.
    consumer_name: String,
    aggregate_id: Uuid,
    aggregate_type: String,
    event_type: String,
    sequence_number: i64,
    /// Why it could not be applied (the last attempt's error).
    error: String,
    attempts: i32,
    parked_at: DateTime<Utc>,
    /// The event as the store holds it (`{id, type, occurred_at, project_id, aggregate_type,
    /// aggregate_id, version, data}`, personal fields opened).
    #[schema(value_type = Object)]
    event: Value,
}

/// How many parked events the list shows at most (the oldest first).
const MAX_PARKED: i64 = 500;

#[utoipa::path(get, path = "/ops/dead-letters", operation_id = "list_parked_events", tag = "operations",
    summary = "The project's parked events (those a projection could not apply), oldest first, at most 500",
    params(("project_id" = Uuid, Path, description = "The project")),
    responses((status = 200, description = "OK", body = super::Page<Parked>), QueryErrors),
    security(("api_key" = [])))]
async fn list_parked(
    State(state): State<QueryState>,
    auth: AuthContext,
) -> Result<Response, ApiError> {
    let mut tx = state.tx(&auth.tenant_id).await?;
    // Only what the store vouches for: a parked message the store does not hold (a forgery)
    // names its tenant itself, so it is the operator's (`replay-tool dead-letters list`).
    let rows = sqlx::query!(
        "select d.id, d.event_id, d.consumer_name, d.aggregate_id, d.aggregate_type, d.event_type, \
                d.sequence_number, d.error, d.attempts, d.parked_at \
           from dead_letter_events d join contact_event_store e on e.id = d.event_id \
          where d.status = 'parked' and d.tenant_id = $1 and e.project_id = $2 \
          order by d.parked_at, d.sequence_number limit $3",
        auth.tenant_id,
        auth.project_id,
        MAX_PARKED,
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(ApiError::internal)?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
    let envelopes: Vec<_> = EventStore::read_by_ids(&mut *tx, &ids)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .filter(|e| e.project_id == auth.project_id)
        .collect();
    let keys = state
        .keys
        .load_for(&mut tx, envelopes.iter())
        .await
        .map_err(ApiError::internal)?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(e) = envelopes.iter().find(|e| e.event_id == row.event_id) else {
            continue;
        };
        let payload = e.payload().map_err(ApiError::internal).and_then(|p| {
            keys.open_payload(e.event_id, Some(e.contact_id), p)
                .map_err(ApiError::internal)
        })?;
        let event = platform::webhooks::event_body(e, &payload);
        items.push(Parked {
            id: row.id,
            event_id: row.event_id,
            consumer_name: row.consumer_name,
            aggregate_id: row.aggregate_id,
            aggregate_type: row.aggregate_type,
            event_type: row.event_type,
            sequence_number: row.sequence_number,
            error: row.error,
            attempts: row.attempts,
            parked_at: row.parked_at.and_utc(),
            event,
        });
    }
    Ok(super::whole_list(items))
}

/// What a retry did.
#[derive(Debug, Serialize, ToSchema)]
struct Retried {
    /// `resolved`: applied and marked so; `parked`: it failed again (its new error in `error`).
    status: &'static str,
    /// The error of the attempt that failed (none when resolved).
    error: Option<String>,
}

#[utoipa::path(post, path = "/ops/dead-letters/{dead_letter_id}/retry", operation_id = "retry_parked_event", tag = "operations",
    summary = "Applies a parked event again, as the store holds it, with the projections' own code (`replay-tool dead-letters retry`)",
    params(("project_id" = Uuid, Path, description = "The project"), ("dead_letter_id" = Uuid, Path, description = "The parked event")),
    responses((status = 200, description = "Retried: `status` says whether it applied", body = Retried),
              (status = 404, description = "No parked event of this project with that id", body = platform::openapi::Problem), QueryErrors),
    security(("api_key" = [])))]
async fn retry_parked(
    State(state): State<QueryState>,
    auth: AuthContext,
    Path((_, id)): Path<(Uuid, Uuid)>,
) -> Result<Json<Retried>, ApiError> {
    let mut tx = state.tx(&auth.tenant_id).await?;
    let parked = sqlx::query_scalar!(
        r#"select d.id as "id!" from dead_letter_events d
             join contact_event_store e on e.id = d.event_id
            where d.id = $1 and d.status = 'parked' and d.tenant_id = $2 and e.project_id = $3"#,
        id,
        auth.tenant_id,
        auth.project_id,
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    if parked.is_none() {
        return Err(ApiError::NotFound(
            "no parked event of this project with that id".into(),
        ));
    }
    let report = crate::dead_letters::retry(&state.ops.system, &state.keys, Some(&[id]))
        .await
        .map_err(ApiError::internal)?;
    if report.resolved == 1 {
        return Ok(Json(Retried {
            status: "resolved",
            error: None,
        }));
    }
    let error = sqlx::query_scalar!("select error from dead_letter_events where id = $1", id)
        .fetch_optional(&state.ops.system)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Retried {
        status: "parked",
        error,
    }))
}
