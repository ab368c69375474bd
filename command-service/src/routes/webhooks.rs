//! `/webhooks`: subscriptions made, changed and deleted, and a delivery sent again. The
//! dispatcher (projection-service) delivers; the lists are projection-service's too.
//!
//! A URL is refused (422) when its host resolves to a loopback, private, link-local or metadata
//! address, unless `WEBHOOK_ALLOW_PRIVATE_TARGETS=true`; the dispatcher checks again at each
//! attempt, since a name can be pointed elsewhere later.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use platform::auth::AuthContext;
use platform::body::JsonBody;
use platform::db::tenant_tx;
use platform::http::Path;
use platform::openapi::CommandErrors;
use platform::webhooks::{self, DeliveryView, Refusal, SubscriptionView, DELIVERY_COLUMNS};
use platform::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{field_error, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(change, remove))
        .routes(routes!(retry))
}

/// The most subscriptions a project holds.
pub const MAX_SUBSCRIPTIONS_PER_PROJECT: i64 = 100;

fn refused(r: Refusal) -> ApiError {
    field_error(r.field, &r.message)
}

fn check_description(description: &str) -> Result<(), ApiError> {
    if description.chars().count() > 200 || description.chars().any(char::is_control) {
        return Err(field_error(
            "description",
            "must be at most 200 characters, none of them a control character",
        ));
    }
    Ok(())
}

