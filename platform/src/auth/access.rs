//! A project's API keys and members as the API shows them (never a key's secret), read through
//! the security-definer functions of migration 0032: the request logins may not read the
//! identity tables themselves.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

/// One of the project's keys.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyView {
    /// The key's id (`DELETE /api-keys/{id}` revokes it).
    pub id: Uuid,
    /// What the key is for.
    pub name: String,
    /// The most the key may do (its user's role caps it further).
    pub role: Option<String>,
    /// The key's first characters, to tell keys apart.
    pub prefix: Option<String>,
    /// The user whose key it is.
    pub user_id: Option<Uuid>,
    /// When it was made.
    pub created_at: Option<DateTime<Utc>>,
    /// When a request last came with it (recorded at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it stops working (none: never).
    pub expires_at: Option<DateTime<Utc>>,
    /// The key that made it (none: made by `command-service bootstrap`).
    pub created_by_key: Option<Uuid>,
}

/// One of the project's members.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberView {
    /// The user (`PUT /members/{user_id}` changes their role).
    pub user_id: Uuid,
    /// The user's name.
    pub name: String,
    /// The user's e-mail.
    pub email: String,
    /// owner, admin, supervisor, agent or viewer.
    pub role: String,
    /// Who added them (a user id, or `bootstrap`).
    pub invited_by: Option<String>,
    /// When they were added.
    pub invited_at: Option<DateTime<Utc>>,
    /// When their membership last changed.
    pub updated_at: Option<DateTime<Utc>>,
}

fn utc(at: Option<NaiveDateTime>) -> Option<DateTime<Utc>> {
    at.map(|at| at.and_utc())
}

/// The project's keys that are not revoked, oldest first.
pub async fn list_keys(
    conn: &mut PgConnection,
    project_id: Uuid,
) -> Result<Vec<ApiKeyView>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select id as "id!", user_id, name as "name!", role, prefix, created_at, last_used,
                  expires_at, created_by_key
             from list_project_api_keys($1)"#,
        project_id
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ApiKeyView {
            id: r.id,
            name: r.name,
            role: r.role,
            prefix: r.prefix,
            user_id: r.user_id,
            created_at: utc(r.created_at),
            last_used_at: utc(r.last_used),
            expires_at: utc(r.expires_at),
            created_by_key: r.created_by_key,
        })
        .collect())
}

/// The project's members, in the order they joined.
pub async fn list_members(
    conn: &mut PgConnection,
    project_id: Uuid,
) -> Result<Vec<MemberView>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select user_id as "user_id!", name as "name!", email as "email!", role as "role!",
                  invited_by, invited_at, updated_at
             from list_project_members($1)"#,
        project_id
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| MemberView {
            user_id: r.user_id,
            name: r.name,
            email: r.email,
            role: r.role,
            invited_by: r.invited_by,
            invited_at: utc(r.invited_at),
            updated_at: utc(r.updated_at),
        })
        .collect())
}
