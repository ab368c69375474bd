//! How a [`crate::TestSystem`] runs its services.

use std::sync::Arc;
use std::time::Duration;

use crate::BrokerSecurity;

#[derive(Debug, Clone)]
pub struct Options {
    pub snapshot_every: i64,
    pub partitions: u32,
    pub sweep_interval_ms: u64,
    pub relay_poll_ms: u64,
    /// A NATS URL other than the shared one (e.g. a private [`NatsServer`]).
    pub nats_url: Option<String>,
    /// The logins and CA of the broker at `nats_url` when it checks them
    /// ([`NatsServer::start_secured`]): the services then log in as `deploy/` has them do.
    pub nats_security: Option<Arc<BrokerSecurity>>,
    pub ack_wait_secs: u64,
    pub stall_secs: u64,
    /// `PROJECTION_COMBINE_BATCHES`.
    pub combine_batches: bool,
    /// `AGGREGATE_CACHE_CAPACITY` (0: every command loads from the store).
    pub aggregate_cache_capacity: usize,
    /// `DATABASE_APP_ROLE`, the request paths' role and login. `ventros_projector` bypasses
    /// row-level security: the routes' own tenant filters are then all that keeps tenants apart.
    pub app_role: &'static str,
    /// `OUTBOX_RETENTION` and `IDEMPOTENCY_TTL`.
    pub retention: platform::retention::RetentionPeriods,
    /// `RETENTION_INTERVAL` of both services.
    pub retention_interval: Duration,
    /// `RATE_LIMIT_PER_SECOND` and `RATE_LIMIT_BURST` ((0, _): no limit, so that load tests and
    /// the benchmark measure the system, not the limiter).
    pub rate_limit: (u32, u32),
    /// The HTTP server's timeouts and caps (`HTTP_*`), the same for both services.
    pub http: platform::HttpLimits,
    /// `DATABASE_MAX_CONNECTIONS` of both services.
    pub database_max_connections: u32,
    /// `COMMAND_WRITERS` and `COMMAND_GROUP_MAX` (group commit): the service's defaults, or the
    /// environment's values when set (so that a benchmark run can compare, e.g. with
    /// `COMMAND_GROUP_MAX=1`).
    pub grouping: command_service::writer::Grouping,
    /// Each service on a tokio runtime of its own with this many worker threads, as each runs
    /// in its own process in production (the benchmark); `None`: on the test's runtime.
    pub service_threads: Option<usize>,
    /// `RELAY_ENABLED` of command-service (off: outbox rows stay until an instance with it on
    /// publishes them, so a test can read them first).
    pub relay_enabled: bool,
    /// `WEBHOOK_ALLOW_PRIVATE_TARGETS` of both services (on: the tests' receivers listen on
    /// loopback).
    pub webhook_allow_private: bool,
    /// `WEBHOOK_BACKOFF_BASE` of projection-service (short: a test sees the retries).
    pub webhook_backoff_base: Duration,
    /// `WEBHOOK_MAX_BACKOFF` of projection-service.
    pub webhook_max_backoff: Duration,
    /// `WEBHOOK_MAX_ATTEMPTS` of projection-service.
    pub webhook_max_attempts: i32,
    /// `WEBHOOK_TIMEOUT` of projection-service.
    pub webhook_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            snapshot_every: 100,
            partitions: 4,
            sweep_interval_ms: 60_000,
            relay_poll_ms: 200,
            nats_url: None,
            nats_security: None,
            ack_wait_secs: 5,
            stall_secs: 60,
            aggregate_cache_capacity: 10_000,
            app_role: "ventros_app",
            retention: platform::retention::RetentionPeriods::default(),
            retention_interval: Duration::from_secs(60),
            rate_limit: (0, 0),
            http: platform::HttpLimits::default(),
            database_max_connections: 20,
            grouping: grouping_from_env(),
            service_threads: None,
            relay_enabled: true,
            webhook_allow_private: true,
            webhook_backoff_base: Duration::from_millis(200),
            webhook_max_backoff: Duration::from_secs(2),
            webhook_max_attempts: 10,
            webhook_timeout: Duration::from_secs(2),
            // As the service runs unless told otherwise; the benchmark compares both.
            combine_batches: std::env::var("PROJECTION_COMBINE_BATCHES")
                .map_or(true, |v| v != "false"),
        }
    }
}

fn grouping_from_env() -> command_service::writer::Grouping {
    let default = command_service::writer::Grouping::DEFAULT;
    let read = |name: &str, or: usize| {
        std::env::var(name)
            .ok()
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
            })
            .unwrap_or(or)
    };
    command_service::writer::Grouping {
        writers: read("COMMAND_WRITERS", default.writers),
        max_group: read("COMMAND_GROUP_MAX", default.max_group),
    }
}
