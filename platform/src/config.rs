//! Settings shared by every binary, read from the environment (or flags), each with a default that
//! works on a development machine of this project.

use std::time::Duration;

use crate::defaults::defaults;

/// `Debug` is written out below: it hides the KEKs and the passwords in the database URLs.
#[derive(Clone, clap::Args)]
pub struct Settings {
    /// The PostgreSQL login of the request paths: in production `ventros_app` itself (neither a
    /// superuser nor the tables' owner), so that nothing a request runs can step out of its
    /// tenant or rewrite history. Logged in as a privileged user, the service still works (it
    /// `set role`s to `DATABASE_APP_ROLE`) but warns at start and exports
    /// `database_login_privileged 1`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/ventros",
        hide_env_values = true
    )]
    pub database_url: String,
    /// The login that creates the database if it is missing and applies the migrations at start
    /// (the tables' owner, a superuser or with BYPASSRLS); unset: `DATABASE_URL`. Its connection
    /// is closed once the migrations are applied.
    #[arg(long, env = "MIGRATION_DATABASE_URL", hide_env_values = true)]
    pub migration_database_url: Option<String>,
    /// The login of the work that spans tenants (outbox relay, projection workers, sweeps):
    /// `ventros_projector` in production; unset: `DATABASE_URL`.
    #[arg(long, env = "SYSTEM_DATABASE_URL", hide_env_values = true)]
    pub system_database_url: Option<String>,
    /// Maximum connections in the pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
    /// The role the request paths run as: bound by row-level security, with the tenant set per
    /// transaction. A login other than this role `set role`s to it on each connection. Empty:
    /// stay the login.
    #[arg(long, env = "DATABASE_APP_ROLE", default_value = "ventros_app")]
    pub database_app_role: String,
    /// The role of the work that spans tenants (projection workers, outbox relay, sweeper's
    /// scan): `bypassrls`. A login other than this role `set role`s to it. Empty: stay the login.
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
    /// API keys (per project) whose access each instance remembers, so that a request costs no
    /// lookup; emptied whenever users, keys, projects or members change. 0: look up every time.
    #[arg(long, env = "API_KEY_CACHE_CAPACITY", default_value_t = 10_000)]
    pub api_key_cache_capacity: usize,
    /// The HTTP server's timeouts and caps.
    #[command(flatten)]
    pub http: crate::server::HttpLimits,
}

impl Default for Settings {
    fn default() -> Self {
        defaults()
    }
}

impl Settings {
    /// The API-key cache of this instance (see `api_key_cache_capacity`).
    pub fn key_cache(&self) -> std::sync::Arc<crate::auth::KeyCache> {
        crate::auth::KeyCache::new(self.api_key_cache_capacity)
    }

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

    /// The event stream's settings. Its max age is fixed at 7 days: how long the broker keeps an
    /// event it could redeliver, and so how long projection-service keeps `processed_events`.
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
    /// The owner's login: migrations and the operator's tools.
    pub fn migration_url(&self) -> &str {
        non_empty(&self.migration_database_url).unwrap_or(&self.database_url)
    }

    /// The login of the work that spans tenants.
    pub fn system_url(&self) -> &str {
        non_empty(&self.system_database_url).unwrap_or(&self.database_url)
    }

    /// Creates the database if it is missing and applies the migrations, logged in as the owner;
    /// the owner's connections are closed before this returns.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let owner = crate::db::connect_and_migrate(self.migration_url(), 1).await?;
        owner.close().await;
        Ok(())
    }

    /// The request paths' pool on `DATABASE_URL` (see `database_app_role`); `service` names its
    /// connections (`application_name`).
    pub fn app_pool(&self, service: &str) -> anyhow::Result<sqlx::PgPool> {
        self.app_pool_on(&self.database_url, service)
    }

    /// The request paths' pool on another server (a read replica).
    pub fn app_pool_on(&self, url: &str, service: &str) -> anyhow::Result<sqlx::PgPool> {
        crate::db::login_pool(
            url,
            &format!("{service} request"),
            self.database_max_connections,
            &self.database_app_role,
            Some(format!(
                "set statement_timeout = {}",
                self.request_statement_timeout_ms
            )),
        )
    }

    /// A service's two pools, the request paths' and the cross-tenant work's (`system_connections`
    /// of them), each connected once to check that its login holds no more than its work needs
    /// ([`crate::db::check_login`]).
    pub async fn service_pools(
        &self,
        service: &str,
        system_connections: u32,
    ) -> anyhow::Result<(sqlx::PgPool, sqlx::PgPool)> {
        use anyhow::Context as _;
        let app = self.app_pool(service)?;
        let system = self.system_pool(service, system_connections)?;
        crate::db::check_login(&app, crate::db::Login::Request)
            .await
            .context("connecting to PostgreSQL (DATABASE_URL)")?;
        crate::db::check_login(&system, crate::db::Login::System)
            .await
            .context("connecting to PostgreSQL (SYSTEM_DATABASE_URL)")?;
        Ok((app, system))
    }

    /// The cross-tenant work's pool on `SYSTEM_DATABASE_URL` (see `database_system_role`).
    pub fn system_pool(&self, service: &str, max_connections: u32) -> anyhow::Result<sqlx::PgPool> {
        crate::db::login_pool(
            self.system_url(),
            &format!("{service} system"),
            max_connections,
            &self.database_system_role,
            Some(crate::db::PLAN_PER_EXECUTION),
        )
    }
}

