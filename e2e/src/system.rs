//! The whole system on a fresh database and stream: its set-up, its services and its tenants.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use command_service::bootstrap::{bootstrap, BootstrapSpec, Bootstrapped};
use command_service::CommandConfig;
use platform::Settings;
use projection_service::ProjectionConfig;
use sqlx::PgPool;
use uuid::Uuid;

use crate::service::{self, Running, Started};
use crate::{login_url, settings_for, traces, BrokerSecurity, Login, NatsServer, Options};
use crate::{TestDb, TestStream};

/// A tenant: a bootstrapped user, project and API key.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub api_key: String,
    pub project_id: Uuid,
    pub tenant_id: String,
    pub user_id: Uuid,
}

impl From<Bootstrapped> for Tenant {
    fn from(b: Bootstrapped) -> Self {
        Self {
            api_key: b.api_key,
            project_id: b.project_id,
            tenant_id: b.tenant_id,
            user_id: b.user_id,
        }
    }
}

/// The whole system on a fresh database and stream: command-service and projection-service
/// built as `main` builds them, bound to free ports.
pub struct TestSystem {
    pub options: Options,
    pub stream: TestStream,
    /// The private broker of [`TestSystem::start_secured`] (after `stream`: the stream is deleted
    /// while it still runs).
    broker: Option<NatsServer>,
    pub command_url: String,
    pub query_url: String,
    pub tenant: Tenant,
    pub http: reqwest::Client,
    /// Seconds added to the command-service clock (moves the sweeper's "now").
    pub clock_offset: Arc<AtomicI64>,
    command: Option<Running>,
    query: Option<Running>,
    // Last: dropped after the services stopped using it.
    pub db: TestDb,
}

impl TestSystem {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// The system on a private broker of its own that checks logins and TLS as `deploy/` runs
    /// it; the services log in as command-service and projection-service.
    pub async fn start_secured(options: Options) -> Self {
        let security = BrokerSecurity::new();
        let broker = NatsServer::start_secured(security.clone()).await;
        let mut system = Self::start_with(Options {
            nats_url: Some(broker.url()),
            nats_security: Some(security),
            ..options
        })
        .await;
        system.broker = Some(broker);
        system
    }

    pub async fn start_with(options: Options) -> Self {
        // Logs go to the test's captured output: shown for a failing test only.
        traces::init();
        let db = TestDb::new().await;
        let stream = match (&options.nats_url, &options.nats_security) {
            (Some(url), Some(security)) => {
                TestStream::secured(url.clone(), options.partitions, security.clone())
            }
            _ => TestStream::new(options.nats_url.clone(), options.partitions),
        };
        let tenant = Self::bootstrap_tenant(&db.pool, "tenant-a").await;
        let mut system = Self {
            options,
            stream,
            broker: None,
            command_url: String::new(),
            query_url: String::new(),
            tenant,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            clock_offset: Arc::new(AtomicI64::new(0)),
            command: None,
            query: None,
            db,
        };
        system.start_command().await;
        system.start_projection().await;
        system
    }

    pub async fn bootstrap_tenant(pool: &PgPool, tenant: &str) -> Tenant {
        bootstrap(
            pool,
            &BootstrapSpec {
                email: format!("owner@{tenant}.test"),
                name: format!("Owner of {tenant}"),
                tenant: tenant.to_owned(),
                project: format!("Project {tenant}"),
                session_timeout_minutes: 30,
                api_key: None,
                member_role: None,
            },
        )
        .await
        .expect("bootstrap")
        .into()
    }

    /// Another user of an existing tenant, with a member role (admin, supervisor, agent, viewer).
    pub async fn add_member(&self, tenant: &Tenant, role: &str) -> Tenant {
        Self::bootstrap_member(&self.db.pool, tenant, role).await
    }

    /// [`TestSystem::add_member`] on a database without a running system.
    pub async fn bootstrap_member(pool: &PgPool, tenant: &Tenant, role: &str) -> Tenant {
        bootstrap(
            pool,
            &BootstrapSpec {
                email: format!(
                    "{role}-{}@{}.test",
                    Uuid::new_v4().simple(),
                    tenant.tenant_id
                ),
                name: format!("A {role}"),
                tenant: tenant.tenant_id.clone(),
                project: String::new(),
                session_timeout_minutes: 30,
                api_key: None,
                member_role: Some(role.to_owned()),
            },
        )
        .await
        .expect("member")
        .into()
    }

    /// The settings command-service runs with (for starting more instances).
    pub fn settings(&self) -> Settings {
        self.settings_as(Login::Command)
    }

