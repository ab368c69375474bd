//! PostgreSQL high availability, on a real primary and its synchronous streaming standby
//! (`e2e::postgres::ReplicatedPostgres`): queries served by the standby, and a crash of the
//! primary followed by the standby's promotion under command traffic, ridden out by the running
//! services (the real binaries) through libpq-style multi-host URLs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::postgres::ReplicatedPostgres;
use e2e::process::ServiceProcess;
use e2e::traffic::{assert_end_state, stream_messages, wait_converged, Traffic};
use e2e::{Login, SecuredBroker, TestDb, TestSystem};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::time::Instant;

/// How long the standby's replay is held back in the replica test: longer than a projection
/// batch takes, so a read that does not wait sees the replica behind.
const APPLY_DELAY: Duration = Duration::from_millis(800);

/// The services' database settings over both servers: every login's URL names the primary and
/// then the standby, and asks for the one that takes writes.
fn both_hosts_env(pair: &ReplicatedPostgres, db: &TestDb) -> Vec<(&'static str, String)> {
    vec![
        (
            "MIGRATION_DATABASE_URL",
            pair.url("postgres", &db.name, "read-write"),
        ),
        (
            "DATABASE_URL",
            pair.url("ventros_app", &db.name, "read-write"),
        ),
        (
            "SYSTEM_DATABASE_URL",
            pair.url("ventros_projector", &db.name, "read-write"),
        ),
        ("RELAY_POLL_MS", "100".to_owned()),
    ]
}

