//! The API-key cache of an instance and the listener that keeps it true: a key in use costs no
//! database round trip, and a change to users, keys, projects or members empties it at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use uuid::Uuid;

use super::AuthContext;
/// How long a key that was looked up and not found is refused without asking the database again
/// (a key created meanwhile empties the cache, so this only bounds a missed notification).
const FAILED_KEY_TTL: Duration = Duration::from_secs(10);
/// How long a key's access is served from the cache at most. Invalidation is by notification;
/// this bounds what a notification that never came could cost.
pub(super) const ACCESS_TTL: Duration = Duration::from_secs(60);
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
    /// When each key's use was last recorded (by this instance, or as the database said).
    touched: DashMap<Uuid, Instant>,
    capacity: usize,
    /// Bumped by every invalidation: a lookup that began before one does not store its answer,
    /// which may predate the change.
    pub(super) generation: AtomicU64,
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
            touched: DashMap::new(),
            capacity,
            generation: AtomicU64::new(0),
            listening: AtomicBool::new(false),
        })
    }

    pub(super) fn serving(&self) -> bool {
        self.capacity > 0 && self.listening.load(Ordering::Acquire)
    }

    /// `key`: the key's hash and the project asked for.
    pub(super) fn granted(&self, key: &(String, Uuid)) -> Option<AuthContext> {
        if !self.serving() {
            return None;
        }
        let entry = self.granted.get(key)?;
        let (access, expires) = entry.value();
        (Instant::now() < *expires).then(|| access.clone())
    }

    pub(super) fn recently_failed(&self, hash: &str) -> bool {
        self.serving()
            && self
                .failed
                .get(hash)
                .is_some_and(|at| at.elapsed() < FAILED_KEY_TTL)
    }

    pub(super) fn remember_granted(
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

    pub(super) fn remember_failed(&self, began: u64, hash: String) {
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

    /// Whether the key's use is to be recorded now (not within `every`); if so, notes that it is.
    pub(super) fn due_for_touch(&self, key_id: Uuid, every: Duration) -> bool {
        let now = Instant::now();
        if let Some(at) = self.touched.get(&key_id) {
            if now.duration_since(*at) < every {
                return false;
            }
        }
        if self.touched.len() >= self.capacity.max(1) {
            self.touched.retain(|_, at| now.duration_since(*at) < every);
        }
        self.touched.insert(key_id, now);
        true
    }

    /// Notes that the database recorded the key's use at `at`.
    pub(super) fn touched_at(&self, key_id: Uuid, at: chrono::DateTime<chrono::Utc>) {
        let ago = (chrono::Utc::now() - at).to_std().unwrap_or_default();
        if let Some(instant) = Instant::now().checked_sub(ago) {
            self.touched.insert(key_id, instant);
        }
    }

    /// Forgets everything: something behind the keys changed.
    pub(super) fn invalidate(&self) {
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