/// The URL as it will be stored, once it parses and points where a webhook may go.
async fn checked_url(state: &AppState, raw: &str) -> Result<String, ApiError> {
    let url = webhooks::check_url(raw).map_err(refused)?;
    webhooks::check_addresses(&url, state.allow_private_webhooks)
        .await
        .map_err(refused)?;
    Ok(url.to_string())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewSubscription {
    /// Where to POST (http or https; not a private address).
    url: String,
    /// The event patterns to hear: `*`, `contact.*`, `session.*`, `project.*` or event types
    /// such as `session.ended` (1 to 50).
    events: Vec<String>,
    /// What it is for (at most 200 characters).
    description: Option<String>,
    /// The signing secret (16 to 256 visible ASCII characters, not beginning `sealed:`);
    /// generated when absent.
    secret: Option<String>,
}

/// A subscription just made, with its signing secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
struct Created {
    #[serde(flatten)]
    subscription: SubscriptionView,
    /// Verifies `Ventros-Signature`; it cannot be shown again.
    secret: String,
}

#[utoipa::path(post, path = "/webhooks", operation_id = "create_webhook", tag = "webhooks", summary = "Subscribe a URL to the project's events", description = "Each matching event is POSTed to the URL, signed with the secret (shown in this answer only): Ventros-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<body>\")>.", params(("project_id" = Uuid, Path, description = "The project")), request_body = NewSubscription, responses((status = 201, description = "The subscription, with its secret", body = Created), CommandErrors), security(("api_key" = [])))]
async fn create(
    auth: AuthContext,
    State(state): State<AppState>,
    body: JsonBody<NewSubscription>,
) -> Result<Response, ApiError> {
    let b = body.value;
    webhooks::check_patterns(&b.events).map_err(refused)?;
    let description = b.description.unwrap_or_default();
    check_description(&description)?;
    let secret = match b.secret {
        Some(secret) => {
            webhooks::check_secret(&secret).map_err(refused)?;
            secret
        }
        None => webhooks::generate_secret(),
    };
    let url = checked_url(&state, &b.url).await?;
    let mut tx = tenant_tx(&state.pool, &auth.tenant_id)
        .await
        .map_err(ApiError::internal)?;
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "insert into webhook_subscriptions
                (id, user_id, project_id, tenant_id, name, url, events, active, secret,
                 created_at, updated_at)
         select $1, $2, $3, $4, $5, $6, $7, true, $8, now() at time zone 'utc',
                now() at time zone 'utc'
          where (select count(*) from webhook_subscriptions
                  where project_id = $3 and deleted_at is null) < $9",
    )
    .bind(id)
    .bind(auth.user_id)
    .bind(auth.project_id)
    .bind(&auth.tenant_id)
    .bind(&description)
    .bind(&url)
    .bind(&b.events)
    .bind(webhooks::seal_secret(&state.keyring, id, &secret))
    .bind(MAX_SUBSCRIPTIONS_PER_PROJECT)
    .execute(&mut *tx)
    .await
    .map_err(ApiError::internal)?;
    if inserted.rows_affected() == 0 {
        return Err(ApiError::Conflict(format!(
            "the project holds {MAX_SUBSCRIPTIONS_PER_PROJECT} subscriptions, the most it may"
        )));
    }
    let subscription = webhooks::read_subscription(&mut tx, auth.project_id, id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the new subscription is gone")))?;
    tx.commit().await.map_err(ApiError::internal)?;
    let mut response = (
        StatusCode::CREATED,
        Json(Created {
            subscription,
            secret,
        }),
    )
        .into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Change {
    /// A new URL.
    url: Option<String>,
    /// New event patterns.
    events: Option<Vec<String>>,
    /// Whether deliveries are sent (a paused subscription's deliveries are taken in and wait
    /// until it is active again).
    active: Option<bool>,
    /// A new description.
    description: Option<String>,
}

#[utoipa::path(patch, path = "/webhooks/{webhook_id}", operation_id = "update_webhook", tag = "webhooks", summary = "Change a subscription's URL, events, description, or pause and resume it", params(("project_id" = Uuid, Path, description = "The project"), ("webhook_id" = Uuid, Path, description = "The subscription")), request_body = Change, responses((status = 200, description = "The subscription", body = SubscriptionView), CommandErrors), security(("api_key" = [])))]
async fn change(
    auth: AuthContext,
    State(state): State<AppState>,
    Path((_, id)): Path<(Uuid, Uuid)>,
    body: JsonBody<Change>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let b = body.value;
    if b.url.is_none() && b.events.is_none() && b.active.is_none() && b.description.is_none() {
        return Err(field_error(
            "body",
            "must change at least one of url, events, active, description",
        ));
    }
    if let Some(events) = &b.events {
        webhooks::check_patterns(events).map_err(refused)?;
    }
    if let Some(description) = &b.description {
        check_description(description)?;
    }
    let url = match &b.url {
        Some(raw) => Some(checked_url(&state, raw).await?),
        None => None,
    };
    let mut tx = tenant_tx(&state.pool, &auth.tenant_id)
        .await
        .map_err(ApiError::internal)?;
    let changed = sqlx::query(
        "update webhook_subscriptions
            set url = coalesce($3, url), events = coalesce($4, events),
                active = coalesce($5, active), name = coalesce($6, name),
                version = version + 1, updated_at = now() at time zone 'utc'
          where id = $1 and project_id = $2 and deleted_at is null",
    )
    .bind(id)
    .bind(auth.project_id)
    .bind(url)
    .bind(b.events)
    .bind(b.active)
    .bind(b.description)
    .execute(&mut *tx)
    .await
    .map_err(ApiError::internal)?;
    if changed.rows_affected() == 0 {
        return Err(not_found());
    }
    let subscription = webhooks::read_subscription(&mut tx, auth.project_id, id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(Json(subscription))
}

fn not_found() -> ApiError {
    ApiError::NotFound("no such webhook subscription in this project".into())
}

#[utoipa::path(delete, path = "/webhooks/{webhook_id}", operation_id = "delete_webhook", tag = "webhooks", summary = "Delete a subscription: nothing more is delivered to it", description = "Its pending deliveries are marked failed.", params(("project_id" = Uuid, Path, description = "The project"), ("webhook_id" = Uuid, Path, description = "The subscription")), responses((status = 204, description = "Deleted"), CommandErrors), security(("api_key" = [])))]
async fn remove(
    auth: AuthContext,
    State(state): State<AppState>,
    Path((_, id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    let mut tx = tenant_tx(&state.pool, &auth.tenant_id)
        .await
        .map_err(ApiError::internal)?;
    let deleted = sqlx::query(
        "update webhook_subscriptions
            set deleted_at = now() at time zone 'utc', active = false,
                version = version + 1, updated_at = now() at time zone 'utc'
          where id = $1 and project_id = $2 and deleted_at is null",
    )
    .bind(id)
    .bind(auth.project_id)
    .execute(&mut *tx)
    .await
    .map_err(ApiError::internal)?;
    if deleted.rows_affected() == 0 {
        return Err(not_found());
    }
    sqlx::query(
        "update webhook_deliveries set status = 'failed', last_error = 'the subscription was deleted'
          where subscription_id = $1 and status = 'pending'",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", operation_id = "retry_webhook_delivery", tag = "webhooks", summary = "Send a delivery again, now", description = "A failed or delivered delivery becomes pending again and is sent at once (after any earlier pending delivery of the same contact); a pending one is sent at once.", params(("project_id" = Uuid, Path, description = "The project"), ("webhook_id" = Uuid, Path, description = "The subscription"), ("delivery_id" = Uuid, Path, description = "The delivery")), responses((status = 202, description = "Queued", body = DeliveryView), CommandErrors), security(("api_key" = [])))]
async fn retry(
    auth: AuthContext,
    State(state): State<AppState>,
    Path((_, id, delivery_id)): Path<(Uuid, Uuid, Uuid)>,
) -> Result<Response, ApiError> {
    let mut tx = tenant_tx(&state.pool, &auth.tenant_id)
        .await
        .map_err(ApiError::internal)?;
    let delivery: Option<DeliveryView> = sqlx::query_as(&format!(
        "update webhook_deliveries d
            set status = 'pending', next_attempt_at = now() at time zone 'utc'
           from webhook_subscriptions s
          where d.id = $1 and d.subscription_id = $2 and s.id = d.subscription_id
            and s.project_id = $3 and s.deleted_at is null
          returning {DELIVERY_COLUMNS}"
    ))
    .bind(delivery_id)
    .bind(id)
    .bind(auth.project_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(ApiError::internal)?;
    let Some(delivery) = delivery else {
        return Err(ApiError::NotFound(
            "no such delivery of this subscription in this project".into(),
        ));
    };
    tx.commit().await.map_err(ApiError::internal)?;
    Ok((StatusCode::ACCEPTED, Json(delivery)).into_response())
}