/// Both services, as processes, with `env` over their usual settings.
async fn start_services(
    stream: &e2e::TestStream,
    db: &TestDb,
    env: &[(&'static str, String)],
) -> (ServiceProcess, ServiceProcess) {
    let command = ServiceProcess::start(
        "command-service",
        "COMMAND_ADDR",
        &[stream.command_env(&db.url), env.to_vec()].concat(),
    )
    .await;
    let query = ServiceProcess::start(
        "projection-service",
        "QUERY_ADDR",
        &[stream.projection_env(&db.url), env.to_vec()].concat(),
    )
    .await;
    (command, query)
}

fn http(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

#[tokio::test]
async fn queries_read_a_lagging_streaming_replica_and_min_version_waits_for_it() {
    let pair = ReplicatedPostgres::start(Some(APPLY_DELAY)).await;
    let db = TestDb::on(&pair.primary.url()).await;
    let broker = SecuredBroker::start(2).await;
    let stream = &broker.stream;
    let tenant = TestSystem::bootstrap_tenant(&db.pool, "tenant-a").await;
    // The lag under test is the commands', not the set-up's: the database, its schema and the
    // tenant are on the replica before it is asked anything.
    pair.wait_for_replay().await;
    let mut env = both_hosts_env(&pair, &db);
    env.push((
        "QUERY_DATABASE_URL",
        format!(
            "postgres://ventros_app@127.0.0.1:{}/{}?application_name=ventros_query_replica",
            pair.standby.port, db.name
        ),
    ));
    let (command, query) = start_services(stream, &db, &env).await;
    let http = http(Duration::from_secs(20));
    let contacts = format!("/v1/projects/{}/contacts", tenant.project_id);

    // A key made a moment ago is not on the lagging replica yet: the reads find it anyway.
    let made: Value = http
        .post(format!(
            "{}/v1/projects/{}/api-keys",
            command.url(),
            tenant.project_id
        ))
        .bearer_auth(&tenant.api_key)
        .json(&json!({"name": "reader", "role": "viewer"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reader = made["secret"].as_str().expect("a secret").to_owned();

    let mut behind = 0;
    for i in 0..8 {
        let created = http
            .post(format!("{}{contacts}", command.url()))
            .bearer_auth(&tenant.api_key)
            .json(&json!({"name": format!("replica-{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let id = created.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        // Without min_version the replica answers what it has replayed: most likely nothing yet.
        let plain = http
            .get(format!("{}{contacts}/{id}", query.url()))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap();
        assert!(
            plain.status() == StatusCode::OK || plain.status() == StatusCode::NOT_FOUND,
            "{plain:?}\nprojection-service's log:\n{}",
            query.log()
        );
        if plain.status() == StatusCode::NOT_FOUND {
            behind += 1;
        }
        let renamed = http
            .patch(format!("{}{contacts}/{id}", command.url()))
            .bearer_auth(&tenant.api_key)
            .json(&json!({"name": format!("replica-{i}-renamed")}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            renamed.status(),
            StatusCode::OK,
            "{:?}",
            renamed.text().await
        );
        // min_version: the version the primary holds, waited for on the replica, never 404.
        for (version, name) in [
            (1, format!("replica-{i}")),
            (2, format!("replica-{i}-renamed")),
        ] {
            let started = Instant::now();
            let read = http
                .get(format!(
                    "{}{contacts}/{id}?min_version={version}&wait_ms=10000",
                    query.url()
                ))
                .bearer_auth(&reader)
                .send()
                .await
                .unwrap();
            assert_eq!(
                read.status(),
                StatusCode::OK,
                "version {version} of contact {i}: {:?}",
                read.text().await
            );
            let body: Value = read.json().await.unwrap();
            assert!(body["version"].as_i64().unwrap() >= version, "{body}");
            if version == 2 {
                assert_eq!(body["name"], name.as_str(), "{body}");
            }
            println!(
                "contact {i} version {version}: read after {:?}",
                started.elapsed()
            );
        }
    }
    assert!(
        behind > 0,
        "the replica was never seen behind: the test would not show that min_version waits for it"
    );
    let on_standby: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_activity where application_name = 'ventros_query_replica'",
    )
    .fetch_one(
        &sqlx::PgPool::connect(&format!("{}/{}", pair.standby.url(), db.name))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(
        on_standby > 0,
        "the queries ran on the standby's connections"
    );
    println!("{behind} of 8 fresh contacts not yet on the replica without min_version");
}

#[tokio::test]
async fn a_primary_crash_and_the_standbys_promotion_lose_no_acknowledged_command() {
    failover(false).await;
}

#[tokio::test]
async fn reads_from_both_hosts_keep_answering_through_a_failover() {
    failover(true).await;
}

/// Four clients of commands; the primary stopped like a crash; the standby promoted. Commands
/// answer 503 with `Retry-After` while no host takes writes, succeed again without a restart,
/// and the end state is the fault suite's: every acknowledged command stored once, every event
/// applied once, the read tables equal to a rebuild. With `reads_on_both`, projection-service
/// reads `prefer-standby` over both hosts and a reader checks that every read is answered.
async fn failover(reads_on_both: bool) {
    let pair = ReplicatedPostgres::start(None).await;
    let db = TestDb::on(&pair.primary.url()).await;
    let broker = SecuredBroker::start(2).await;
    let stream = &broker.stream;
    let tenant = TestSystem::bootstrap_tenant(&db.pool, "tenant-a").await;
    pair.wait_for_replay().await;
    let mut env = both_hosts_env(&pair, &db);
    if reads_on_both {
        env.push((
            "QUERY_DATABASE_URL",
            pair.url("ventros_app", &db.name, "prefer-standby"),
        ));
    }
    let (command, query) = start_services(stream, &db, &env).await;
    let http = http(Duration::from_secs(15));
    let contacts = format!("/v1/projects/{}/contacts", tenant.project_id);
    let create = |name: &str| {
        http.post(format!("{}{contacts}", command.url()))
            .bearer_auth(&tenant.api_key)
            .json(&json!({ "name": name }))
            .send()
    };
    let known = create("known before the crash").await.unwrap();
    assert_eq!(known.status(), StatusCode::CREATED);
    let known = known.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reads = reads_on_both.then(|| {
        Reader::start(
            format!(
                "{}{contacts}/{known}?min_version=1&wait_ms=10000",
                query.url()
            ),
            tenant.api_key.clone(),
        )
    });
    let mut traffic = Traffic::start(vec![command.url()], tenant.clone(), 4);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = traffic.acknowledged_commands();
    assert!(before > 0, "commands went through before the crash");

    pair.primary.stop();
    let crashed = Instant::now();
    // No host takes writes: a command is refused, as a problem with Retry-After, and stores
    // nothing (checked at the end).
    let refused = create("refused during the outage").await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    assert!(
        refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let down_for = Duration::from_secs(3).saturating_sub(crashed.elapsed());
    tokio::time::sleep(down_for).await;

    pair.promote_standby().await;
    let promoted = Instant::now();
    let back_after = loop {
        if let Ok(answer) = create("first after the promotion").await {
            if answer.status() == StatusCode::CREATED {
                break promoted.elapsed();
            }
        }
        assert!(
            promoted.elapsed() < Duration::from_secs(30),
            "commands did not succeed within 30 s of the promotion"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let during = traffic.acknowledged_commands();
    tokio::time::sleep(Duration::from_secs(3)).await;
    traffic.stop().await;
    assert!(
        traffic.acknowledged_commands() > during,
        "the clients' commands went through again after the promotion"
    );

    let ready: Value = http
        .get(format!("{}/readyz", command.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["database_host"],
        format!("127.0.0.1:{}", pair.standby.port),
        "{ready}"
    );
    assert_eq!(ready["database_primary"], true, "{ready}");

    let new_primary = sqlx::PgPool::connect(&format!("{}/{}", pair.standby.url(), db.name))
        .await
        .unwrap();
    wait_converged(&new_primary, Duration::from_secs(90)).await;
    let counts = assert_end_state(&new_primary, &stream.keys(), &traffic).await;
    assert_eq!(
        stream_messages(&stream.url, &stream.auth(Login::Admin), &stream.name).await as usize,
        counts.stored,
        "each event in the stream exactly once"
    );
    let refused_stored: i64 = sqlx::query_scalar(
        "select count(*) from contacts where name = 'refused during the outage'",
    )
    .fetch_one(&new_primary)
    .await
    .unwrap();
    assert_eq!(refused_stored, 0, "the refused command stored nothing");

    // The operator's check, as the operator runs it: over both hosts.
    let over_both = pair.url("postgres", &db.name, "read-write");
    let verify = std::process::Command::new(e2e::process::binary("replay-tool"))
        .args(["verify", "--json"])
        .envs(stream.service_env(&db.url))
        .env("DATABASE_URL", &over_both)
        .env("MIGRATION_DATABASE_URL", &over_both)
        .env("SYSTEM_DATABASE_URL", &over_both)
        .output()
        .expect("replay-tool");
    assert!(
        verify.status.success(),
        "replay-tool verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    if let Some(reads) = reads {
        let (answered, failures) = reads.stop().await;
        assert!(
            answered > 20,
            "the reader read throughout: {answered} reads"
        );
        assert!(
            failures.is_empty(),
            "reads failed during the failover ({answered} answered): {failures:?}"
        );
        println!("{answered} reads answered through the failover, none failed");
    }
    println!(
        "failover: back {back_after:.1?} after the promotion ({:.1?} after the crash); {counts}",
        crashed.elapsed().saturating_sub(promoted.elapsed()) + back_after
    );
}

/// A client that reads one contact in a loop and keeps every answer that was not 200.
struct Reader {
    running: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Reader {
    fn start(url: String, key: String) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let answered = Arc::new(AtomicUsize::new(0));
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, a, f) = (running.clone(), answered.clone(), failures.clone());
        let task = tokio::spawn(async move {
            let http = http(Duration::from_secs(10));
            while r.load(Ordering::SeqCst) {
                match http.get(&url).bearer_auth(&key).send().await {
                    Ok(answer) if answer.status() == StatusCode::OK => {
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(answer) => {
                        let status = answer.status();
                        let body = answer.text().await.unwrap_or_default();
                        f.lock().unwrap().push(format!("{status}: {body}"));
                    }
                    Err(e) => f.lock().unwrap().push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self {
            running,
            answered,
            failures,
            task,
        }
    }

    async fn stop(self) -> (usize, Vec<String>) {
        self.running.store(false, Ordering::SeqCst);
        self.task.await.expect("the reader");
        (
            self.answered.load(Ordering::SeqCst),
            self.failures.lock().unwrap().clone(),
        )
    }
}
