//! The test harness: a fresh database per test, a JetStream stream per test (or a private
//! nats-server that a test may stop), both services built in-process exactly as `main` builds
//! them, and small HTTP helpers. Everything a test creates is removed when it is dropped.

pub mod cluster;
pub mod nats;
pub mod nats_security;
pub mod postgres;
pub mod process;
pub mod traces;
pub mod traffic;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use command_service::bootstrap::{bootstrap, BootstrapSpec, Bootstrapped};
use command_service::CommandConfig;
use platform::Settings;
use projection_service::ProjectionConfig;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use nats::{NatsServer, SecuredBroker, TestStream};
pub use nats_security::{BrokerSecurity, Login};

/// `processed_events` as `(event_id, name)` pairs, one per projection an event was applied to
/// (a row names every projection its batch applied the event to, joined by `+`).
pub const APPLIED_PAIRS: &str = "(select pe.event_id, p.name from processed_events pe \
     cross join unnest(string_to_array(pe.consumer_name, '+')) as p(name))";

/// The PostgreSQL server the tests use (`TEST_DATABASE_SERVER`, default the project's local one).
pub fn database_server() -> String {
    std::env::var("TEST_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// `url` (a database's, as its owner) with `role` as the login: how the services log in
/// (`DATABASE_URL` as `ventros_app`, `SYSTEM_DATABASE_URL` as `ventros_projector`). The test
/// server trusts local logins, so no password.
pub fn login_url(url: &str, role: &str) -> String {
    let mut url = url::Url::parse(url).expect("a database URL");
    url.set_username(role).expect("a URL with a host");
    url.set_password(None).expect("a URL with a host");
    url.into()
}

/// The settings of a service on this database (`database_url`, the owner's) with no broker, no
/// KEK and no rate limit: for tests of the database side alone (pools built as the services
/// build theirs, logged in as they log in).
pub fn settings_for(database_url: &str) -> Settings {
    Settings {
        database_url: login_url(database_url, "ventros_app"),
        migration_database_url: Some(database_url.to_owned()),
        system_database_url: Some(login_url(database_url, "ventros_projector")),
        database_max_connections: 2,
        database_app_role: "ventros_app".into(),
        database_system_role: "ventros_projector".into(),
        nats_url: String::new(),
        nats_auth: platform::nats::NatsAuth::default(),
        nats_stream: String::new(),
        nats_subject_prefix: String::new(),
        nats_stream_replicas: 1,
        event_partitions: 1,
        data_kek: None,
        data_kek_file: None,
        data_kek_previous: vec![],
        request_statement_timeout_ms: 10_000,
        rate_limit_per_second: 0,
        rate_limit_burst: 0,
        api_key_cache_capacity: 10_000,
        http: Default::default(),
    }
}

/// The value of a Prometheus sample: the sum over every series of `family` whose labels contain
/// all of `labels`.
pub fn sample(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Asks `check` every 20 ms until it answers true (true) or `within` has passed (false).
pub async fn wait_until<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Outbox rows for `events` as a release that marked published rows instead of deleting them
/// left them: `processed`, published now (events that still have a row are left alone).
pub async fn outbox_as_an_earlier_release_left_it(pool: &sqlx::PgPool, events: &[uuid::Uuid]) {
    sqlx::query(
        "insert into outbox_events (event_id, aggregate_id, aggregate_type, event_type, event_data, \
                                    tenant_id, status, processed_at) \
         select id, aggregate_id, aggregate_type, event_type, event_data, tenant_id, 'processed', \
                now() at time zone 'utc' \
           from contact_event_store e \
          where id = any($1) and not exists (select 1 from outbox_events o where o.event_id = e.id)",
    )
    .bind(events)
    .execute(pool)
    .await
    .expect("outbox rows of an earlier release");
}

/// Runs an async clean-up from a `Drop`, on its own runtime (a `Drop` cannot await).
pub(crate) fn block_on_cleanup<F: std::future::Future<Output = ()> + Send + 'static>(f: F) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(f);
        }
    })
    .join();
}

/// A database of its own, created and migrated; dropped (with its connections) afterwards.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    server: String,
}

