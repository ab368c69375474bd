//! `dead_letter_events`: every SQL statement on it. Events a worker could not apply are parked
//! here with the error (and the events of the same contact behind them), so the rest of the
//! partition keeps flowing; an operator retries them once the cause is fixed.

use chrono::{DateTime, NaiveDateTime, Utc};
use event_model::EventEnvelope;
use platform::event_store::EventStore;
use platform::personal::DataKeys;
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::projections::{apply_batch, Projection, ProjectionError};

/// A parked event, as an operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: Uuid,
    pub event_id: Uuid,
    pub consumer_name: String,
    pub tenant_id: String,
    pub aggregate_id: Uuid,
    pub aggregate_type: String,
    pub event_type: String,
    pub sequence_number: i64,
    pub error: String,
    pub attempts: i32,
    pub status: String,
    #[serde(serialize_with = "utc")]
    pub parked_at: NaiveDateTime,
}

fn utc<S: serde::Serializer>(at: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    DateTime::<Utc>::from_naive_utc_and_offset(*at, Utc).serialize(s)
}

/// Parks events (in the caller's transaction); one already parked for this consumer is left as
/// it is.
pub async fn park(
    tx: &mut Transaction<'_, Postgres>,
    consumer: &str,
    events: &[(EventEnvelope, String)],
) -> Result<(), sqlx::Error> {
    for (envelope, error) in events {
        sqlx::query!(
            "insert into dead_letter_events \
                 (event_id, consumer_name, tenant_id, aggregate_id, aggregate_type, event_type, sequence_number, envelope, error) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             on conflict (event_id, consumer_name) do nothing",
            envelope.event_id,
            consumer,
            &envelope.tenant_id,
            envelope.aggregate_id,
            envelope.aggregate_type.as_str(),
            &envelope.event_type,
            envelope.sequence_number,
            sqlx::types::Json(envelope) as _,
            error,
        )
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The parked events (oldest first), optionally of one consumer.
pub async fn list(pool: &PgPool, consumer: Option<&str>) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as!(
        DeadLetter,
        "select id, event_id, consumer_name, tenant_id, aggregate_id, aggregate_type, event_type, sequence_number, \
                error, attempts, status, parked_at \
           from dead_letter_events where status = 'parked' and ($1::text is null or consumer_name = $1) \
          order by parked_at, sequence_number",
        consumer,
    )
    .fetch_all(pool)
    .await
}

/// How many events are parked for one consumer.
pub async fn count(pool: &PgPool, consumer: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select count(*) as "count!" from dead_letter_events where status = 'parked' and consumer_name = $1"#,
        consumer,
    )
    .fetch_one(pool)
    .await
}

/// How many events are parked, per consumer.
pub async fn counts(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    Ok(sqlx::query!(
        r#"select consumer_name::text as "consumer!", count(*) as "parked!" from dead_letter_events
            where status = 'parked' group by consumer_name order by consumer_name"#,
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|row| (row.consumer, row.parked))
    .collect())
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RetryReport {
    pub resolved: usize,
    pub still_failing: usize,
}

/// Applies parked events again, in their streams' order, each with the same projection code as
/// the workers, and only as the store holds it (the source of truth, perhaps fixed since): a
/// parked message whose event the store does not have is never applied and stays parked. One that
/// applies is marked resolved; one that fails again stays parked with the new error.
pub async fn retry(
    pool: &PgPool,
    keys: &DataKeys,
    ids: Option<&[Uuid]>,
) -> Result<RetryReport, ProjectionError> {
    let store = EventStore::new(pool.clone());
    let parked = sqlx::query!(
        "select id, event_id from dead_letter_events \
          where status = 'parked' and ($1::uuid[] is null or id = any($1)) \
          order by aggregate_id, sequence_number, parked_at",
        ids,
    )
    .fetch_all(pool)
    .await?;
    let mut report = RetryReport::default();
    for row in parked {
        let (id, event_id) = (row.id, row.event_id);
        let Some(envelope) = EventStore::read_by_ids(pool, &[event_id]).await?.pop() else {
            sqlx::query!(
                "update dead_letter_events set attempts = attempts + 1, \
                        error = 'not in the store: never applied (a message the relay did not publish)', \
                        retried_at = now() at time zone 'utc' where id = $1",
                id,
            )
            .execute(pool)
            .await?;
            report.still_failing += 1;
            continue;
        };
        let mut tx = pool.begin().await?;
        match apply_batch(
            &mut tx,
            &store,
            keys,
            &Projection::ALL,
            std::slice::from_ref(&envelope),
        )
        .await
        {
            Ok(_) => {
                sqlx::query!(
                    "update dead_letter_events set status = 'resolved', attempts = attempts + 1, \
                            retried_at = now() at time zone 'utc', resolved_at = now() at time zone 'utc' where id = $1",
                    id,
                )
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                report.resolved += 1;
            }
            Err(ProjectionError::Poison { reason, .. }) => {
                tx.rollback().await?;
                sqlx::query!(
                    "update dead_letter_events set attempts = attempts + 1, error = $2, \
                            retried_at = now() at time zone 'utc' where id = $1",
                    id,
                    reason,
                )
                .execute(pool)
                .await?;
                report.still_failing += 1;
            }
            Err(other) => return Err(other),
        }
    }
    Ok(report)
}
