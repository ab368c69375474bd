//! API-key authentication and project access.
//!
//! `Authorization: Bearer <key>`: the key's SHA-256 is looked up in `user_api_keys` (active, not
//! expired, not deleted, its user active and not deleted). Access to the project in the path is
//! its owner's, or a `project_members` row's (`viewer` reads only). A project the caller cannot
//! see is 404, never 403, so ids of other tenants leak nothing.
//!
//! What the database answered is kept in a [`KeyCache`] that a `LISTEN` on the tables behind it
//! empties whenever any of them changes (migration 0024): a revoked key is refused at once, and
//! a key in use costs no database round trip per request.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRef, FromRequestParts, RawPathParams};
use axum::http::header;
use axum::http::request::Parts;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::problem::ApiError;

mod cache;

use cache::ACCESS_TTL;
pub use cache::{KeyCache, KeyCacheListener, ACCESS_CHANGED_CHANNEL};

/// The caller's role in the project of the request, as `authenticate_api_key` answers it: the
/// project's owner, or the role of the user's `project_members` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The project's owner (`projects.user_id`), whatever a member row says: may do everything,
    /// forgetting a contact included.
    Owner,
    /// A member with role `admin`: may do what the owner may, forgetting a contact included.
    Admin,
    /// A member with role `supervisor`: sends commands, may not forget a contact (no other rule
    /// tells it from an agent).
    Supervisor,
    /// A member with role `agent`: sends commands, may not forget a contact.
    Agent,
    /// A member with role `viewer`: reads only; a command is refused with 403.
    Viewer,
}

impl Role {
    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "owner" => Some(Self::Owner),
            "admin" => Some(Self::Admin),
            "supervisor" => Some(Self::Supervisor),
            "agent" => Some(Self::Agent),
            "viewer" => Some(Self::Viewer),
            _ => None,
        }
    }

    /// Whether the role may send commands: every role but [`Role::Viewer`].
    pub fn can_write(self) -> bool {
        !matches!(self, Self::Viewer)
    }
}

/// Who is calling, on which project and tenant. Resolved once per request.
#[derive(Debug, Clone)]
pub struct AuthContext {
    /// The user the API key belongs to (`users.id`).
    pub user_id: Uuid,
    /// The project named in the request's path, which this user may see.
    pub project_id: Uuid,
    /// The project's tenant: the request's transactions run in it (row-level security).
    pub tenant_id: String,
    /// What the user may do in the project.
    pub role: Role,
    /// The project's session timeout.
    pub session_timeout: event_model::values::SessionTimeout,
}

impl AuthContext {
    /// Refuses a caller who may only read.
    pub fn require_write(&self) -> Result<(), ApiError> {
        if self.role.can_write() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("a viewer cannot send commands".into()))
        }
    }
}

/// The hex SHA-256 of an API key: what `user_api_keys.key_hash` holds and a lookup compares, so
/// the key itself is never stored.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random API key (`vk_` + 40 alphanumerics, about 238 bits).
pub fn generate_api_key() -> String {
    format!("vk_{}", Alphanumeric.sample_string(&mut rand::rng(), 40))
}

/// How a request's key is checked: where the lookup reads, and what it remembers.
#[derive(Clone)]
pub struct Authenticator {
    /// Where a key the cache cannot answer is looked up (`authenticate_api_key`, a
    /// security-definer function that needs no tenant): the request paths' pool, or a replica's.
    pub pool: PgPool,
    /// The instance's cache of answers, emptied by its [`KeyCacheListener`].
    pub cache: Arc<KeyCache>,
}

struct Access {
    user_id: Uuid,
    project_id: Option<Uuid>,
    tenant_id: Option<String>,
    role: Option<String>,
    session_timeout_minutes: Option<i64>,
    /// When the key expires (none: never).
    key_expires_at: Option<chrono::NaiveDateTime>,
}

impl<S> FromRequestParts<S> for AuthContext
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let key = bearer_key(&parts.headers)
            .ok_or(ApiError::Unauthorized)?
            .to_owned();
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound("no such project".into()))?;
        let raw_project = params
            .iter()
            .find(|(name, _)| *name == "project_id")
            .map(|(_, value)| value.to_owned())
            .ok_or_else(|| ApiError::NotFound("no such project".into()))?;
        let project_id = Uuid::parse_str(&raw_project).map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid path: project_id {raw_project:?} is not a UUID"
            ))
        })?;
        let auth = Authenticator::from_ref(state);
        // The key's hash and the project: what the cache is keyed by.
        let asked = (hash_api_key(&key), project_id);
        if let Some(access) = auth.cache.granted(&asked) {
            metrics::counter!("auth_key_lookups_total", "result" => "granted_from_cache")
                .increment(1);
            return Ok(access);
        }
        if auth.cache.recently_failed(&asked.0) {
            metrics::counter!("auth_key_lookups_total", "result" => "refused_from_cache")
                .increment(1);
            return Err(ApiError::Unauthorized);
        }
        let began = auth.cache.generation.load(Ordering::Acquire);
        // A security-definer function: the lookup runs before the tenant is known, and the
        // request paths' role sees no tenant's rows without one.
        let access = sqlx::query_as!(
            Access,
            r#"select user_id as "user_id!", project_id, tenant_id, session_timeout_minutes, role, key_expires_at
                 from authenticate_api_key($1, $2)"#,
            &asked.0,
            project_id,
        )
        .fetch_optional(&auth.pool)
        .await
        .map_err(ApiError::internal)?;
        metrics::counter!("auth_key_lookups_total", "result" => if access.is_some() { "found" } else { "unknown" })
            .increment(1);
        let Some(access) = access else {
            auth.cache.remember_failed(began, asked.0);
            return Err(ApiError::Unauthorized);
        };
        let not_found = || ApiError::NotFound("no such project".into());
        let role = access
            .role
            .as_deref()
            .and_then(Role::parse)
            .ok_or_else(not_found)?;
        let context = AuthContext {
            user_id: access.user_id,
            project_id: access.project_id.ok_or_else(not_found)?,
            tenant_id: access.tenant_id.ok_or_else(not_found)?,
            role,
            session_timeout: access.session_timeout_minutes.map_or(
                event_model::values::SessionTimeout::DEFAULT,
                event_model::values::SessionTimeout::from_minutes,
            ),
        };
        // Kept until the key expires, if sooner than the cache's own bound.
        let now = Instant::now();
        let until = access
            .key_expires_at
            .map(|at| {
                let left = (at - chrono::Utc::now().naive_utc())
                    .to_std()
                    .unwrap_or_default();
                now + left.min(ACCESS_TTL)
            })
            .unwrap_or(now + ACCESS_TTL);
        auth.cache.remember_granted(began, asked, &context, until);
        Ok(context)
    }
}

/// The API key of an `Authorization: Bearer <key>` header (the scheme in any case, as RFC 7235
/// has it), trimmed; `None` when there is none or it is longer than a key can be. The one reading
/// of the header: authentication and the rate limit must agree on whose request it is.
pub fn bearer_key(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty() && key.len() <= 256).then_some(key)
}
