//! projection-service settings (environment variables or flags; every one has a working default).

use std::time::Duration;

use platform::Settings;

#[derive(Debug, Clone, clap::Args)]
pub struct ProjectionConfig {
    #[command(flatten)]
    pub platform: Settings,
    /// Where the query endpoints read (a PostgreSQL read replica); unset: `DATABASE_URL`.
    /// Read-your-writes still holds: a `min_version` read waits until the replica has the
    /// version.
    #[arg(long, env = "QUERY_DATABASE_URL", hide_env_values = true)]
    pub query_database_url: Option<String>,
    /// Address the query API listens on (port 0 picks a free one).
    #[arg(long, env = "QUERY_ADDR", default_value = "127.0.0.1:8081")]
    pub addr: String,
    /// Most events a worker applies in one transaction.
    #[arg(long, env = "PROJECTION_BATCH_SIZE", default_value_t = 256)]
    pub batch_size: usize,
    /// Apply the live batches of all the partitions this instance runs together, one read and
    /// one write for those that arrive while the last ones are written (off: each partition's
    /// worker on its own).
    #[arg(long, env = "PROJECTION_COMBINE_BATCHES", default_value_t = true, action = clap::ArgAction::Set)]
    pub combine_batches: bool,
    /// How long JetStream waits for an ack before redelivering, in seconds. It bounds how long
    /// the events a dead instance had received wait before another takes them; a worker whose
    /// batch takes longer keeps its messages with progress acks.
    #[arg(long, env = "PROJECTION_ACK_WAIT_SECS", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ack_wait_secs: u64,
    /// A consumer with events waiting that has not advanced for this long is reported stalled
    /// (and `/readyz` answers 503), in seconds.
    #[arg(long, env = "PROJECTION_STALL_SECS", default_value_t = 60)]
    pub stall_secs: u64,
    /// This instance's name, as the console shows who owns which partition; unset: the host's
    /// name and the process id.
    #[arg(long, env = "INSTANCE_NAME")]
    pub instance_name: Option<String>,
    /// Run the JetStream workers (off: serve queries only, e.g. on a read replica).
    #[arg(long, env = "PROJECTION_WORKERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub workers: bool,
    /// How often the instance elected to sweep deletes `processed_events` rows older than the
    /// stream's max age, e.g. `60s`.
    #[arg(long, env = "RETENTION_INTERVAL", default_value = "60s",
          value_parser = platform::retention::parse_duration)]
    pub retention_interval: Duration,
    /// Run the webhook dispatcher (the intake on one instance at a time, the sending on each).
    #[arg(long, env = "WEBHOOKS", default_value_t = true, action = clap::ArgAction::Set)]
    pub webhooks: bool,
    /// Attempts of a webhook delivery before it is marked failed.
    #[arg(long, env = "WEBHOOK_MAX_ATTEMPTS", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(1..=50))]
    pub webhook_max_attempts: i32,
    /// The wait after a delivery's first failed attempt; each next one is three times longer
    /// (with jitter), at most `WEBHOOK_MAX_BACKOFF` (10 attempts take about a day).
    #[arg(long, env = "WEBHOOK_BACKOFF_BASE", default_value = "10s",
          value_parser = platform::retention::parse_duration)]
    pub webhook_backoff_base: Duration,
    /// The longest wait between a delivery's attempts.
    #[arg(long, env = "WEBHOOK_MAX_BACKOFF", default_value = "6h",
          value_parser = platform::retention::parse_duration)]
    pub webhook_max_backoff: Duration,
    /// How long an attempt may take, the answer included.
    #[arg(long, env = "WEBHOOK_TIMEOUT", default_value = "10s",
          value_parser = platform::retention::parse_duration)]
    pub webhook_timeout: Duration,
    /// Let webhooks reach loopback, private, link-local and metadata addresses (command-service
    /// reads the same setting when a subscription is made).
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE_TARGETS", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private_targets: bool,
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        platform::defaults::defaults()
    }
}

impl ProjectionConfig {
    pub fn ack_wait(&self) -> Duration {
        Duration::from_secs(self.ack_wait_secs)
    }

    /// `INSTANCE_NAME`, or the host's name (a pod's, on Kubernetes) and the process id.
    pub fn instance(&self) -> String {
        match self.instance_name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => {
                let host = std::env::var("HOSTNAME")
                    .ok()
                    .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "projection-service".to_owned());
                format!("{host}-{}", std::process::id())
            }
        }
    }
}