    /// The settings of a service logging in to the broker as `login`.
    pub fn settings_as(&self, login: Login) -> Settings {
        Settings {
            database_url: login_url(&self.db.url, self.options.app_role),
            database_max_connections: self.options.database_max_connections,
            database_app_role: self.options.app_role.into(),
            nats_url: self.stream.url.clone(),
            nats_auth: self.stream.auth(login),
            nats_stream: self.stream.name.clone(),
            nats_subject_prefix: self.stream.prefix.clone(),
            event_partitions: self.options.partitions,
            data_kek: Some(self.stream.kek.clone()),
            rate_limit_per_second: self.options.rate_limit.0,
            rate_limit_burst: self.options.rate_limit.1,
            http: self.options.http.clone(),
            ..settings_for(&self.db.url)
        }
    }

    /// The data keys as this system's services hold them.
    pub fn keys(&self) -> platform::personal::DataKeys {
        self.stream.keys()
    }

    /// The settings of a command-service instance of this system.
    pub fn command_config(&self) -> CommandConfig {
        CommandConfig {
            platform: self.settings(),
            addr: "127.0.0.1:0".into(),
            snapshot_every: self.options.snapshot_every,
            grouping: self.options.grouping,
            aggregate_cache_capacity: self.options.aggregate_cache_capacity,
            relay_poll_ms: self.options.relay_poll_ms,
            sweep_interval_ms: self.options.sweep_interval_ms,
            retention: self.options.retention.clone(),
            retention_interval: self.options.retention_interval,
            relay_enabled: self.options.relay_enabled,
            webhook_allow_private_targets: self.options.webhook_allow_private,
            ..CommandConfig::default()
        }
    }

    pub async fn start_command(&mut self) {
        let (url, running) = self.another_command_instance().await;
        self.command_url = url;
        self.command = Some(running);
    }

    /// One more command-service instance of this system (same database, stream and clock): its
    /// base URL, and the handle that stops it.
    pub async fn another_command_instance(&self) -> (String, Running) {
        let config = self.command_config();
        let (url, auth) = (self.stream.url.clone(), self.stream.auth(Login::Command));
        let offset = self.clock_offset.clone();
        let (addr, running) = service::launch(self.options.service_threads, async move {
            let nats = platform::nats::connect(&url, &auth).await.expect("nats");
            let clock: command_service::Clock = Arc::new(move || {
                Utc::now() + chrono::Duration::seconds(offset.load(Ordering::SeqCst))
            });
            let app = command_service::App::build_with(config, nats, clock)
                .await
                .expect("command-service");
            Started {
                addr: app.local_addr().to_string(),
                token: app.shutdown_token(),
                serve: Box::pin(app.run_until_stopped()),
            }
        })
        .await;
        (format!("http://{addr}"), running)
    }

    pub async fn stop_command(&mut self) {
        if let Some(running) = self.command.take() {
            running.stop().await;
        }
    }

    /// The settings of a projection-service instance of this system.
    pub fn projection_config(&self) -> ProjectionConfig {
        ProjectionConfig {
            platform: self.settings_as(Login::Projection),
            addr: "127.0.0.1:0".into(),
            ack_wait_secs: self.options.ack_wait_secs,
            stall_secs: self.options.stall_secs,
            combine_batches: self.options.combine_batches,
            retention_interval: self.options.retention_interval,
            webhook_allow_private_targets: self.options.webhook_allow_private,
            webhook_backoff_base: self.options.webhook_backoff_base,
            webhook_max_backoff: self.options.webhook_max_backoff,
            webhook_max_attempts: self.options.webhook_max_attempts,
            webhook_timeout: self.options.webhook_timeout,
            ..ProjectionConfig::default()
        }
    }

    pub async fn start_projection(&mut self) {
        let config = self.projection_config();
        let (url, auth) = (self.stream.url.clone(), self.stream.auth(Login::Projection));
        let (addr, running) = service::launch(self.options.service_threads, async move {
            let nats = platform::nats::connect(&url, &auth).await.expect("nats");
            let app = projection_service::App::build_with(config, nats)
                .await
                .expect("projection-service");
            Started {
                addr: app.local_addr().to_string(),
                token: app.shutdown_token(),
                serve: Box::pin(app.run_until_stopped()),
            }
        })
        .await;
        self.query_url = format!("http://{addr}");
        self.query = Some(running);
    }

    pub async fn stop_projection(&mut self) {
        if let Some(running) = self.query.take() {
            running.stop().await;
        }
    }

    pub async fn stop(mut self) {
        self.stop_command().await;
        self.stop_projection().await;
    }
}
