//! A database of its own per test, and the settings of a service on it.

use platform::Settings;
use sqlx::PgPool;
use uuid::Uuid;

use crate::block_on_cleanup;

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
        nats_url: String::new(),
        nats_stream: String::new(),
        nats_subject_prefix: String::new(),
        event_partitions: 1,
        rate_limit_per_second: 0,
        rate_limit_burst: 0,
        ..Settings::default()
    }
}

/// One `count(*)` statement's answer, as the executor's login sees it (the test database's
/// owner: every tenant's rows).
pub async fn count<'e>(executor: impl sqlx::PgExecutor<'e>, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(executor)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// How many rows `relation` holds: a table, with or without a condition
/// (`"sessions where status = 'active'"`), or a subquery with its alias.
pub async fn rows<'e>(executor: impl sqlx::PgExecutor<'e>, relation: &str) -> i64 {
    count(executor, &format!("select count(*) from {relation}")).await
}

/// The outbox rows not yet published ([`rows`] of it: the relay deletes what it publishes, and
/// an earlier release marked it `processed`).
pub const OUTBOX_WAITING: &str = "outbox_events where status <> 'processed'";

/// The ids of every stored event.
pub async fn stored_event_ids(pool: &PgPool) -> Vec<Uuid> {
    sqlx::query_scalar("select id from contact_event_store")
        .fetch_all(pool)
        .await
        .expect("the stored events' ids")
}

/// How many events each projection applied ([`crate::APPLIED_PAIRS`]), by projection name.
pub async fn applied_per_projection(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as(&format!(
        "select name, count(*) from {} a group by 1 order by 1",
        crate::APPLIED_PAIRS
    ))
    .fetch_all(pool)
    .await
    .expect("the applied events per projection")
}

/// How far the pipeline has carried what is stored: the events, the outbox rows still to
/// publish, and the (event, projection) pairs applied ([`crate::APPLIED_PAIRS`]) in all and once
/// each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    pub events: i64,
    pub outbox_waiting: i64,
    pub applied: i64,
    pub applied_once: i64,
}

impl Carried {
    /// All four, read in one statement (a wait polls this every few milliseconds).
    pub async fn read(pool: &PgPool) -> Self {
        let (events, outbox_waiting, applied, applied_once) = sqlx::query_as(&format!(
            "select (select count(*) from contact_event_store), \
                    (select count(*) from {OUTBOX_WAITING}), \
                    count(*), count(distinct (event_id, name)) \
               from {} a",
            crate::APPLIED_PAIRS
        ))
        .fetch_one(pool)
        .await
        .expect("how far the pipeline carried what is stored");
        Self {
            events,
            outbox_waiting,
            applied,
            applied_once,
        }
    }

    /// Every event published, and applied by every projection.
    pub fn converged(&self) -> bool {
        let projections = projection_service::projections::Projection::ALL.len() as i64;
        self.outbox_waiting == 0 && self.applied == projections * self.events
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

/// Parks the event `version` of the aggregate `aggregate_id` for partition consumer 0, as a
/// worker that could not apply it would (the error says the test did it): the parked row's id.
pub async fn park_event(pool: &PgPool, aggregate_id: Uuid, version: i64) -> Uuid {
    sqlx::query_scalar(
        "insert into dead_letter_events (event_id, consumer_name, tenant_id, aggregate_id, \
                aggregate_type, event_type, sequence_number, envelope, error) \
         select id, 'projections-p0', tenant_id, aggregate_id, aggregate_type, event_type, \
                sequence_number, '{}'::jsonb, 'a projection failed: the test parked it' \
           from contact_event_store where aggregate_id = $1 and sequence_number = $2 \
         returning id",
    )
    .bind(aggregate_id)
    .bind(version)
    .fetch_one(pool)
    .await
    .expect("an event to park")
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