/// An optional setting that is set and not empty (a compose file's `${X:-}` is unset).
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.trim().is_empty())
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |set: bool| if set { "***" } else { "unset" };
        f.debug_struct("Settings")
            .field(
                "database_url",
                &crate::db::without_password(&self.database_url),
            )
            .field(
                "migration_database_url",
                &self
                    .migration_database_url
                    .as_deref()
                    .map(crate::db::without_password),
            )
            .field(
                "system_database_url",
                &self
                    .system_database_url
                    .as_deref()
                    .map(crate::db::without_password),
            )
            .field("database_max_connections", &self.database_max_connections)
            .field("database_app_role", &self.database_app_role)
            .field("database_system_role", &self.database_system_role)
            .field("nats_url", &self.nats_url)
            .field("nats_auth", &self.nats_auth)
            .field("nats_stream", &self.nats_stream)
            .field("nats_subject_prefix", &self.nats_subject_prefix)
            .field("nats_stream_replicas", &self.nats_stream_replicas)
            .field("event_partitions", &self.event_partitions)
            .field("data_kek", &hidden(self.data_kek.is_some()))
            .field("data_kek_file", &self.data_kek_file)
            .field(
                "data_kek_previous",
                &hidden(!self.data_kek_previous.is_empty()),
            )
            .field(
                "request_statement_timeout_ms",
                &self.request_statement_timeout_ms,
            )
            .field("rate_limit_per_second", &self.rate_limit_per_second)
            .field("rate_limit_burst", &self.rate_limit_burst)
            .field("api_key_cache_capacity", &self.api_key_cache_capacity)
            .field("http", &self.http)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    #[test]
    fn debug_shows_no_kek_and_no_password() {
        let cli = Cli::parse_from([
            "x",
            "--database-url",
            "postgres://ventros_app:s3cret-app@db/ventros",
            "--system-database-url",
            "postgres://ventros_projector:s3cret-projector@db/ventros",
            "--data-kek",
            "a2VrLWluLWJhc2U2NC1vZi0zMi1ieXRlcy4uLi4uLi4=",
        ]);
        let shown = format!("{:?}", cli.settings);
        for secret in ["s3cret-app", "s3cret-projector", "a2VrLWluLWJhc2U2"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("postgres://ventros_app:***@db/ventros"),
            "{shown}"
        );
    }

    #[test]
    fn the_defaults_are_the_declared_ones_whatever_the_environment_says() {
        // PATH is set in every process: a parse reads it, the defaults must not.
        #[derive(clap::Args)]
        struct FromPath {
            #[arg(long, env = "PATH", default_value = "declared")]
            path: String,
        }
        assert_ne!(std::env::var("PATH").as_deref(), Ok("declared"));
        assert_eq!(defaults::<FromPath>().path, "declared");

        let settings = Settings::default();
        assert_eq!(settings.event_partitions, 8);
        assert_eq!(settings.http.max_in_flight, 1_024);
        assert_eq!(
            settings.database_url,
            "postgres://postgres@127.0.0.1:5432/ventros"
        );
        assert_eq!(settings.database_app_role, "ventros_app");
        assert_eq!(settings.rate_limit_per_second, 1_000);
        assert_eq!(settings.data_kek, None);
        assert_eq!(
            crate::retention::RetentionPeriods::default().outbox_retention,
            Duration::from_secs(7 * 24 * 3600)
        );
    }
}
