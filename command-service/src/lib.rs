//! command-service: the write side. HTTP commands become events in `contact_event_store` (with
//! their outbox rows, in one transaction); the outbox relay publishes them to JetStream; the
//! sweeper ends idle sessions; the retention sweeper deletes published outbox rows and expired
//! idempotency keys.
//!
//! [`App::build`] binds the listener and connects everything; [`App::run_until_stopped`] serves
//! until the shutdown token is cancelled. `main` and the tests build the very same app.

pub mod bootstrap;
pub mod cache;
pub mod commands;
pub mod config;
pub mod idempotency;
pub mod relay;
pub mod retention;
pub mod routes;
pub mod sweeper;
pub mod writer;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use platform::auth::KeyCache;
use platform::event_store::EventStore;
use platform::health::{self, Probes};
use platform::nats::{StreamSetUp, StreamSettings};
use platform::personal::DataKeys;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use commands::{system_clock, Clock, CommandHandler};
pub use config::CommandConfig;

/// How this service's database connections are named (`application_name`).
const SERVICE: &str = "command-service";

pub struct App {
    /// Empties the API-key cache whenever what it holds may have changed.
    key_cache: platform::auth::KeyCacheListener,
    listener: TcpListener,
    router: Router,
    http: platform::HttpLimits,
    relay: Option<relay::OutboxRelay>,
    sweeper: sweeper::TimeoutSweeper,
    retention: platform::retention::Elected<retention::RetentionSweep>,
    shutdown: CancellationToken,
}

impl App {
    /// Creates and migrates the database (as `MIGRATION_DATABASE_URL`'s owner), connects to NATS
    /// (creating the stream), and builds on them.
    pub async fn build(config: CommandConfig) -> anyhow::Result<Self> {
        config
            .platform
            .migrate()
            .await
            .context("migrating the database")?;
        let nats = platform::nats::connect(&config.platform.nats_url, &config.platform.nats_auth)
            .await
            .context("connecting to NATS")?;
        Self::build_with(config, nats, system_clock()).await
    }