impl TestDb {
    pub async fn new() -> Self {
        Self::on(&database_server()).await
    }

    /// A database of its own on another server (e.g. a [`postgres::PrivatePostgres`]).
    pub async fn on(server: &str) -> Self {
        let name = format!("ventros_test_{}", Uuid::new_v4().simple());
        let url = format!("{server}/{name}");
        let pool = platform::db::connect_and_migrate(&url, 20)
            .await
            .expect("test database");
        Self {
            name,
            url,
            pool,
            server: server.to_owned(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (name, server) = (self.name.clone(), self.server.clone());
        self.pool.close_event();
        block_on_cleanup(async move {
            if let Ok(pool) = sqlx::PgPool::connect(&format!("{server}/postgres")).await {
                let _ = sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
                    .execute(&pool)
                    .await;
            }
        });
    }
}

/// A service running in this process.
struct Running {
    token: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.token.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.handle).await;
    }
}

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

/// An HTTP answer, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn id(&self, field: &str) -> Uuid {
        self.body[field]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .unwrap_or_else(|| {
                panic!("no UUID in {field:?} of {}", self.body);
            })
    }

    /// Asserts an `application/problem+json` answer with this status.
    pub fn assert_problem(&self, status: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "body: {}",
            self.body
        );
        assert_eq!(
            self.body["status"], status,
            "problem status field: {}",
            self.body
        );
        assert!(
            self.body["title"].is_string()
                && self.body["detail"].is_string()
                && self.body["type"].is_string()
        );
        self
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
            max_attempts: 10,
            aggregate_cache_capacity: self.options.aggregate_cache_capacity,
            relay_batch_size: 500,
            relay_poll_ms: self.options.relay_poll_ms,
            sweep_interval_ms: self.options.sweep_interval_ms,
            relay_enabled: true,
            retention: self.options.retention.clone(),
            retention_interval: self.options.retention_interval,
        }
    }

    pub async fn start_command(&mut self) {
        let config = self.command_config();
        let nats = platform::nats::connect(&self.stream.url, &self.stream.auth(Login::Command))
            .await
            .expect("nats");
        let offset = self.clock_offset.clone();
        let clock: command_service::Clock =
            Arc::new(move || Utc::now() + chrono::Duration::seconds(offset.load(Ordering::SeqCst)));
        let app = command_service::App::build_with(config, nats, clock)
            .await
            .expect("command-service");
        self.command_url = format!("http://{}", app.local_addr());
        let token = app.shutdown_token();
        self.command = Some(Running {
            token,
            handle: tokio::spawn(app.run_until_stopped()),
        });
    }

    pub async fn stop_command(&mut self) {
        if let Some(running) = self.command.take() {
            running.stop().await;
        }
    }

    pub async fn start_projection(&mut self) {
        let config = ProjectionConfig {
            platform: self.settings_as(Login::Projection),
            addr: "127.0.0.1:0".into(),
            batch_size: 256,
            ack_wait_secs: self.options.ack_wait_secs,
            stall_secs: self.options.stall_secs,
            workers: true,
            combine_batches: self.options.combine_batches,
            query_database_url: None,
            retention_interval: self.options.retention_interval,
        };
        let nats = platform::nats::connect(&self.stream.url, &self.stream.auth(Login::Projection))
            .await
            .expect("nats");
        let app = projection_service::App::build_with(config, nats)
            .await
            .expect("projection-service");
        self.query_url = format!("http://{}", app.local_addr());
        let token = app.shutdown_token();
        self.query = Some(Running {
            token,
            handle: tokio::spawn(app.run_until_stopped()),
        });
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

    /// The Prometheus text of the service at `base_url`.
    pub async fn metrics(&self, base_url: &str) -> String {
        self.http
            .get(format!("{base_url}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// A Prometheus sample of the service at `base_url` (see [`sample`]).
    pub async fn sample(&self, base_url: &str, family: &str, labels: &[&str]) -> f64 {
        sample(&self.metrics(base_url).await, family, labels)
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        key: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.http.request(method, url);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        Self::read(response).await
    }

    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A command of tenant A: `path` is relative to `/v1/projects/{project}`.
    pub async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.command_as(&self.tenant, method, path, body, &[]).await
    }

    pub async fn command_as(
        &self,
        tenant: &Tenant,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let url = format!(
            "{}/v1/projects/{}{path}",
            self.command_url, tenant.project_id
        );
        self.send(method, &url, Some(&tenant.api_key), body.as_ref(), headers)
            .await
    }

    /// A query of tenant A: `path` is relative to `/v1/projects/{project}`.
    pub async fn query(&self, path: &str) -> Reply {
        self.query_as(&self.tenant, path).await
    }

    pub async fn query_as(&self, tenant: &Tenant, path: &str) -> Reply {
        let url = format!("{}/v1/projects/{}{path}", self.query_url, tenant.project_id);
        self.send(Method::GET, &url, Some(&tenant.api_key), None, &[])
            .await
    }

    /// A contact's stored events, as the store holds them (sealed fields and all).
    pub async fn contact_events(&self, contact: Uuid) -> Vec<event_model::EventEnvelope> {
        platform::event_store::EventStore::new(self.db.pool.clone())
            .load_stream(
                &self.db.pool,
                &self.tenant.tenant_id,
                event_model::AggregateType::Contact,
                contact,
                0,
            )
            .await
            .expect("the contact's stream")
    }

    /// Creates a contact of tenant A and returns its id.
    pub async fn create_contact(&self, body: Value) -> Uuid {
        let reply = self.command(Method::POST, "/contacts", Some(body)).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "create contact: {}",
            reply.body
        );
        reply.id("id")
    }

    /// Records an inbound message for a contact of tenant A on channel 1, which opens a session;
    /// returns the session's id.
    pub async fn open_session(&self, contact: Uuid) -> Uuid {
        let reply = self
            .command(
                Method::POST,
                &format!("/contacts/{contact}/messages"),
                Some(serde_json::json!({"channel_type_id": 1, "from_contact": true})),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "inbound message: {}",
            reply.body
        );
        reply.id("session_id")
    }

    /// Polls `check` until it holds or `within` passes (for what has no `min_version`).
    pub async fn eventually<F, Fut>(&self, within: Duration, what: &str, check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        assert!(
            wait_until(within, check).await,
            "timed out waiting for: {what}"
        );
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Waits until every stored event is published, and every projection has applied it.
    pub async fn wait_until_projected(&self, within: Duration) {
        self.eventually(within, "every event published and projected", || async {
            let events = self.count("select count(*) from contact_event_store").await;
            let pending = self
                .count("select count(*) from outbox_events where status <> 'processed'")
                .await;
            let applied = self
                .count(&format!("select count(*) from {APPLIED_PAIRS} a"))
                .await;
            pending == 0 && applied == events * 3
        })
        .await;
    }

    /// Waits until every partition's consumer has nothing pending and nothing unacknowledged.
    pub async fn wait_until_consumed(&self, within: Duration) {
        let js = async_nats::jetstream::new(self.stream.admin_client().await);
        let stream = js.get_stream(&self.stream.name).await.expect("stream");
        self.eventually(within, "every consumer drained", || {
            let stream = &stream;
            async move {
                for partition in 0..self.options.partitions {
                    match stream
                        .consumer_info(format!("projections-p{partition}"))
                        .await
                    {
                        Ok(info) if info.num_pending == 0 && info.num_ack_pending == 0 => {}
                        _ => return false,
                    }
                }
                true
            }
        })
        .await;
    }

    /// The stream's settings, for publishing as the relay does.
    pub fn stream_settings(&self) -> platform::nats::StreamSettings {
        self.settings_as(Login::Admin).stream()
    }

    /// Sends a raw body with a content type (for malformed input).
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let url = format!(
            "{}/v1/projects/{}{path}",
            self.command_url, self.tenant.project_id
        );
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(&self.tenant.api_key)
            .body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        Self::read(request.send().await.expect("request")).await
    }

    /// Rebuilds every projection in a rolled-back transaction and diffs it against the live
    /// tables: empty = identical, column for column.
    pub async fn verify(&self) -> Vec<replay_tool::TableDiff> {
        replay_tool::verify(&self.db.pool, &self.keys(), None, 500, &|_, _| {})
            .await
            .expect("verify")
    }
}
