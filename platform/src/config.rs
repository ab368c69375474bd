//! Settings shared by every binary, read from the environment (or flags), each with a default that
//! works on a development machine of this project.

use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// PostgreSQL URL. The database is created if it does not exist, then migrated.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/ventros"
    )]
    pub database_url: String,
    /// Maximum connections in the pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
    /// NATS server URL (JetStream must be enabled).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// The JetStream stream carrying the events.
    #[arg(long, env = "NATS_STREAM", default_value = "VENTROS_EVENTS")]
    pub nats_stream: String,
    /// Subject prefix: events go to `<prefix>.<partition>.<aggregate_type>.<event_type>`.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "ventros.events")]
    pub nats_subject_prefix: String,
    /// Stream replicas (3 on a NATS cluster).
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = 1)]
    pub nats_stream_replicas: usize,
    /// Number of partitions (one durable consumer each); a contact and its sessions share one.
    #[arg(long, env = "EVENT_PARTITIONS", default_value_t = 8)]
    pub event_partitions: u32,
}

impl Settings {
    pub fn stream(&self) -> crate::nats::StreamSettings {
        crate::nats::StreamSettings {
            name: self.nats_stream.clone(),
            subject_prefix: self.nats_subject_prefix.clone(),
            partitions: self.event_partitions,
            replicas: self.nats_stream_replicas,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}
