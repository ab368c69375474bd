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

use axum::extract::{FromRef, FromRequestParts, MatchedPath, RawPathParams};
use axum::http::header;
use axum::http::request::Parts;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::problem::ApiError;

pub mod access;
mod cache;
pub mod permissions;

use cache::ACCESS_TTL;
pub use cache::{KeyCache, KeyCacheListener, ACCESS_CHANGED_CHANNEL};
pub use permissions::Permission;

/// The caller's role in the project of the request: the user's role there (a `project_members`
/// row, or the project's creator as its owner), capped by the key's own role when the key was
/// made for one project and role. Ordered weakest first: a role holds every permission of the
/// roles below it ([`permissions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads only.
    Viewer,
    /// Works the conversations: records messages, starts and ends sessions, sets summaries,
    /// tags, creates and edits contacts.
    Agent,
    /// Also assigns and transfers agents, sets outcomes, ends any session.
    Supervisor,
    /// Also deletes and forgets contacts, manages webhooks, keys and members.
    Admin,
    /// Also deletes the project and gives or takes the admin and owner roles.
    Owner,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 5] = [
        Self::Viewer,
        Self::Agent,
        Self::Supervisor,
        Self::Admin,
        Self::Owner,
    ];

    /// The role a stored name (`project_members.role`, `user_api_keys.role`) stands for.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == raw)
    }

    /// Its stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Agent => "agent",
            Self::Supervisor => "supervisor",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling, on which project and tenant. Resolved once per request.
#[derive(Debug, Clone)]
pub struct AuthContext {
    /// The user the API key belongs to (`users.id`).
    pub user_id: Uuid,
    /// The API key the request came with (`user_api_keys.id`): who acted, in the audit trail.
    pub key_id: Uuid,
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
    /// Refuses (403, naming it) a caller whose role lacks the permission.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.role.grants(permission) {
            Ok(())
        } else {
            Err(ApiError::MissingPermission {
                permission: permission.as_str(),
                role: self.role.as_str(),
            })
        }
    }

    /// Whether the caller holds the permission.
    pub fn holds(&self, permission: Permission) -> bool {
        self.role.grants(permission)
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
    /// The primary's pool when `pool` is a replica's: a key the replica does not hold yet (made
    /// a moment ago, replayed a moment later) is looked up there before it is refused, and a
    /// key's use is recorded there (a replica cannot write).
    pub primary: Option<PgPool>,
    /// The instance's cache of answers, emptied by its [`KeyCacheListener`].
    pub cache: Arc<KeyCache>,
}

struct Access {
    user_id: Uuid,
    project_id: Option<Uuid>,
    tenant_id: Option<String>,
    /// The user's role in the project (none: not a member).
    role: Option<String>,
    session_timeout_minutes: Option<i64>,
    /// When the key expires (none: never).
    key_expires_at: Option<chrono::NaiveDateTime>,
    key_id: Uuid,
    /// The most the key may do (none: its user's role).
    key_role: Option<String>,
    key_last_used: Option<chrono::NaiveDateTime>,
}

/// How often a key's `last_used` is recorded at most.
const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl<S> FromRequestParts<S> for AuthContext
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    /// Resolves the caller (401 for the key, 404 for a project it cannot see), then checks the
    /// route's permission (403): every authenticated route takes this extractor, so every route
    /// is checked against [`permissions::ROUTES`].
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Authenticator::from_ref(state);
        let context = resolve(parts, state, &auth).await?;
        auth.touch(context.key_id);
        let path = parts
            .extensions
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        match path.and_then(|path| permissions::required(&parts.method, path)) {
            Some(permission) => context.require(permission)?,
            None => {
                tracing::error!(method = %parts.method, path = ?path, "a route without a permission was asked for");
                return Err(ApiError::Forbidden(
                    "this route declares no permission, so no one may use it".into(),
                ));
            }
        }
        Ok(context)
    }
}

impl Authenticator {
    /// Records the key's use (`user_api_keys.last_used`), at most once a minute per key and
    /// instance (and the database keeps it to once a minute across instances), off the request.
    fn touch(&self, key_id: Uuid) {
        if !self.cache.due_for_touch(key_id, TOUCH_EVERY) {
            return;
        }
        let pool = self.primary.as_ref().unwrap_or(&self.pool).clone();
        tokio::spawn(async move {
            if let Err(e) = sqlx::query!("select touch_api_key($1)", key_id)
                .execute(&pool)
                .await
            {
                tracing::debug!(error = %e, "recording an API key's use failed");
            }
        });
    }
}

/// The key's access to the project, if the key is known: `authenticate_api_key`, a
/// security-definer function (the lookup runs before the tenant is known, and the request
/// paths' role sees no tenant's rows without one).
async fn lookup(
    pool: &PgPool,
    (hash, project_id): &(String, Uuid),
) -> Result<Option<Access>, ApiError> {
    sqlx::query_as!(
        Access,
        r#"select user_id as "user_id!", project_id, tenant_id, session_timeout_minutes, role,
                  key_expires_at, key_id as "key_id!", key_role, key_last_used
             from authenticate_api_key($1, $2)"#,
        hash,
        project_id,
    )
    .fetch_optional(pool)
    .await
    .map_err(ApiError::internal)
}

/// The caller of the request: from the cache, or from the database (and then remembered).
async fn resolve<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    auth: &Authenticator,
) -> Result<AuthContext, ApiError> {
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
    // The key's hash and the project: what the cache is keyed by.
    let asked = (hash_api_key(&key), project_id);
    if let Some(access) = auth.cache.granted(&asked) {
        metrics::counter!("auth_key_lookups_total", "result" => "granted_from_cache").increment(1);
        return Ok(access);
    }
    if auth.cache.recently_failed(&asked.0) {
        metrics::counter!("auth_key_lookups_total", "result" => "refused_from_cache").increment(1);
        return Err(ApiError::Unauthorized);
    }
    let began = auth.cache.generation.load(Ordering::Acquire);
    let mut access = lookup(&auth.pool, &asked).await?;
    if let (None, Some(primary)) = (&access, &auth.primary) {
        access = lookup(primary, &asked).await?;
    }
    metrics::counter!("auth_key_lookups_total", "result" => if access.is_some() { "found" } else { "unknown" })
        .increment(1);
    let Some(access) = access else {
        auth.cache.remember_failed(began, asked.0);
        return Err(ApiError::Unauthorized);
    };
    if let Some(used) = access.key_last_used {
        auth.cache.touched_at(access.key_id, used.and_utc());
    }
    let not_found = || ApiError::NotFound("no such project".into());
    let member = access
        .role
        .as_deref()
        .and_then(Role::parse)
        .ok_or_else(not_found)?;
    // A key made for a role does at most what that role may, whatever its user may.
    let role = match access.key_role.as_deref().and_then(Role::parse) {
        Some(cap) => member.min(cap),
        None => member,
    };
    let context = AuthContext {
        user_id: access.user_id,
        key_id: access.key_id,
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

/// The API key of an `Authorization: Bearer <key>` header (the scheme in any case, as RFC 7235
/// has it), trimmed; `None` when there is none or it is longer than a key can be. The one reading
/// of the header: authentication and the rate limit must agree on whose request it is.
pub fn bearer_key(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty() && key.len() <= 256).then_some(key)
}
