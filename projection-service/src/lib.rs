//! projection-service: the read side. One JetStream worker per partition (the partitions shared
//! among the instances: see [`ownership`]) folds the events into `contacts`, `sessions` and
//! `domain_event_logs` (exactly once, through `processed_events`), and the query API serves
//! those tables. The retention sweeper deletes `processed_events` rows the stream can no longer
//! redeliver an event for ([`retention`]).
//!
//! The projections ([`projections`]) are a library the replay tool calls too, so a rebuild runs
//! the very code the live workers run.

pub mod config;
mod console;
pub mod dead_letters;
pub mod ownership;
pub mod pipeline;
pub mod projected;
pub mod projections;
pub mod queries;
pub mod retention;
pub mod webhooks;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use platform::event_store::EventStore;
use platform::health::{self, Probes};
use platform::personal::DataKeys;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::ProjectionConfig;

/// How this service's database connections are named (`application_name`).
const SERVICE: &str = "projection-service";

pub struct App {
    /// Empties the API-key cache whenever what it holds may have changed.
    key_cache: platform::auth::KeyCacheListener,
    listener: TcpListener,
    router: Router,
    http: platform::HttpLimits,
    workers: Option<ownership::Coordinator>,
    notifications: projected::Listener,
    owned: Arc<ownership::Owned>,
    retention: platform::retention::Elected<retention::RetentionSweep>,
    /// The webhook dispatcher (none when `WEBHOOKS=false`).
    webhooks: Option<webhooks::Dispatcher>,
    shutdown: CancellationToken,
}

impl App {
    /// Creates and migrates the database (as `MIGRATION_DATABASE_URL`'s owner), connects to NATS,
    /// and builds on them.
    pub async fn build(config: ProjectionConfig) -> anyhow::Result<Self> {
        config
            .platform
            .migrate()
            .await
            .context("migrating the database")?;
        let nats = platform::nats::connect(&config.platform.nats_url, &config.platform.nats_auth)
            .await
            .context("connecting to NATS")?;
        Self::build_with(config, nats).await
    }

