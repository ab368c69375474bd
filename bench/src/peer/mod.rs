//! Baseline (d), the peer: a bank-account service built on `cqrs-es` and `postgres-es` the way
//! their reference application, cqrs-demo, is built, so that the whole pipeline can be measured
//! beside what a user of the peer stack gets out of the box.
//!
//! What it keeps of cqrs-demo, because that is what a command costs there: an event-sourced
//! aggregate loaded from all its events on every command (`postgres_cqrs`, no snapshots, so the
//! event list grows with every deposit); events and metadata (time, URI, user agent) stored as
//! JSON in one `events` table; a `GenericQuery` over a `PostgresViewRepository` that loads,
//! updates and saves the account's view (with its growing ledger) inside the command's request;
//! `POST /account/{id}` taking the command as externally tagged JSON and answering 204, or 400
//! with the error; `GET /account/{id}` the view. What it leaves out: the demo's second query,
//! which pretty-prints every event to stdout (a debugging aid; here it would write into the
//! benchmark's table). The ATM and cheque services are happy-path no-ops, as in the demo. The
//! pool has as many connections as each of our services gets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cqrs_es::persist::{GenericQuery, ViewRepository};
use cqrs_es::Query;
use postgres_es::{PostgresCqrs, PostgresViewRepository};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::workload::{self, Client, Visible};

mod domain;

pub use domain::{BankAccount, BankAccountCommand, BankAccountView, HappyPathServices};

/// The tables of cqrs-demo's `db/init.sql` and postgres-es' (the snapshot table is unused by
/// an event-sourced store, but the demo creates it).
const SCHEMA: [&str; 3] = [
    "create table events (
        aggregate_type text not null,
        aggregate_id text not null,
        sequence bigint check (sequence >= 0) not null,
        event_type text not null,
        event_version text not null,
        payload json not null,
        metadata json not null,
        primary key (aggregate_type, aggregate_id, sequence))",
    "create table snapshots (
        aggregate_type text not null,
        aggregate_id text not null,
        last_sequence bigint check (last_sequence >= 0) not null,
        current_snapshot bigint check (current_snapshot >= 0) not null,
        payload json not null,
        primary key (aggregate_type, aggregate_id, last_sequence))",
    "create table account_query (
        view_id text not null,
        version bigint check (version >= 0) not null,
        payload json not null,
        primary key (view_id))",
];

type AccountViews = PostgresViewRepository<BankAccountView, BankAccount>;

#[derive(Clone)]
struct PeerState {
    cqrs: Arc<PostgresCqrs<BankAccount>>,
    views: Arc<AccountViews>,
}

/// The peer server, running in this process until dropped or stopped.
pub struct PeerServer {
    pub url: String,
    /// Views the query failed to store (the demo logs these and answers 204 all the same, so a
    /// run must show them: a baseline that skips its view would be cheaper than it is).
    pub view_failures: Arc<AtomicU64>,
    pool: PgPool,
    serving: Option<e2e::service::Running>,
}

impl PeerServer {
    /// Creates the peer's tables in `database_url` (an empty database of the bench's own) and
    /// serves on a free port with a pool of `connections`, on a runtime of its own with
    /// `threads` worker threads when given (as ours is, see [`e2e::Options::service_threads`]).
    pub async fn start(
        database_url: &str,
        connections: u32,
        threads: Option<usize>,
    ) -> anyhow::Result<Self> {
        let view_failures = Arc::new(AtomicU64::new(0));
        let (pool_tx, pool_rx) = tokio::sync::oneshot::channel();
        let (database_url, failures) = (database_url.to_owned(), view_failures.clone());
        let (addr, serving) = e2e::service::launch(threads, async move {
            let (pool, router) = Self::build(&database_url, connections, failures)
                .await
                .expect("the peer's pool, schema and routes");
            let _ = pool_tx.send(pool.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("the peer's listener");
            let addr = listener.local_addr().expect("the peer's address");
            let token = CancellationToken::new();
            let shutdown = token.clone().cancelled_owned();
            let serve = async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await;
                // Closed here, on the runtime its connections belong to, before that shuts down.
                pool.close().await;
                Ok(served?)
            };
            e2e::service::Started {
                addr: addr.to_string(),
                token,
                serve: Box::pin(serve),
            }
        })
        .await;
        Ok(Self {
            url: format!("http://{addr}"),
            view_failures,
            pool: pool_rx.await?,
            serving: Some(serving),
        })
    }

