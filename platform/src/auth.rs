//! API-key authentication and project access.
//!
//! `Authorization: Bearer <key>`: the key's SHA-256 is looked up in `user_api_keys` (active, not
//! expired, not deleted, its user active and not deleted). Access to the project in the path is
//! its owner's, or a `project_members` row's (`viewer` reads only). A project the caller cannot
//! see is 404, never 403, so ids of other tenants leak nothing.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts, RawPathParams};
use axum::http::header;
use axum::http::request::Parts;
use dashmap::DashMap;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::problem::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Admin,
    Supervisor,
    Agent,
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

    pub fn can_write(self) -> bool {
        !matches!(self, Self::Viewer)
    }
}

/// Who is calling, on which project and tenant. Resolved once per request.
#[derive(Debug, Clone)]
pub struct AuthContext {
    pub user_id: Uuid,
    pub project_id: Uuid,
    pub tenant_id: String,
    pub role: Role,
    pub session_timeout_minutes: i64,
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

pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random API key (`vk_` + 40 alphanumerics, about 238 bits).
pub fn generate_api_key() -> String {
    format!("vk_{}", Alphanumeric.sample_string(&mut rand::rng(), 40))
}

/// How long a key that was looked up and not found is refused without asking the database again.
/// Short: a key created just after a client tried it works within this long.
const FAILED_KEY_TTL: Duration = Duration::from_secs(10);
/// The most failed keys remembered.
const FAILED_KEYS_MAX: usize = 10_000;

/// Keys (by their hash) recently looked up and not found: a flood of requests with made-up keys
/// costs one database round trip per key per `FAILED_KEY_TTL`, not one per request. Only
/// failures are remembered: a revoked key is refused at its next request, never served from here.
static FAILED_KEYS: LazyLock<FailedKeys> = LazyLock::new(FailedKeys::default);

#[derive(Default)]
struct FailedKeys(DashMap<String, Instant>);

impl FailedKeys {
    fn recently_failed(&self, hash: &str) -> bool {
        self.0
            .get(hash)
            .is_some_and(|at| at.elapsed() < FAILED_KEY_TTL)
    }

    fn failed(&self, hash: String) {
        if self.0.len() >= FAILED_KEYS_MAX {
            self.0.retain(|_, at| at.elapsed() < FAILED_KEY_TTL);
            if self.0.len() >= FAILED_KEYS_MAX {
                self.0.clear();
            }
        }
        self.0.insert(hash, Instant::now());
    }
}

#[derive(sqlx::FromRow)]
struct Access {
    user_id: Uuid,
    project_id: Option<Uuid>,
    tenant_id: Option<String>,
    role: Option<String>,
    session_timeout_minutes: Option<i64>,
}

impl<S> FromRequestParts<S> for AuthContext
where
    PgPool: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= 256)
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
        let pool = PgPool::from_ref(state);
        let hash = hash_api_key(&key);
        if FAILED_KEYS.recently_failed(&hash) {
            metrics::counter!("auth_key_lookups_total", "result" => "refused_from_cache")
                .increment(1);
            return Err(ApiError::Unauthorized);
        }
        // A security-definer function: the lookup runs before the tenant is known, and the
        // request paths' role sees no tenant's rows without one.
        let access: Option<Access> = sqlx::query_as(
            "select user_id, project_id, tenant_id, session_timeout_minutes, role from authenticate_api_key($1, $2)",
        )
        .bind(&hash)
        .bind(project_id)
        .fetch_optional(&pool)
        .await
        .map_err(ApiError::internal)?;
        metrics::counter!("auth_key_lookups_total", "result" => if access.is_some() { "found" } else { "unknown" })
            .increment(1);
        let Some(access) = access else {
            FAILED_KEYS.failed(hash);
            return Err(ApiError::Unauthorized);
        };
        let not_found = || ApiError::NotFound("no such project".into());
        let role = access
            .role
            .as_deref()
            .and_then(Role::parse)
            .ok_or_else(not_found)?;
        Ok(AuthContext {
            user_id: access.user_id,
            project_id: access.project_id.ok_or_else(not_found)?,
            tenant_id: access.tenant_id.ok_or_else(not_found)?,
            role,
            session_timeout_minutes: access.session_timeout_minutes.unwrap_or(30),
        })
    }
}