    /// Builds on a migrated database and a NATS client.
    pub async fn build_with(
        config: ProjectionConfig,
        nats: async_nats::Client,
    ) -> anyhow::Result<Self> {
        // Before anything records a metric, so that nothing recorded at start is lost.
        let _ = platform::health::metrics_handle();
        worker::describe_metrics();
        webhooks::describe_metrics();
        ownership::describe_metrics();
        // The stream is command-service's to create (this service's login may only read and
        // consume it); until it exists the workers keep trying.
        let stream = config.platform.stream();
        // The workers' batches mix tenants (the system role bypasses row-level security); queries
        // run as the application role, one tenant per transaction. Each logs in as its own role.
        let workers = config
            .platform
            .database_max_connections
            .max(stream.partitions + 2);
        let (app_pool, system_pool) = config.platform.service_pools(SERVICE, workers).await?;
        // Queries may read a replica; the workers and the existence check of a `min_version`
        // read stay on the primary.
        let (query_pool, replica) = match &config.query_database_url {
            Some(url) if !url.is_empty() => (config.platform.app_pool_on(url, SERVICE)?, true),
            _ => (app_pool.clone(), false),
        };
        let retention = retention::elected(&config, system_pool.clone());
        let store = EventStore::new(system_pool);
        let keyring = config.platform.keyring()?;
        platform::personal::log_key_protection(&keyring);
        // Readers never cache keys: a forgotten contact's are gone at once.
        let keys = DataKeys::new(keyring, 0);
        let webhooks = config.webhooks.then(|| webhooks::Dispatcher {
            pool: store.pool().clone(),
            keys: keys.clone(),
            settings: webhooks::Settings {
                max_attempts: config.webhook_max_attempts,
                backoff_base: config.webhook_backoff_base,
                max_backoff: config.webhook_max_backoff,
                timeout: config.webhook_timeout,
                allow_private: config.webhook_allow_private_targets,
            },
        });
        let stall_after = std::time::Duration::from_secs(config.stall_secs);
        let consumer_health = Arc::new(worker::ConsumerHealth::default());
        // The partitions are shared with the other instances (see `ownership`).
        let owned = Arc::new(ownership::Owned::default());
        let workers = config.workers.then(|| ownership::Coordinator {
            pool: store.pool().clone(),
            template: worker::PartitionWorker {
                js: worker::requests_context(&nats),
                stream: stream.clone(),
                partition: 0,
                store: store.clone(),
                keys: keys.clone(),
                batch_size: config.batch_size,
                ack_wait: config.ack_wait(),
                health: consumer_health.clone(),
                lease: None,
                combiner: config
                    .combine_batches
                    .then(|| worker::Combiner::start(store.clone(), keys.clone())),
            },
            health: consumer_health.clone(),
            owned: owned.clone(),
            instance: config.instance(),
        });
        // The cache's listener connects to the primary: a replica cannot LISTEN.
        let key_cache = config.platform.key_cache();
        let key_listener =
            platform::auth::KeyCacheListener::start(key_cache.clone(), app_pool.clone()).await;
        // Batches are notified on the primary (a replica does not relay notifications): the
        // listener holds one connection of a pool of its own, not one of the queries'.
        let (notifications, projected) = projected::Listener::new(platform::db::login_pool(
            &config.platform.database_url,
            &format!("{SERVICE} listener"),
            1,
            &config.platform.database_app_role,
            None::<String>,
        )?);
        let shutdown = CancellationToken::new();
        // The console's sparklines: each instance samples the broker's numbers on its own.
        let history = pipeline::History::default();
        tokio::spawn(
            history
                .clone()
                .run(nats.clone(), stream.clone(), shutdown.clone()),
        );
        let (router, paths) = queries::router(queries::QueryState {
            auth: platform::auth::Authenticator {
                pool: query_pool.clone(),
                primary: replica.then(|| app_pool.clone()),
                cache: key_cache.clone(),
            },
            pool: query_pool.clone(),
            store: EventStore::new(query_pool),
            primary: app_pool.clone(),
            keys: keys.clone(),
            projected,
            shutdown: shutdown.clone(),
            ops: queries::ops::Ops {
                system: store.pool().clone(),
                nats: nats.clone(),
                stream: stream.clone(),
                history: history.clone(),
            },
        })
        .merge(health::router(Probes {
            pool: app_pool.clone(),
            nats: nats.clone(),
            stalled: Some(Arc::new(move || consumer_health.stalled(stall_after))),
            key_protection: platform::personal::key_protection(keys.keyring()),
        }))
        .split_for_parts();
        let docs = platform::openapi::docs_router(platform::openapi::document(
            "Ventros projection-service",
            "Queries on the read model: contacts, sessions (with every metric) and the audit trail. \
         `min_version` reads your own writes.",
            paths,
        ));
        let router = platform::http::finish_router(
            router.merge(docs).merge(console::router()),
            config.platform.rate_limiter(),
        );
        let listener = TcpListener::bind(&config.addr)
            .await
            .with_context(|| format!("binding {}", config.addr))?;
        Ok(Self {
            key_cache: key_listener,
            listener,
            router,
            http: config.platform.http.clone(),
            workers,
            notifications,
            owned,
            retention,
            webhooks,
            shutdown,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The partitions this instance consumes now (they change as instances come and go).
    pub fn owned_partitions(&self) -> Arc<ownership::Owned> {
        self.owned.clone()
    }

    /// Serves queries and runs the workers and the retention sweeper until shutdown; a worker finishes (commits and acks)
    /// the batch in hand before it stops.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        let workers: Vec<_> = self
            .workers
            .into_iter()
            .map(|c| tokio::spawn(c.run(shutdown.clone())))
            .collect();
        let retention = tokio::spawn(self.retention.run(shutdown.clone()));
        let webhooks = self
            .webhooks
            .map(|dispatcher| tokio::spawn(dispatcher.run(shutdown.clone())));
        let key_cache = tokio::spawn(self.key_cache.run(shutdown.clone()));
        let notifications = tokio::spawn(self.notifications.run(shutdown.clone()));
        let served = platform::server::serve(
            self.listener,
            self.router,
            self.http,
            shutdown.clone().cancelled_owned(),
        )
        .await;
        shutdown.cancel();
        futures::future::join_all(workers).await;
        let _ = tokio::join!(retention, notifications, key_cache);
        if let Some(webhooks) = webhooks {
            let _ = webhooks.await;
        }
        served.context("HTTP server failed")
    }
}