    async fn build(
        database_url: &str,
        connections: u32,
        failures: Arc<AtomicU64>,
    ) -> anyhow::Result<(PgPool, Router)> {
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .connect(database_url)
            .await?;
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await?;
        }
        let views = Arc::new(AccountViews::new("account_query", pool.clone()));
        let mut account_query: GenericQuery<AccountViews, BankAccountView, BankAccount> =
            GenericQuery::new(views.clone());
        account_query.use_error_handler(Box::new(move |e| {
            failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "peer: the account view was not stored");
        }));
        let queries: Vec<Box<dyn Query<BankAccount>>> = vec![Box::new(account_query)];
        let cqrs = Arc::new(postgres_es::postgres_cqrs(
            pool.clone(),
            queries,
            HappyPathServices,
        ));
        let router = Router::new()
            .route("/account/{account_id}", get(read_view).post(run_command))
            .with_state(PeerState { cqrs, views });
        Ok((pool, router))
    }

    /// Opens `n` accounts over HTTP (8 at a time) and returns their ids.
    pub async fn open_accounts(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let http = workload::http_client();
        let ids: Vec<String> = (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        for chunk in ids.chunks(8) {
            let opened = chunk.iter().map(|id| {
                let http = &http;
                async move {
                    let command = BankAccountCommand::OpenAccount {
                        account_id: id.clone(),
                    };
                    send(http, &self.url, id, &command).await
                }
            });
            futures::future::try_join_all(opened).await?;
        }
        sqlx::query("vacuum analyze").execute(&self.pool).await?;
        Ok(ids)
    }

    /// Stops serving; the pool is closed as serving ends (before the database is dropped).
    pub async fn stop(mut self) {
        if let Some(serving) = self.serving.take() {
            serving.stop().await;
        }
    }
}

/// The command with the metadata cqrs-demo attaches to it: the time, the URI, the user agent.
struct CommandWithMetadata(HashMap<String, String>, BankAccountCommand);

impl<S: Send + Sync> FromRequest<S> for CommandWithMetadata {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let mut metadata = HashMap::new();
        metadata.insert("time".to_owned(), chrono::Utc::now().to_rfc3339());
        metadata.insert("uri".to_owned(), request.uri().to_string());
        if let Some(agent) = request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            metadata.insert("User-Agent".to_owned(), agent.to_owned());
        }
        let bad = || (StatusCode::BAD_REQUEST, "command could not be read").into_response();
        let body = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|_| bad())?;
        let command = serde_json::from_slice(&body).map_err(|_| bad())?;
        Ok(Self(metadata, command))
    }
}

async fn run_command(
    Path(account_id): Path<String>,
    State(state): State<PeerState>,
    CommandWithMetadata(metadata, command): CommandWithMetadata,
) -> Response {
    match state
        .cqrs
        .execute_with_metadata(&account_id, command, metadata)
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn read_view(Path(account_id): Path<String>, State(state): State<PeerState>) -> Response {
    match state.views.load(&account_id).await {
        Ok(Some(view)) => Json(view).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn send(
    http: &reqwest::Client,
    base: &str,
    account_id: &str,
    command: &BankAccountCommand,
) -> anyhow::Result<()> {
    let response = http
        .post(format!("{base}/account/{account_id}"))
        .json(command)
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!("POST /account/{account_id}: {status} {body}");
    }
    Ok(())
}

/// One client of the peer's load: deposits, round robin over its own share of the accounts
/// (no two clients touch one account, so no command fails on a concurrent append).
pub struct Depositor {
    http: reqwest::Client,
    base: String,
    accounts: Vec<String>,
    next: usize,
}

impl Depositor {
    /// The clients of a run: client `c` of `clients` takes every account `i` with
    /// `i % clients == c`.
    pub fn clients(url: &str, accounts: &[String], clients: usize) -> Vec<Self> {
        let http = workload::http_client();
        (0..clients)
            .map(|c| Self {
                http: http.clone(),
                base: url.to_owned(),
                accounts: accounts.iter().skip(c).step_by(clients).cloned().collect(),
                next: 0,
            })
            .collect()
    }
}

impl Client for Depositor {
    async fn send_next(&mut self) -> anyhow::Result<Option<Visible>> {
        let account = &self.accounts[self.next % self.accounts.len()];
        self.next += 1;
        let command = BankAccountCommand::DepositMoney { amount: 1000.0 };
        send(&self.http, &self.base, account, &command).await?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The baseline does its real work: each deposit is stored and shows in the view the GET
    /// serves, and a refused command is a 400 (which the load generator counts as an error).
    #[tokio::test]
    async fn the_peer_stores_deposits_and_serves_the_view() {
        let db = e2e::TestDb::new().await;
        let peer = PeerServer::start(&db.url, 4, None).await.expect("peer");
        let accounts = peer.open_accounts(1).await.expect("open");
        let id = &accounts[0];
        let mut client = Depositor::clients(&peer.url, &accounts, 1).remove(0);
        client.send_next().await.expect("first deposit");
        client.send_next().await.expect("second deposit");
        let http = workload::http_client();
        let refused = send(
            &http,
            &peer.url,
            id,
            &BankAccountCommand::WithdrawMoney {
                amount: 5_000.0,
                atm_id: "ATM-1".into(),
            },
        )
        .await;
        assert!(
            refused.is_err_and(|e| e.to_string().contains("400")),
            "an overdraft is refused with 400"
        );

        let view: serde_json::Value = http
            .get(format!("{}/account/{id}", peer.url))
            .send()
            .await
            .expect("GET")
            .error_for_status()
            .expect("200")
            .json()
            .await
            .expect("view");
        assert_eq!(view["account_id"], id.as_str());
        assert_eq!(view["balance"], 2000.0);
        assert_eq!(view["ledger"].as_array().map(Vec::len), Some(2));
        let stored: i64 = sqlx::query_scalar("select count(*) from events where aggregate_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .expect("count");
        assert_eq!(stored, 3, "opened and two deposits");
        assert_eq!(peer.view_failures.load(Ordering::Relaxed), 0);
        peer.stop().await;
    }
}
