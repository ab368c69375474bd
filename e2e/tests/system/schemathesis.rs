//! Hostile input, generated: schemathesis (from PyPI, installed by `scripts/ensure-tools.sh`)
//! runs thousands of generated requests against each service's own OpenAPI document, with the
//! API key and the ids of existing contacts and sessions mixed into the generated ones.
//!
//! From the HAR file it writes (every request and answer, counted here rather than trusted),
//! this test asserts: at least 5,000 requests in all, no 5xx, every 4xx an
//! `application/problem+json` problem, schemathesis's own conformance checks passed, and the
//! database changed only as the 2xx answers say: every event in the store is one a 2xx command
//! answered with (or the set-up's), its outbox row with it, and every idempotency row a 2xx
//! request's. The query service's run changes nothing at all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use e2e::process::ServiceProcess;
use e2e::traffic::wait_converged;
use e2e::{TestDb, TestSystem};
use serde_json::{json, Value};
use uuid::Uuid;

/// The schemathesis executable: `$SCHEMATHESIS`, or the one `scripts/ensure-tools.sh` installs.
fn schemathesis() -> PathBuf {
    let path = std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tools/venv/bin/schemathesis")
        });
    assert!(
        path.exists(),
        "schemathesis is not installed at {}: run scripts/ensure-tools.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// One request and its answer, from the HAR file.
#[derive(Debug)]
struct Exchange {
    method: String,
    url: String,
    request_headers: BTreeMap<String, String>,
    request_body: Option<String>,
    status: u16,
    content_type: Option<String>,
    body: String,
}

fn headers(list: &Value) -> BTreeMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| {
            Some((
                h["name"].as_str()?.to_ascii_lowercase(),
                h["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

fn read_har(path: &std::path::Path) -> Vec<Exchange> {
    let har: Value =
        serde_json::from_slice(&std::fs::read(path).expect("the HAR report")).expect("HAR is JSON");
    har["log"]["entries"]
        .as_array()
        .expect("HAR entries")
        .iter()
        .map(|e| {
            let response_headers = headers(&e["response"]["headers"]);
            Exchange {
                method: e["request"]["method"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                url: e["request"]["url"].as_str().unwrap_or_default().to_owned(),
                request_headers: headers(&e["request"]["headers"]),
                request_body: e["request"]["postData"]["text"].as_str().map(str::to_owned),
                status: e["response"]["status"].as_u64().unwrap_or(0) as u16,
                content_type: response_headers.get("content-type").cloned(),
                body: e["response"]["content"]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            }
        })
        .collect()
}

/// Runs schemathesis against one service; returns every exchange it had.
async fn run_schemathesis(
    name: &str,
    base_url: &str,
    api_key: &str,
    config: &str,
    max_examples: u32,
) -> Vec<Exchange> {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("schemathesis.toml");
    std::fs::write(&config_path, config).expect("config");
    let har = dir.path().join("report.har");
    let started = Instant::now();
    let mut child = tokio::process::Command::new(schemathesis())
        .arg("--config-file")
        .arg(&config_path)
        .arg("run")
        .arg(format!("{base_url}/openapi.json"))
        .args(["--url", base_url])
        .args(["-H", &format!("Authorization: Bearer {api_key}")])
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &max_examples.to_string()])
        // One worker: CPython 3.11 before 3.11.8 can fail parsing in threads ("AST constructor
        // recursion depth mismatch", inside hypothesis); generation is CPU-bound on 2 cores anyway.
        .args(["--workers", "1"])
        .args(["--seed", "20261126"])
        .args(["--request-timeout", "30"])
        // The change feed does not end (its own test reads it as a client does).
        .args(["--exclude-operation-id", "stream_changes"])
        .arg("--no-shrink")
        .args(["--output-sanitize", "false"])
        .args(["--report", "har"])
        .arg("--report-har-path")
        .arg(&har)
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("schemathesis starts");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read_all = |mut r: Box<dyn tokio::io::AsyncRead + Unpin + Send>| async move {
        let mut s = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut r, &mut s).await;
        s
    };
    let out = tokio::spawn(read_all(Box::new(stdout)));
    let err = tokio::spawn(read_all(Box::new(stderr)));
    let status = tokio::time::timeout(Duration::from_secs(480), child.wait())
        .await
        .unwrap_or_else(|_| panic!("schemathesis against {name} ran over 480 s"))
        .expect("schemathesis ran");
    let (out, err) = (out.await.unwrap(), err.await.unwrap());
    println!(
        "schemathesis against {name}: {:.0} s, exit {status}\n{out}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        status.success(),
        "schemathesis found failures against {name}:\n{out}\n{err}"
    );
    read_har(&har)
}

/// Per status class, for the report; and the problem+json / no-5xx assertions.
fn check_answers(name: &str, exchanges: &[Exchange]) -> BTreeMap<String, usize> {
    let mut classes = BTreeMap::new();
    for x in exchanges {
        *classes.entry(format!("{}xx", x.status / 100)).or_insert(0) += 1;
        assert!(
            x.status < 500,
            "{name}: {} {} answered {}: {}",
            x.method,
            x.url,
            x.status,
            x.body
        );
        if (400..500).contains(&x.status) {
            assert_eq!(
                x.content_type.as_deref(),
                Some("application/problem+json"),
                "{name}: {} {} answered {} without problem+json: {}",
                x.method,
                x.url,
                x.status,
                x.body
            );
            let problem: Value = serde_json::from_str(&x.body).unwrap_or(Value::Null);
            assert!(
                problem["type"].is_string()
                    && problem["title"].is_string()
                    && problem["detail"].is_string()
                    && problem["status"] == x.status,
                "{name}: {} {} answered {} with a body that is not a problem: {}",
                x.method,
                x.url,
                x.status,
                x.body
            );
        }
    }
    println!(
        "{name}: {} requests, by status class {classes:?}",
        exchanges.len()
    );
    classes
}

async fn ids(pool: &sqlx::PgPool, sql: &str) -> BTreeSet<Uuid> {
    sqlx::query_scalar(sql)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .collect()
}

/// Everything either service may write, as one fingerprint.
async fn fingerprint(pool: &sqlx::PgPool) -> String {
    let mut parts = Vec::new();
    for table in [
        "contact_event_store",
        "outbox_events",
        "contact_snapshots",
        "idempotency_keys",
        "contacts",
        "sessions",
        "domain_event_logs",
        "processed_events",
        "dead_letter_events",
    ] {
        let digest: Option<String> = sqlx::query_scalar(&format!(
            "select md5(string_agg(to_jsonb(t)::text, ',' order by to_jsonb(t)::text)) from {table} t"
        ))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{table}: {e}"));
        parts.push(format!("{table}={}", digest.unwrap_or_default()));
    }
    parts.join(" ")
}

fn config(project: Uuid, contacts: &[Uuid], sessions: &[Uuid], aggregates: &[Uuid]) -> String {
    let list = |ids: &[Uuid]| {
        ids.iter()
            .map(|id| format!("\"{id}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"
[parameters]
# Every generated request names the test's project; the ids below are mixed into the generated
# ones, so requests reach existing aggregates as well as missing ones.
"path.project_id" = "{project}"
"path.contact_id" = {{ dictionary = "contacts", probability = 0.5 }}
"path.session_id" = {{ dictionary = "sessions", probability = 0.5 }}
"query.aggregate_id" = {{ dictionary = "aggregates", probability = 0.3 }}
"query.cursor" = {{ dictionary = "aggregates", probability = 0.3 }}
# A read with min_version waits up to wait_ms (30 s at most) for a version that may never come:
# keep the generated waits short so the run stays bounded (the waiting itself is tested in
# hostile::a_min_version_the_store_does_not_hold_is_404_after_the_wait_or_at_once_when_far).
"query.wait_ms" = {{ dictionary = "waits", probability = 1.0 }}

[checks.positive_data_acceptance]
# Schema-valid requests may still be refused with two documented answers that JSON Schema cannot
# express: 412 (If-Match names a version the aggregate is no longer, or not yet, at) and 422 (the
# field rules of API.md that depend on state or on parsing: a known channel type, e-mail syntax,
# E.164 phones, a name that is not blank once trimmed, an Idempotency-Key reused with another
# body). 400 is not accepted here: a schema-valid request must never be "malformed".
expected-statuses = ["2xx", "401", "403", "404", "409", "412", "422"]

[dictionaries.contacts]
values = [{contacts}]

[dictionaries.sessions]
values = [{sessions}]

[dictionaries.waits]
values = [0, 1, 20]

[dictionaries.aggregates]
values = [{aggregates}]
"#,
        contacts = list(contacts),
        sessions = list(sessions),
        aggregates = list(aggregates),
    )
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_rejected_requests_write_nothing() {
    let executable = schemathesis();
    let started = Instant::now();
    // The real binaries (as in production, and without the test harness's in-memory span
    // exporter, which would keep every span of thousands of requests).
    let db = TestDb::new().await;
    // On a broker that checks logins and TLS, as `deploy/` runs it.
    let broker = e2e::SecuredBroker::start(2).await;
    let stream = &broker.stream;
    let tenant = TestSystem::bootstrap_tenant(&db.pool, "tenant-a").await;
    let settings = vec![
        ("RELAY_POLL_MS", "100".to_owned()),
        // The sweeper writes events no request answered with: keep it out of this test.
        ("SWEEP_INTERVAL_MS", "3600000".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let command_env = [stream.command_env(&db.url), settings.clone()].concat();
    let query_env = [stream.projection_env(&db.url), settings].concat();
    let command = ServiceProcess::start("command-service", "COMMAND_ADDR", &command_env).await;
    let query = ServiceProcess::start("projection-service", "QUERY_ADDR", &query_env).await;
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let request = http
            .post(format!(
                "{}/v1/projects/{}{path}",
                command.url(),
                tenant.project_id
            ))
            .bearer_auth(&tenant.api_key)
            .json(&body)
            .send();
        async move {
            let answer = request.await.expect("request");
            assert!(answer.status().is_success(), "{path}: {}", answer.status());
            answer.json::<Value>().await.expect("JSON")
        }
    };
    println!("schemathesis: {}", executable.display());

    let mut acknowledged: BTreeSet<Uuid> = BTreeSet::new();
    let mut keep = |body: &Value| {
        for id in body["event_ids"].as_array().into_iter().flatten() {
            acknowledged.insert(Uuid::parse_str(id.as_str().unwrap()).unwrap());
        }
    };
    // Data for the generated requests to hit: contacts, each with a session (a generated DELETE
    // ends one contact's life early; the others carry on).
    let mut contacts = Vec::new();
    let mut sessions = Vec::new();
    for name in ["Ada", "Grace", "Edsger", "Barbara"] {
        let created = post(
            "/contacts".into(),
            json!({"name": name, "email": format!("{name}@example.com"), "tags": ["vip"]}),
        )
        .await;
        keep(&created);
        let contact = Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();
        contacts.push(contact);
        let inbound = post(
            format!("/contacts/{contact}/messages"),
            json!({"channel_type_id": 1, "from_contact": true}),
        )
        .await;
        keep(&inbound);
        sessions.push(Uuid::parse_str(inbound["session_id"].as_str().unwrap()).unwrap());
    }
    wait_converged(&db.pool, Duration::from_secs(30)).await;
    let aggregates: Vec<Uuid> = contacts.iter().chain(&sessions).copied().collect();

    // The command service.
    let commands = run_schemathesis(
        "command-service",
        &command.url(),
        &tenant.api_key,
        &config(tenant.project_id, &contacts, &sessions, &aggregates),
        170,
    )
    .await;
    let command_classes = check_answers("command-service", &commands);

    // Every stored event was answered to a client with a 2xx, and nothing else was written.
    let mut idempotency_keys = BTreeSet::new();
    for x in commands.iter().filter(|x| (200..300).contains(&x.status)) {
        if let Ok(body) = serde_json::from_str::<Value>(&x.body) {
            keep(&body);
        }
        if let Some(key) = x.request_headers.get("idempotency-key") {
            idempotency_keys.insert(key.trim().to_owned());
        }
    }
    // A change of keys or members answers with the key or member, not with event ids: its
    // event on the project's stream is checked by count, one per 2xx of its route.
    let mut changes: BTreeMap<&str, usize> = BTreeMap::new();
    for x in commands.iter().filter(|x| (200..300).contains(&x.status)) {
        let path = x.url.split('?').next().unwrap_or_default();
        let kind = match (
            x.method.as_str(),
            path.rsplit('/').nth(1),
            path.ends_with("/api-keys"),
        ) {
            ("POST", _, true) => "project.api_key_created",
            ("DELETE", Some("api-keys"), _) => "project.api_key_revoked",
            ("PUT", Some("members"), _) => "project.member_role_set",
            ("DELETE", Some("members"), _) => "project.member_removed",
            _ => continue,
        };
        *changes.entry(kind).or_default() += 1;
    }
    let recorded_changes: Vec<(String, i64)> = sqlx::query_as(
        "select event_type, count(*) from contact_event_store
          where aggregate_type = 'project' group by event_type order by event_type",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        recorded_changes
            .iter()
            .map(|(t, n)| (t.as_str(), *n as usize))
            .collect::<BTreeMap<_, _>>(),
        changes,
        "one project event per 2xx change of keys or members, none for a rejected one"
    );
    let all_stored = e2e::db::stored_event_ids(&db.pool).await.len();
    let stored: BTreeSet<Uuid> = ids(
        &db.pool,
        "select id from contact_event_store where aggregate_type <> 'project'",
    )
    .await;
    let unanswered: Vec<_> = stored.difference(&acknowledged).collect();
    assert!(
        unanswered.is_empty(),
        "{} stored events no 2xx answered for (a rejected request wrote them): {unanswered:?}",
        unanswered.len()
    );
    let missing: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "2xx answers named events that are not stored: {missing:?}"
    );
    // The relay deletes what it published: once it is done, the stream holds one message per
    // stored event, and a rejected request queued none.
    wait_converged(&db.pool, Duration::from_secs(30)).await;
    assert_eq!(
        ids(&db.pool, "select event_id from outbox_events").await,
        BTreeSet::new(),
        "an outbox row left behind, or one for a rejected request"
    );
    assert_eq!(
        e2e::traffic::stream_messages(&stream.url, &stream.auth(e2e::Login::Admin), &stream.name)
            .await,
        all_stored as u64,
        "one message per stored event, none for a rejected request"
    );
    let recorded: Vec<(String, Value)> =
        sqlx::query_as("select idempotency_key, response_body from idempotency_keys")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    for (key, body) in &recorded {
        assert!(
            idempotency_keys.contains(key.trim()),
            "idempotency row {key:?} belongs to no 2xx request"
        );
        for id in body["event_ids"].as_array().into_iter().flatten() {
            let id = Uuid::parse_str(id.as_str().unwrap()).unwrap();
            assert!(
                acknowledged.contains(&id),
                "idempotency row {key:?} names {id}"
            );
        }
    }
    let bodies_written = commands.iter().filter(|x| x.request_body.is_some()).count();
    println!(
        "command-service: {} events stored, all answered by a 2xx ({} requests carried a body); {} idempotency rows",
        stored.len(),
        bodies_written,
        recorded.len()
    );

    // The query service, once the read tables have caught up: it writes nothing at all.
    wait_converged(&db.pool, Duration::from_secs(60)).await;
    let before = fingerprint(&db.pool).await;
    let queries = run_schemathesis(
        "projection-service",
        &query.url(),
        &tenant.api_key,
        &config(tenant.project_id, &contacts, &sessions, &aggregates),
        250,
    )
    .await;
    let query_classes = check_answers("projection-service", &queries);
    assert_eq!(
        fingerprint(&db.pool).await,
        before,
        "the query service's requests changed the database"
    );

    let total = commands.len() + queries.len();
    println!(
        "schemathesis: {total} requests in all (command-service {} {command_classes:?}, projection-service {} {query_classes:?}), 0 5xx, {:.0} s",
        commands.len(),
        queries.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(total >= 5_000, "only {total} requests were generated");
}