    /// Builds on a migrated database and a NATS client (tests inject their own clock).
    pub async fn build_with(
        config: CommandConfig,
        nats: async_nats::Client,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        // Before anything records a metric, so that nothing recorded at start is lost.
        describe_metrics();
        let stream = set_up_stream(&config, &nats).await;
        // Requests run as the application role, bound by row-level security; the relay and the
        // sweeper's scan span tenants. Each logs in as its own role.
        let (app_pool, system_pool) = config.platform.service_pools(SERVICE, 4).await?;
        let keys = data_keys(&config)?;
        let handler = command_handler(&config, &app_pool, &keys, &clock);
        let key_cache = config.platform.key_cache();
        let key_listener =
            platform::auth::KeyCacheListener::start(key_cache.clone(), app_pool.clone()).await;
        let router = http_router(&config, &app_pool, &key_cache, &handler, &nats, &keys);
        let listener = TcpListener::bind(&config.addr)
            .await
            .with_context(|| format!("binding {}", config.addr))?;
        let (relay, retention, sweeper) =
            background_tasks(&config, system_pool, &nats, stream, handler, clock);
        Ok(Self {
            key_cache: key_listener,
            listener,
            router,
            http: config.platform.http.clone(),
            relay,
            sweeper,
            retention,
            shutdown: CancellationToken::new(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Cancelling this token stops the app gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves HTTP and runs the relay and the sweepers until shutdown. In-flight requests finish;
    /// the relay stops between batches (an unmarked batch is republished and de-duplicated).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        let relay = tokio::spawn({
            let (relay, shutdown) = (self.relay, shutdown.clone());
            async move {
                match relay {
                    Some(relay) => relay.run(shutdown).await,
                    None => tracing::info!("outbox relay disabled (RELAY_ENABLED=false)"),
                }
            }
        });
        let sweeper = tokio::spawn(self.sweeper.run(shutdown.clone()));
        let key_cache = tokio::spawn(self.key_cache.run(shutdown.clone()));
        let retention = tokio::spawn(self.retention.run(shutdown.clone()));
        let served = platform::server::serve(
            self.listener,
            self.router,
            self.http,
            shutdown.clone().cancelled_owned(),
        )
        .await;
        shutdown.cancel();
        let _ = tokio::join!(relay, sweeper, retention, key_cache);
        served.context("HTTP server failed")
    }
}

/// Installs the metrics recorder and describes this service's metric families.
fn describe_metrics() {
    let _ = platform::health::metrics_handle();
    commands::describe_metrics();
    relay::describe_metrics();
    writer::describe_metrics();
}

/// The event stream's settings, after creating the stream when it is missing.
async fn set_up_stream(config: &CommandConfig, nats: &async_nats::Client) -> StreamSettings {
    let js = async_nats::jetstream::new(nats.clone());
    let stream = config.platform.stream();
    // This service owns the stream: its relay is the one publisher. The relay retries
    // publishing until the broker is back, so a failure here is not fatal.
    match platform::nats::ensure_stream(&js, &stream).await {
        Ok(StreamSetUp::Created) => {
            tracing::info!(stream = %stream.name, "JetStream stream created")
        }
        Ok(StreamSetUp::AsConfigured) => {}
        Ok(StreamSetUp::Differs(differences)) => tracing::warn!(
            stream = %stream.name,
            differences = %differences.join("; "),
            "the JetStream stream differs from the settings; left as it is (an operator edits it with the admin login)"
        ),
        Err(e) => tracing::warn!(error = %e, "could not set up the JetStream stream yet"),
    }
    stream
}

/// The contacts' data keys, from the configured keyring (its protection logged).
fn data_keys(config: &CommandConfig) -> anyhow::Result<DataKeys> {
    let keyring = config.platform.keyring()?;
    platform::personal::log_key_protection(&keyring);
    Ok(DataKeys::new(keyring, config.aggregate_cache_capacity))
}

/// The command handler the routes and the sweeper share, on the application pool.
fn command_handler(
    config: &CommandConfig,
    app_pool: &PgPool,
    keys: &DataKeys,
    clock: &Clock,
) -> CommandHandler {
    CommandHandler::new(
        EventStore::new(app_pool.clone()),
        keys.clone(),
        clock.clone(),
        config.snapshot_every,
        config.max_attempts,
    )
    .with_cache(config.aggregate_cache_capacity)
    .with_grouping(config.grouping)
}

/// The HTTP routes (commands, health probes, OpenAPI docs) behind the common layers.
fn http_router(
    config: &CommandConfig,
    app_pool: &PgPool,
    key_cache: &Arc<KeyCache>,
    handler: &CommandHandler,
    nats: &async_nats::Client,
    keys: &DataKeys,
) -> Router {
    let state = routes::AppState {
        pool: app_pool.clone(),
        auth: platform::auth::Authenticator {
            pool: app_pool.clone(),
            primary: None,
            cache: key_cache.clone(),
        },
        handler: handler.clone(),
        channel_types: Arc::default(),
        allow_private_webhooks: config.webhook_allow_private_targets,
        keyring: Arc::new(keys.keyring().clone()),
    };
    let (router, paths) = routes::router(state)
        .merge(health::router(Probes {
            pool: app_pool.clone(),
            nats: nats.clone(),
            stalled: None,
            key_protection: platform::personal::key_protection(keys.keyring()),
        }))
        .split_for_parts();
    let docs = platform::openapi::docs_router(platform::openapi::document(
        "Ventros command-service",
        "Commands on contacts and sessions. Each answers the aggregate's id, its new version (also in \
         `ETag`) and the ids of the events it appended.",
        paths,
    ));
    platform::http::finish_router(router.merge(docs), config.platform.rate_limiter())
}

/// The tasks beside HTTP, on the system pool: the outbox relay (if enabled), retention, sweeper.
fn background_tasks(
    config: &CommandConfig,
    system_pool: PgPool,
    nats: &async_nats::Client,
    stream: StreamSettings,
    handler: CommandHandler,
    clock: Clock,
) -> (
    Option<relay::OutboxRelay>,
    platform::retention::Elected<retention::RetentionSweep>,
    sweeper::TimeoutSweeper,
) {
    let relay = config.relay_enabled.then(|| relay::OutboxRelay {
        pool: system_pool.clone(),
        js: relay::publish_context(nats),
        stream,
        batch_size: config.relay_batch_size,
        poll: config.relay_poll(),
    });
    let retention = retention::elected(config, system_pool.clone());
    let sweeper = sweeper::TimeoutSweeper {
        pool: system_pool,
        handler,
        clock,
        interval: config.sweep_interval(),
    };
    (relay, retention, sweeper)
}
