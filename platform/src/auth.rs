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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts, RawPathParams};
use axum::http::header;
use axum::http::request::Parts;
use dashmap::DashMap;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use uuid::Uuid;

use crate::problem::ApiError;

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

/// How long a key that was looked up and not found is refused without asking the database again
/// (a key created meanwhile empties the cache, so this only bounds a missed notification).
const FAILED_KEY_TTL: Duration = Duration::from_secs(10);
/// How long a key's access is served from the cache at most. Invalidation is by notification;
/// this bounds what a notification that never came could cost.
const ACCESS_TTL: Duration = Duration::from_secs(60);
/// The channel migration 0024's triggers notify on any change to users, keys, projects or
/// members.
pub const ACCESS_CHANGED_CHANNEL: &str = "ventros_access_changed";

/// What the database said about keys lately: the access of keys in use (per key and project),
/// and keys that were not found. Bounded (`capacity` entries of each; full, it is emptied and
/// fills again with the keys in use). Served from only while its [`KeyCacheListener`] hears the
/// database's change notifications.
pub struct KeyCache {
    granted: DashMap<(String, Uuid), (AuthContext, Instant)>,
    failed: DashMap<String, Instant>,
    capacity: usize,
    /// Bumped by every invalidation: a lookup that began before one does not store its answer,
    /// which may predate the change.
    generation: AtomicU64,
    /// Whether the listener is connected and listening (nothing is served from the cache
    /// otherwise: a change could go unheard).
    listening: AtomicBool,
}

impl KeyCache {
    /// An empty cache of at most `capacity` entries per map (0: off, every request is looked up).
    /// It serves nothing until [`KeyCacheListener::start`] has it listening.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            granted: DashMap::new(),
            failed: DashMap::new(),
            capacity,
            generation: AtomicU64::new(0),
            listening: AtomicBool::new(false),
        })
    }

    fn serving(&self) -> bool {
        self.capacity > 0 && self.listening.load(Ordering::Acquire)
    }

    /// `key`: the key's hash and the project asked for.
    fn granted(&self, key: &(String, Uuid)) -> Option<AuthContext> {
        if !self.serving() {
            return None;
        }
        let entry = self.granted.get(key)?;
        let (access, expires) = entry.value();
        (Instant::now() < *expires).then(|| access.clone())
    }

    fn recently_failed(&self, hash: &str) -> bool {
        self.serving()
            && self
                .failed
                .get(hash)
                .is_some_and(|at| at.elapsed() < FAILED_KEY_TTL)
    }

    fn remember_granted(
        &self,
        began: u64,
        key: (String, Uuid),
        access: &AuthContext,
        until: Instant,
    ) {
        if !self.serving() || self.generation.load(Ordering::Acquire) != began {
            return;
        }
        if self.granted.len() >= self.capacity {
            self.granted.clear();
        }
        self.granted.insert(key, (access.clone(), until));
    }

    fn remember_failed(&self, began: u64, hash: String) {
        if !self.serving() || self.generation.load(Ordering::Acquire) != began {
            return;
        }
        if self.failed.len() >= self.capacity {
            self.failed.retain(|_, at| at.elapsed() < FAILED_KEY_TTL);
            if self.failed.len() >= self.capacity {
                self.failed.clear();
            }
        }
        self.failed.insert(hash, Instant::now());
    }

    /// Forgets everything: something behind the keys changed.
    fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.granted.clear();
        self.failed.clear();
        metrics::counter!("auth_cache_invalidations_total").increment(1);
    }

    /// Connects the change listener and turns the cache on; `None` (and the cache off) when the
    /// database cannot be reached, which [`KeyCache::listen`] then retries. Called before the
    /// service serves, so that it serves with the cache on.
    async fn start_listening(&self, pool: &PgPool) -> Option<PgListener> {
        if self.capacity == 0 {
            return None;
        }
        let connected = async {
            let mut listener = PgListener::connect_with(pool).await?;
            listener.listen(ACCESS_CHANGED_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match connected.await {
            Ok(listener) => {
                // What changed while nobody listened was not heard.
                self.invalidate();
                self.listening.store(true, Ordering::Release);
                Some(listener)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the API-key cache cannot listen for changes; keys are looked up on every request until it can");
                None
            }
        }
    }

    /// Empties the cache on each [`ACCESS_CHANGED_CHANNEL`] notification on `pool`'s server (the
    /// primary: a replica cannot listen) until `stop`. While the connection is down the cache is
    /// off and emptied; once it is back, emptied again.
    async fn listen(
        self: Arc<Self>,
        pool: PgPool,
        mut listener: Option<PgListener>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        if self.capacity == 0 {
            return;
        }
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            let Some(connected) = listener.as_mut() else {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                listener = self.start_listening(&pool).await;
                continue;
            };
            backoff = Duration::from_millis(100);
            tokio::select! {
                _ = stop.cancelled() => return,
                // `try_recv` answers `None` when the connection was lost (it would reconnect on
                // the next call; we start over instead, to turn the cache off first).
                received = connected.try_recv() => match received {
                    Ok(Some(_)) => self.invalidate(),
                    Ok(None) | Err(_) => {
                        self.listening.store(false, Ordering::Release);
                        self.invalidate();
                        listener = None;
                    }
                },
            }
        }
    }
}

/// A [`KeyCache`] with the connection that keeps it honest, from before the service serves
/// until it stops.
pub struct KeyCacheListener {
    cache: Arc<KeyCache>,
    pool: PgPool,
    listener: Option<PgListener>,
}

impl KeyCacheListener {
    /// Starts listening on `pool`'s server (the primary's: a replica cannot listen).
    pub async fn start(cache: Arc<KeyCache>, pool: PgPool) -> Self {
        let listener = cache.start_listening(&pool).await;
        Self {
            cache,
            pool,
            listener,
        }
    }

    /// Keeps the cache honest until `stop`: empties it on every [`ACCESS_CHANGED_CHANNEL`]
    /// notification; while the connection is down, turns it off (emptied) and reconnects, backing
    /// off up to 5 s.
    pub async fn run(self, stop: tokio_util::sync::CancellationToken) {
        self.cache.listen(self.pool, self.listener, stop).await
    }
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

#[derive(sqlx::FromRow)]
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
        let access: Option<Access> = sqlx::query_as(
            "select user_id, project_id, tenant_id, session_timeout_minutes, role, key_expires_at \
               from authenticate_api_key($1, $2)",
        )
        .bind(&asked.0)
        .bind(project_id)
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
