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
    /// The role the request paths run as (`set role` on each connection): bound by row-level
    /// security, with the tenant set per transaction. Empty: stay the connecting user.
    #[arg(long, env = "DATABASE_APP_ROLE", default_value = "ventros_app")]
    pub database_app_role: String,
    /// The role of the work that spans tenants (projection workers, outbox relay, sweeper's
    /// scan): `bypassrls`. Empty: stay the connecting user.
    #[arg(
        long,
        env = "DATABASE_SYSTEM_ROLE",
        default_value = "ventros_projector"
    )]
    pub database_system_role: String,
    /// NATS server URL (JetStream must be enabled).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// The NATS login and TLS (`NATS_USER`/`NATS_PASSWORD`, `NATS_TOKEN`,
    /// `NATS_NKEY_SEED_FILE`, `NATS_CREDS`, `NATS_TLS_CA`, `NATS_TLS_CERT`/`NATS_TLS_KEY`,
    /// `NATS_TLS_REQUIRED`).
    #[command(flatten)]
    pub nats_auth: crate::nats::NatsAuth,
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
    /// The key-encryption key that wraps every contact's data key at rest: 32 bytes in base64
    /// (`replay-tool kek generate` makes one). Unset, with `DATA_KEK_FILE` unset too: data keys
    /// are stored unwrapped, for development only (logged at start, shown on `/readyz`).
    #[arg(long, env = "DATA_KEK", hide_env_values = true)]
    pub data_kek: Option<String>,
    /// A file holding the KEK (base64), e.g. a mounted secret; instead of `DATA_KEK`.
    #[arg(long, env = "DATA_KEK_FILE")]
    pub data_kek_file: Option<std::path::PathBuf>,
    /// Earlier KEKs (base64, comma-separated) still accepted for unwrapping while
    /// `replay-tool kek rotate` moves their keys under the current one.
    #[arg(
        long,
        env = "DATA_KEK_PREVIOUS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub data_kek_previous: Vec<String>,
    /// The longest a request path's statement may run (`statement_timeout` of its connections),
    /// in milliseconds: a query that would read far more than a page is cancelled (503) instead
    /// of holding a connection. 0: no limit.
    #[arg(long, env = "REQUEST_STATEMENT_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_statement_timeout_ms: u64,
    /// Requests per second each API key may make, per instance (a token bucket); over it, 429
    /// with `Retry-After`. 0: no limit.
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value_t = 1_000)]
    pub rate_limit_per_second: u32,
    /// How many requests a key may make at once before its rate applies (the bucket's size).
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 2_000)]
    pub rate_limit_burst: u32,
}

impl Settings {
    /// The per-key rate limit of the HTTP routes (`None`: off).
    pub fn rate_limiter(&self) -> Option<std::sync::Arc<crate::rate_limit::RateLimiter>> {
        crate::rate_limit::RateLimiter::new(self.rate_limit_per_second, self.rate_limit_burst)
    }

    /// The KEKs this process holds (see `data_kek`).
    pub fn keyring(&self) -> anyhow::Result<crate::crypto::Keyring> {
        use crate::crypto::{Kek, Keyring};
        // An empty value (a compose file's `${DATA_KEK:-}`) is no value.
        let kek = self.data_kek.as_deref().filter(|k| !k.trim().is_empty());
        let current = match (kek, &self.data_kek_file) {
            (Some(_), Some(_)) => anyhow::bail!("set DATA_KEK or DATA_KEK_FILE, not both"),
            (Some(encoded), None) => Some(Kek::from_base64(encoded)?),
            (None, Some(path)) => Some(
                Kek::from_file(path)
                    .map_err(|e| anyhow::anyhow!("DATA_KEK_FILE {}: {e}", path.display()))?,
            ),
            (None, None) => None,
        };
        let previous = self
            .data_kek_previous
            .iter()
            .filter(|k| !k.trim().is_empty())
            .map(|k| Kek::from_base64(k))
            .collect::<Result<Vec<_>, _>>()?;
        if current.is_none() && !previous.is_empty() {
            anyhow::bail!("DATA_KEK_PREVIOUS needs a current DATA_KEK");
        }
        Ok(Keyring::new(current, previous))
    }

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

impl Settings {
    /// The request paths' pool (see `database_app_role`), built on the owner pool's options.
    pub async fn app_pool(&self, owner: &sqlx::PgPool) -> anyhow::Result<sqlx::PgPool> {
        crate::db::role_pool_with(
            owner,
            self.database_max_connections,
            &self.database_app_role,
            Some(format!(
                "set statement_timeout = {}",
                self.request_statement_timeout_ms
            )),
        )
        .await
    }

    /// The cross-tenant work's pool (see `database_system_role`).
    pub async fn system_pool(
        &self,
        owner: &sqlx::PgPool,
        max_connections: u32,
    ) -> anyhow::Result<sqlx::PgPool> {
        crate::db::role_pool_with(
            owner,
            max_connections,
            &self.database_system_role,
            Some(crate::db::PLAN_PER_EXECUTION),
        )
        .await
    }
}
