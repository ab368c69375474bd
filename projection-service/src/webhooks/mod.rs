//! The webhook dispatcher: takes the matching events in from the store ([`intake`]) and POSTs
//! each delivery, signed, retrying with backoff until it is delivered or out of attempts
//! ([`send`]).
//!
//! Both halves work on `webhook_deliveries` (migration 0034) over the cross-tenant pool:
//! - the intake is one instance at a time (an advisory lock held on its own connection): it walks
//!   the store in commit order from its checkpoint and writes each batch's deliveries and the
//!   new checkpoint in one transaction, so an event is taken in once and in order, whatever
//!   crashes, and independently of the broker and the projections;
//! - every instance sends: it claims due deliveries in batches (`for update skip locked`, leased
//!   for the attempt's time), a delivery only when no earlier one of its subscription and contact
//!   is pending, so one contact's deliveries reach one subscription in order. A slow endpoint
//!   holds at most [`PER_SUBSCRIPTION`] attempts at once, and the others go on beside it.

use std::sync::Arc;
use std::time::Duration;

use platform::personal::DataKeys;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

mod http;
mod intake;
mod send;

/// The advisory lock of the webhook intake ("whintake" in ASCII); the other keys in use are
/// listed at `command_service::retention::RETENTION_LOCK`.
pub const INTAKE_LOCK: i64 = 0x7768_696e_7461_6b65;

/// The most attempts in flight at once, per instance.
pub const IN_FLIGHT: usize = 256;

/// The most attempts one subscription has in flight at once, per instance.
pub const PER_SUBSCRIPTION: usize = 8;

/// The `# HELP` text of the families recorded here.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "webhook_deliveries_total",
        "Webhook delivery attempts, by subscription and outcome (delivered, retrying, failed)"
    );
    describe_counter!(
        "webhook_deliveries_taken_in_total",
        "Deliveries the intake made from the store's events"
    );
    describe_gauge!(
        "webhook_pending",
        "Deliveries not yet delivered nor failed, by subscription (reported by the intake's leader)"
    );
    describe_gauge!(
        "webhook_oldest_pending_seconds",
        "Age of the oldest delivery not yet delivered nor failed, by subscription"
    );
}

/// How the dispatcher delivers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Attempts before a delivery is marked failed.
    pub max_attempts: i32,
    /// The wait after the first failed attempt; each next wait is three times longer (with
    /// jitter), at most [`Settings::max_backoff`].
    pub backoff_base: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// How long an attempt may take, connection and answer included.
    pub timeout: Duration,
    /// Whether loopback, private, link-local and metadata addresses may be reached.
    pub allow_private: bool,
}

impl Settings {
    /// The wait before attempt `attempts + 1`, after `attempts` failed ones: `base × 3^(n-1)`,
    /// at most `max_backoff`, with up to a fifth of it added at random so that the deliveries
    /// that failed together do not come back together.
    pub fn backoff(&self, attempts: i32) -> Duration {
        let exponent = attempts.saturating_sub(1).clamp(0, 20) as u32;
        let wait = self
            .backoff_base
            .saturating_mul(3u32.saturating_pow(exponent))
            .min(self.max_backoff);
        let jitter = rand::random_range(0.0..0.2);
        wait + wait.mul_f64(jitter)
    }
}

/// The dispatcher of one instance.
pub struct Dispatcher {
    pub pool: PgPool,
    pub keys: DataKeys,
    pub settings: Settings,
}

impl Dispatcher {
    /// Runs the intake (when elected) and the sender until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let client = match http::client(&self.settings) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "the webhook client cannot be built; no webhook is sent");
                return;
            }
        };
        let shared = Arc::new(self);
        tokio::join!(
            intake::run(shared.pool.clone(), stop.clone()),
            send::run(shared.clone(), client, stop),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waits_grow_threefold_to_their_bound() {
        let settings = Settings {
            max_attempts: 10,
            backoff_base: Duration::from_secs(10),
            max_backoff: Duration::from_secs(6 * 3600),
            timeout: Duration::from_secs(10),
            allow_private: false,
        };
        let within = |attempts: i32, secs: u64| {
            let wait = settings.backoff(attempts);
            let low = Duration::from_secs(secs);
            assert!(
                wait >= low && wait <= low.mul_f64(1.2),
                "after {attempts}: {wait:?}"
            );
        };
        within(1, 10);
        within(2, 30);
        within(3, 90);
        within(8, 6 * 3600);
        within(9, 6 * 3600);
        // About a day over ten attempts.
        let total: Duration = (1..10).map(|n| settings.backoff(n)).sum();
        assert!(
            total > Duration::from_secs(12 * 3600) && total < Duration::from_secs(36 * 3600),
            "{total:?}"
        );
    }
}
