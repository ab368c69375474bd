//! `Idempotency-Key`: the first answer to a key is stored in the same transaction as the
//! command's events, so a retry with the same key and body gets that answer and writes nothing;
//! the same key with another body is refused (422).

use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// A key and the hash of the request it came with (method, path and body).
#[derive(Debug, Clone)]
pub struct IdempotencySlot {
    pub key: String,
    pub request_hash: String,
}

/// An answer as it was given.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Value,
}

/// What a key already stands for.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// The same request was answered before: this answer.
    Same(StoredResponse),
    /// The key was used with another request.
    Different,
}

/// What this key already stands for in the project, if anything.
pub async fn find(
    executor: impl sqlx::PgExecutor<'_>,
    project_id: Uuid,
    slot: &IdempotencySlot,
) -> Result<Option<Recorded>, sqlx::Error> {
    let row = sqlx::query!(
        "select request_hash, response_status, response_body from idempotency_keys \
          where project_id = $1 and idempotency_key = $2",
        project_id,
        &slot.key,
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|row| {
        if row.request_hash == slot.request_hash {
            Recorded::Same(StoredResponse {
                status: row.response_status as u16,
                body: row.response_body,
            })
        } else {
            Recorded::Different
        }
    }))
}

/// Records the answer in the project's tenant; `false` when another request recorded this key
/// first.
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    (project_id, tenant_id): (Uuid, &str),
    slot: &IdempotencySlot,
    response: &StoredResponse,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query!(
        "insert into idempotency_keys (project_id, tenant_id, idempotency_key, request_hash, response_status, response_body) \
         values ($1, $2, $3, $4, $5, $6) on conflict (project_id, idempotency_key) do nothing",
        project_id,
        tenant_id,
        &slot.key,
        &slot.request_hash,
        i32::from(response.status),
        &response.body,
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}
