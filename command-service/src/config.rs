//! command-service settings (environment variables or flags; every one has a working default).

use std::time::Duration;

use platform::Settings;

#[derive(Debug, Clone, clap::Args)]
pub struct CommandConfig {
    #[command(flatten)]
    pub platform: Settings,
    /// Address the HTTP API listens on (port 0 picks a free one).
    #[arg(long, env = "COMMAND_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Write a snapshot of an aggregate every this many events.
    #[arg(long, env = "SNAPSHOT_EVERY", default_value_t = 100)]
    pub snapshot_every: i64,
    /// Aggregates of each type kept in memory as last committed, so a command reads only newer
    /// events (0 turns the cache off; a stale entry only costs the rows read after it).
    #[arg(long, env = "AGGREGATE_CACHE_CAPACITY", default_value_t = 10_000)]
    pub aggregate_cache_capacity: usize,
    /// How commands' writes are grouped into transactions (group commit).
    #[command(flatten)]
    pub grouping: crate::writer::Grouping,
    /// How many times a command is decided again after losing a concurrency race, before 409.
    #[arg(long, env = "COMMAND_MAX_ATTEMPTS", default_value_t = 10)]
    pub max_attempts: u32,
    /// Rows the relay publishes per batch.
    #[arg(long, env = "RELAY_BATCH_SIZE", default_value_t = 500)]
    pub relay_batch_size: i64,
    /// The relay's fallback poll, in milliseconds (it also wakes on LISTEN/NOTIFY).
    #[arg(long, env = "RELAY_POLL_MS", default_value_t = 1000)]
    pub relay_poll_ms: u64,
    /// Run the outbox relay (the instances elect one relay among those that do). Off on every
    /// instance pauses publishing while commands are still accepted (their events wait in the
    /// outbox): a step of raising `EVENT_PARTITIONS` on a live system (README, "Scaling out").
    #[arg(long, env = "RELAY_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub relay_enabled: bool,
    /// How often the timeout sweeper looks for idle sessions, in milliseconds.
    #[arg(long, env = "SWEEP_INTERVAL_MS", default_value_t = 15_000)]
    pub sweep_interval_ms: u64,
    /// How long published outbox rows and idempotency keys are kept (`retention`).
    #[command(flatten)]
    pub retention: platform::retention::RetentionPeriods,
    /// How often the instance elected to sweep deletes what is past its retention, e.g. `60s`.
    #[arg(long, env = "RETENTION_INTERVAL", default_value = "60s",
          value_parser = platform::retention::parse_duration)]
    pub retention_interval: Duration,
    /// Let webhook subscriptions name loopback, private, link-local and metadata addresses
    /// (projection-service's dispatcher reads the same setting).
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE_TARGETS", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private_targets: bool,
}

impl Default for CommandConfig {
    fn default() -> Self {
        platform::defaults::defaults()
    }
}

impl CommandConfig {
    pub fn relay_poll(&self) -> Duration {
        Duration::from_millis(self.relay_poll_ms)
    }

    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms)
    }
}
