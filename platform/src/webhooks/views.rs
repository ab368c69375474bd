//! Subscriptions and deliveries as the API shows them, read in the caller's tenant transaction
//! (row-level security shows its rows only; every statement also names the project).

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgConnection};
use utoipa::ToSchema;
use uuid::Uuid;

/// The columns [`SubscriptionView`] is read from.
pub const SUBSCRIPTION_COLUMNS: &str =
    "id, url, events, name, active, created_at, updated_at, last_success_at, last_failure_at, \
     success_count, failure_count";

#[derive(FromRow)]
struct SubscriptionRow {
    id: Uuid,
    url: String,
    events: Option<Vec<String>>,
    name: String,
    active: Option<bool>,
    created_at: Option<NaiveDateTime>,
    updated_at: Option<NaiveDateTime>,
    last_success_at: Option<NaiveDateTime>,
    last_failure_at: Option<NaiveDateTime>,
    success_count: Option<i64>,
    failure_count: Option<i64>,
}

/// A webhook subscription (never its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubscriptionView {
    /// The subscription's id.
    pub id: Uuid,
    /// Where its deliveries are POSTed.
    pub url: String,
    /// The event patterns it hears (`*`, `contact.*`, `session.ended`, ...).
    pub events: Vec<String>,
    /// What it is for.
    pub description: String,
    /// Whether events are delivered to it (an inactive one takes none in).
    pub active: bool,
    /// When it was made.
    pub created_at: Option<DateTime<Utc>>,
    /// When it last changed.
    pub updated_at: Option<DateTime<Utc>>,
    /// When a delivery last succeeded.
    pub last_success_at: Option<DateTime<Utc>>,
    /// When a delivery attempt last failed.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Deliveries made.
    pub delivered: i64,
    /// Delivery attempts that failed.
    pub failed_attempts: i64,
}

impl From<SubscriptionRow> for SubscriptionView {
    fn from(r: SubscriptionRow) -> Self {
        Self {
            id: r.id,
            url: r.url,
            events: r.events.unwrap_or_default(),
            description: r.name,
            active: r.active.unwrap_or(true),
            created_at: utc(r.created_at),
            updated_at: utc(r.updated_at),
            last_success_at: utc(r.last_success_at),
            last_failure_at: utc(r.last_failure_at),
            delivered: r.success_count.unwrap_or(0),
            failed_attempts: r.failure_count.unwrap_or(0),
        }
    }
}

fn utc(at: Option<NaiveDateTime>) -> Option<DateTime<Utc>> {
    at.map(|at| at.and_utc())
}

/// One of the project's subscriptions that is not deleted.
pub async fn read_subscription(
    conn: &mut PgConnection,
    project_id: Uuid,
    id: Uuid,
) -> Result<Option<SubscriptionView>, sqlx::Error> {
    let row: Option<SubscriptionRow> = sqlx::query_as(&format!(
        "select {SUBSCRIPTION_COLUMNS} from webhook_subscriptions \
          where id = $1 and project_id = $2 and deleted_at is null"
    ))
    .bind(id)
    .bind(project_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Into::into))
}

/// The project's subscriptions that are not deleted, oldest first.
pub async fn list_subscriptions(
    conn: &mut PgConnection,
    project_id: Uuid,
) -> Result<Vec<SubscriptionView>, sqlx::Error> {
    let rows: Vec<SubscriptionRow> = sqlx::query_as(&format!(
        "select {SUBSCRIPTION_COLUMNS} from webhook_subscriptions \
          where project_id = $1 and deleted_at is null order by created_at, id"
    ))
    .bind(project_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// One delivery of an event to a subscription.
#[derive(Debug, Clone, Serialize, ToSchema, FromRow)]
pub struct DeliveryView {
    /// The delivery's id.
    pub id: Uuid,
    /// The event delivered (`Ventros-Event-Id`).
    pub event_id: Uuid,
    /// The event's type.
    pub event_type: String,
    /// `pending` (to be tried, or retried), `delivered`, or `failed` (no attempt left).
    pub status: String,
    /// Attempts made so far.
    pub attempts: i32,
    /// The status the endpoint last answered (none: it did not answer).
    pub last_status: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due (while pending).
    #[serde(serialize_with = "as_utc")]
    #[schema(value_type = DateTime<Utc>)]
    pub next_attempt_at: NaiveDateTime,
    /// When it was taken in.
    #[serde(serialize_with = "as_utc")]
    #[schema(value_type = DateTime<Utc>)]
    pub created_at: NaiveDateTime,
    /// When it was delivered.
    #[serde(serialize_with = "as_utc_option")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub delivered_at: Option<NaiveDateTime>,
}

fn as_utc<S: serde::Serializer>(at: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    at.and_utc().serialize(s)
}

fn as_utc_option<S: serde::Serializer>(
    at: &Option<NaiveDateTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    at.map(|at| at.and_utc()).serialize(s)
}

/// The columns [`DeliveryView`] is read from.
pub const DELIVERY_COLUMNS: &str = "d.id, d.event_id, d.event_type, d.status, d.attempts, \
     d.last_status, d.last_error, d.next_attempt_at, d.created_at, d.delivered_at";

/// A page of a subscription's deliveries, newest first: at most `limit`, older than `before`
/// (a delivery id), of one `status` when given.
pub async fn list_deliveries(
    conn: &mut PgConnection,
    project_id: Uuid,
    subscription_id: Uuid,
    status: Option<&str>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<DeliveryView>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {DELIVERY_COLUMNS} from webhook_deliveries d \
           join webhook_subscriptions s on s.id = d.subscription_id and s.project_id = $2 \
          where d.subscription_id = $1 \
            and ($3::text is null or d.status = $3) \
            and ($4::uuid is null or d.id < $4) \
          order by d.id desc limit $5"
    ))
    .bind(subscription_id)
    .bind(project_id)
    .bind(status)
    .bind(before)
    .bind(limit)
    .fetch_all(conn)
    .await
}
