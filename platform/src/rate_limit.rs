//! Per-key rate limits: a token bucket per API key, checked before anything else is done for a
//! request, so a key over its limit costs no database round trip. A bucket holds up to `burst`
//! requests and refills at `per_second`; a request that finds it empty is answered 429 with
//! `Retry-After` (problem+json). Requests without a key pass on to authentication (401).
//!
//! Buckets are keyed by a digest of the key, never the key itself, and are held in memory, one
//! set per process: with several instances behind a load balancer the limit is per instance.
//! The map is bounded: when it is full, buckets that have refilled (they carry no state) are
//! dropped, then, if need be, an arbitrary tenth.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use sha2::{Digest, Sha256};

use crate::problem::ApiError;

/// The most buckets kept (a few MiB).
const MAX_BUCKETS: usize = 100_000;

/// The token buckets of the API keys this process has seen (see the module docs).
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: DashMap<[u8; 16], Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32) -> Option<Arc<Self>> {
        (per_second > 0).then(|| {
            Arc::new(Self {
                per_second: f64::from(per_second),
                burst: f64::from(burst.max(1)),
                buckets: DashMap::new(),
            })
        })
    }

    /// Takes a token for `key`; when there is none, how long until there is one.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        let digest: [u8; 16] = Sha256::digest(key.as_bytes())[..16]
            .try_into()
            .expect("16 bytes of a SHA-256");
        let now = Instant::now();
        if self.buckets.len() >= MAX_BUCKETS && !self.buckets.contains_key(&digest) {
            self.shrink(now);
        }
        let mut bucket = self.buckets.entry(digest).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refilled = (bucket.tokens
            + now.duration_since(bucket.at).as_secs_f64() * self.per_second)
            .min(self.burst);
        bucket.at = now;
        if refilled >= 1.0 {
            bucket.tokens = refilled - 1.0;
            Ok(())
        } else {
            bucket.tokens = refilled;
            Err(Duration::from_secs_f64((1.0 - refilled) / self.per_second))
        }
    }

    fn shrink(&self, now: Instant) {
        let (per_second, burst) = (self.per_second, self.burst);
        self.buckets
            .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_second < burst);
        if self.buckets.len() >= MAX_BUCKETS {
            let mut seen = 0usize;
            self.buckets.retain(|_, _| {
                seen += 1;
                !seen.is_multiple_of(10)
            });
        }
    }
}

/// The middleware: 429 for a key over its limit, before the request reaches its handler.
pub async fn limit(
    State(limiter): State<Arc<RateLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(key) = crate::auth::bearer_key(request.headers()) {
        if let Err(wait) = limiter.take(key) {
            metrics::counter!("http_rate_limited_total").increment(1);
            return ApiError::TooManyRequests {
                retry_after_secs: wait.as_secs().max(1),
            }
            .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_at_its_burst_and_refills_at_its_rate() {
        let limiter = RateLimiter::new(1_000, 3).unwrap();
        for _ in 0..3 {
            assert!(limiter.take("vk_a").is_ok());
        }
        let wait = limiter.take("vk_a").unwrap_err();
        assert!(wait <= Duration::from_millis(1), "{wait:?}");
        assert!(limiter.take("vk_b").is_ok(), "each key has its own bucket");
        std::thread::sleep(Duration::from_millis(5));
        assert!(limiter.take("vk_a").is_ok(), "refilled");
        assert!(RateLimiter::new(0, 10).is_none(), "0: no limit");
    }
}
