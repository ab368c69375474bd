//! What the services publish, checked with tools no one here wrote, as an integrator would:
//! each service's `/openapi.json` is valid OpenAPI 3.1 (`openapi-spec-validator`), a Python
//! client generated from it (`openapi-python-client`) runs the README's walk-through, and each
//! `/metrics` passes `promtool check metrics` after traffic.
//!
//! The tools come from `scripts/ensure-tools.sh` (PyPI tools pinned in `target/tools/venv`,
//! promtool from Debian's `prometheus` package). A missing tool fails the test with what to run:
//! a skipped conformance test would say nothing. The operation-id checks below need no tool, so a
//! duplicate id is caught even where Python is absent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use e2e::process::ProcessSystem;
use e2e::traffic::wait_converged;
use e2e::{Tenant, TestSystem};
use reqwest::Method;
use serde_json::{json, Value};

/// Every operation of command-service and its id. Client generators name their functions after
/// these ids, so they are part of the API: renaming one breaks every generated client.
const COMMAND_OPERATION_IDS: [(&str, &str); 22] = [
    ("POST /v1/projects/{project_id}/contacts", "create_contact"),
    (
        "PATCH /v1/projects/{project_id}/contacts/{contact_id}",
        "update_contact",
    ),
    (
        "DELETE /v1/projects/{project_id}/contacts/{contact_id}",
        "delete_contact",
    ),
    (
        "POST /v1/projects/{project_id}/contacts/{contact_id}/forget",
        "forget_contact",
    ),
    (
        "POST /v1/projects/{project_id}/contacts/{contact_id}/tags",
        "add_contact_tag",
    ),
    (
        "DELETE /v1/projects/{project_id}/contacts/{contact_id}/tags/{tag}",
        "remove_contact_tag",
    ),
    (
        "PUT /v1/projects/{project_id}/contacts/{contact_id}/profile-picture",
        "set_contact_profile_picture",
    ),
    (
        "POST /v1/projects/{project_id}/contacts/{contact_id}/messages",
        "record_contact_message",
    ),
    (
        "POST /v1/projects/{project_id}/contacts/{contact_id}/sessions",
        "start_contact_session",
    ),
    (
        "POST /v1/projects/{project_id}/sessions/{session_id}/messages",
        "record_session_message",
    ),
    (
        "POST /v1/projects/{project_id}/sessions/{session_id}/agents",
        "assign_session_agent",
    ),
    (
        "PUT /v1/projects/{project_id}/sessions/{session_id}/summary",
        "summarize_session",
    ),
    (
        "PUT /v1/projects/{project_id}/sessions/{session_id}/outcome",
        "set_session_outcome",
    ),
    (
        "POST /v1/projects/{project_id}/sessions/{session_id}/end",
        "end_session",
    ),
    ("POST /v1/projects/{project_id}/api-keys", "create_api_key"),
    (
        "DELETE /v1/projects/{project_id}/api-keys/{key_id}",
        "revoke_api_key",
    ),
    (
        "PUT /v1/projects/{project_id}/members/{user_id}",
        "set_member",
    ),
    (
        "DELETE /v1/projects/{project_id}/members/{user_id}",
        "remove_member",
    ),
    ("POST /v1/projects/{project_id}/webhooks", "create_webhook"),
    (
        "PATCH /v1/projects/{project_id}/webhooks/{webhook_id}",
        "update_webhook",
    ),
    (
        "DELETE /v1/projects/{project_id}/webhooks/{webhook_id}",
        "delete_webhook",
    ),
    (
        "POST /v1/projects/{project_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
        "retry_webhook_delivery",
    ),
];

/// Every operation of projection-service and its id.
const QUERY_OPERATION_IDS: [(&str, &str); 20] = [
    ("GET /v1/projects/{project_id}/contacts", "list_contacts"),
    (
        "GET /v1/projects/{project_id}/contacts/{contact_id}",
        "get_contact",
    ),
    (
        "GET /v1/projects/{project_id}/contacts/{contact_id}/sessions",
        "list_contact_sessions",
    ),
    (
        "GET /v1/projects/{project_id}/contacts/{contact_id}/events",
        "list_contact_events",
    ),
    ("GET /v1/projects/{project_id}/sessions", "list_sessions"),
    (
        "GET /v1/projects/{project_id}/sessions/{session_id}",
        "get_session",
    ),
    ("GET /v1/projects/{project_id}/event-log", "list_event_log"),
    (
        "GET /v1/projects/{project_id}/contacts/{contact_id}/messages",
        "list_contact_messages",
    ),
    (
        "GET /v1/projects/{project_id}/sessions/{session_id}/messages",
        "list_session_messages",
    ),
    ("GET /v1/projects/{project_id}/messages", "search_messages"),
    ("GET /v1/projects/{project_id}/api-keys", "list_api_keys"),
    ("GET /v1/projects/{project_id}/members", "list_members"),
    ("GET /v1/projects/{project_id}/webhooks", "list_webhooks"),
    ("GET /v1/projects/{project_id}/changes", "stream_changes"),
    (
        "GET /v1/projects/{project_id}/webhooks/{webhook_id}",
        "get_webhook",
    ),
    (
        "GET /v1/projects/{project_id}/webhooks/{webhook_id}/deliveries",
        "list_webhook_deliveries",
    ),
    ("GET /v1/projects/{project_id}/me", "get_caller"),
    ("GET /v1/projects/{project_id}/ops/pipeline", "get_pipeline"),
    (
        "GET /v1/projects/{project_id}/ops/dead-letters",
        "list_parked_events",
    ),
    (
        "POST /v1/projects/{project_id}/ops/dead-letters/{dead_letter_id}/retry",
        "retry_parked_event",
    ),
];

/// The operations both services serve.
const SHARED_OPERATION_IDS: [(&str, &str); 5] = [
    ("GET /healthz", "check_liveness"),
    ("GET /readyz", "check_readiness"),
    ("GET /metrics", "get_metrics"),
    ("GET /openapi.json", "get_openapi_document"),
    ("GET /docs", "get_docs_page"),
];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every operation of a document (`METHOD /path`) and its `operationId`, if it has one.
fn operations(doc: &Value) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                found.push((
                    format!("{} {path}", method.to_uppercase()),
                    operation["operationId"].as_str().map(str::to_owned),
                ));
            }
        }
    }
    found
}

/// Each operation has an id, and no two share one (the check a generator makes, without the
/// generator): returns the ids by route.
fn unique_operation_ids(service: &str, doc: &Value) -> BTreeMap<String, String> {
    let mut routes_by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for (route, id) in operations(doc) {
        let id = id.unwrap_or_else(|| panic!("{service}: {route} has no operationId"));
        routes_by_id
            .entry(id.clone())
            .or_default()
            .push(route.clone());
        ids.insert(route, id);
    }
    let duplicates: Vec<_> = routes_by_id
        .iter()
        .filter(|(_, routes)| routes.len() > 1)
        .collect();
    assert!(
        duplicates.is_empty(),
        "{service}: operation ids used by more than one operation: {duplicates:?}"
    );
    ids
}

#[tokio::test]
async fn every_operation_has_its_own_operation_id_and_the_ids_stay_as_released() {
    let system = TestSystem::start().await;
    for (service, base, own) in [
        (
            "command-service",
            &system.command_url,
            &COMMAND_OPERATION_IDS[..],
        ),
        (
            "projection-service",
            &system.query_url,
            &QUERY_OPERATION_IDS[..],
        ),
    ] {
        let reply = system
            .send(
                Method::GET,
                &format!("{base}/openapi.json"),
                None,
                None,
                &[],
            )
            .await;
        assert_eq!(reply.status, reqwest::StatusCode::OK, "{service} document");
        let ids = unique_operation_ids(service, &reply.body);
        let expected: BTreeMap<String, String> = own
            .iter()
            .chain(SHARED_OPERATION_IDS.iter())
            .map(|(route, id)| (route.to_string(), id.to_string()))
            .collect();
        assert_eq!(
            ids, expected,
            "{service}: the operation ids (route -> id) differ from the released ones"
        );
    }
}

/// A tool `scripts/ensure-tools.sh` installs in the venv; `$var` overrides it.
fn venv_tool(name: &str, var: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/tools/venv/bin")
            .join(name)
    });
    assert!(
        path.exists(),
        "{name} is not installed at {}: run scripts/ensure-tools.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// promtool: `$PROMTOOL`, else the one on PATH (Debian's `prometheus` package).
fn promtool() -> PathBuf {
    let path = std::env::var_os("PROMTOOL").map(PathBuf::from).or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    path.unwrap_or_else(|| {
        panic!("promtool is not installed: run scripts/ensure-tools.sh (scripts/test.sh does)")
    })
}

/// Runs a tool to the end (at most `within`), with its output captured for the report.
async fn run(what: &str, command: &mut tokio::process::Command, within: Duration) -> Output {
    let child = command
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    tokio::time::timeout(within, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} ran over {within:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn report(output: &Output) -> String {
    format!(
        "exit {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Both services as processes (the real binaries, as deployed) on a database and broker of
/// their own, with two tenants.
struct Services {
    system: ProcessSystem,
    other: Tenant,
}

impl Services {
    async fn start() -> Self {
        let system = ProcessSystem::start(&[
            // Sweeps within the test, so that the retention families are on /metrics too.
            ("RETENTION_INTERVAL", "1s".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ])
        .await;
        let other = TestSystem::bootstrap_tenant(&system.db.pool, "tenant-b").await;
        Self { system, other }
    }
}

/// The checked-in walk-through the generated clients run.
fn walkthrough_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/system/conformance/walkthrough.py")
}

/// `$PATH` with `dir` first.
fn with_on_path(dir: &Path) -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path)))
        .expect("PATH")
}

/// Generates the Python package `package` from the document at `url`, into `dir/package`.
async fn generate_client(generator: &Path, url: &str, package: &str, dir: &Path) {
    let config = dir.join(format!("{package}.yaml"));
    std::fs::write(
        &config,
        format!("project_name_override: {package}\npackage_name_override: {package}\n"),
    )
    .expect("generator config");
    let output = run(
        &format!("openapi-python-client on {url}"),
        tokio::process::Command::new(generator)
            .arg("generate")
            .args(["--url", url])
            .arg("--config")
            .arg(&config)
            .args(["--meta", "none"])
            .arg("--output-path")
            .arg(dir.join(package))
            // A document the generator only half understands (an operation skipped, a schema
            // it cannot model) fails here rather than in a client someone ships.
            .arg("--fail-on-warning")
            // It formats what it wrote with ruff, installed next to it.
            .env("PATH", with_on_path(generator.parent().expect("venv bin")))
            .current_dir(dir),
        Duration::from_secs(120),
    )
    .await;
    assert!(
        output.status.success(),
        "openapi-python-client could not generate a client from {url}:\n{}",
        report(&output)
    );
}

#[tokio::test]
async fn both_documents_are_valid_openapi_and_clients_generated_from_them_walk_the_readme() {
    let validator = venv_tool("openapi-spec-validator", "OPENAPI_SPEC_VALIDATOR");
    let generator = venv_tool("openapi-python-client", "OPENAPI_PYTHON_CLIENT");
    let python = venv_tool("python", "CONFORMANCE_PYTHON");
    let services = Services::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let http = reqwest::Client::new();

    for (service, base, package) in [
        (
            "command-service",
            services.system.command.url(),
            "command_client",
        ),
        (
            "projection-service",
            services.system.query.url(),
            "query_client",
        ),
    ] {
        let url = format!("{base}/openapi.json");
        let doc = http
            .get(&url)
            .send()
            .await
            .expect("document")
            .text()
            .await
            .expect("document text");
        let file = dir.path().join(format!("{service}.json"));
        std::fs::write(&file, &doc).expect("document file");
        let output = run(
            &format!("openapi-spec-validator on {service}"),
            tokio::process::Command::new(&validator)
                .args(["--schema", "3.1.0"])
                .arg(&file),
            Duration::from_secs(60),
        )
        .await;
        assert!(
            output.status.success(),
            "openapi-spec-validator rejects {service}'s document:\n{}",
            report(&output)
        );
        println!(
            "openapi-spec-validator on {service}: {}",
            String::from_utf8_lossy(&output.stdout).trim()
        );
        generate_client(&generator, &url, package, dir.path()).await;
    }

    // The README's walk-through, through the two generated clients only.
    let output = run(
        "the walk-through",
        tokio::process::Command::new(&python)
            .arg(walkthrough_script())
            .env("PYTHONPATH", dir.path())
            .env("COMMAND_URL", services.system.command.url())
            .env("QUERY_URL", services.system.query.url())
            .env("PROJECT_ID", services.system.tenant.project_id.to_string())
            .env("API_KEY", &services.system.tenant.api_key)
            .env("OTHER_PROJECT_ID", services.other.project_id.to_string())
            .env("OTHER_API_KEY", &services.other.api_key),
        Duration::from_secs(120),
    )
    .await;
    assert!(
        output.status.success(),
        "the walk-through through the generated clients failed:\n{}",
        report(&output)
    );
    // The script's last line: what it saw, for assertions here too.
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the walk-through's summary: {e}\n{}", report(&output)));
    assert_eq!(seen["contact"]["name"], "Ada Lovelace", "{seen}");
    assert_eq!(seen["contact"]["email"], "ada@example.com", "{seen}");
    assert_eq!(seen["session"]["status"], "ended", "{seen}");
    assert_eq!(
        seen["session"]["contact_id"], seen["contact"]["id"],
        "{seen}"
    );
    assert_eq!(seen["other_tenant"]["status"], 404, "{seen}");
    assert_eq!(
        seen["other_tenant"]["content_type"], "application/problem+json",
        "{seen}"
    );
    // The store agrees with what the client read back.
    let session: uuid::Uuid = seen["session"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("session id");
    let ended: i64 = sqlx::query_scalar(
        "select count(*) from contact_event_store where aggregate_id = $1 and event_type = 'session.ended'",
    )
    .bind(session)
    .fetch_one(&services.system.db.pool)
    .await
    .expect("count");
    assert_eq!(ended, 1, "one session.ended event in the store");
}

#[tokio::test]
async fn promtool_finds_nothing_to_lint_on_either_services_metrics_after_traffic() {
    let promtool = promtool();
    let services = Services::start().await;
    let http = reqwest::Client::new();
    let (command, query) = (services.system.command.url(), services.system.query.url());
    let project = services.system.tenant.project_id;
    let send = |method: Method, url: String, body: Option<Value>| {
        let mut request = http
            .request(method, url)
            .bearer_auth(&services.system.tenant.api_key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let answer = request.send().await.expect("request");
            let status = answer.status();
            (status, answer.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Traffic that moves every part: commands (a refusal among them), the relay, the
    // projections, reads, a 404 and a 401.
    let (status, contact) = send(
        Method::POST,
        format!("{command}/v1/projects/{project}/contacts"),
        Some(json!({"name": "Ada Lovelace", "email": "ada@example.com"})),
    )
    .await;
    assert_eq!(status, 201, "{contact}");
    let contact_id = contact["id"].as_str().expect("id").to_owned();
    let (status, message) = send(
        Method::POST,
        format!("{command}/v1/projects/{project}/contacts/{contact_id}/messages"),
        Some(json!({"channel_type_id": 1, "from_contact": true})),
    )
    .await;
    assert_eq!(status, 200, "{message}");
    let session_id = message["session_id"].as_str().expect("session").to_owned();
    for reason in ["agent_close", "agent_close"] {
        // The second end is refused (409): the refusal outcome is counted too.
        send(
            Method::POST,
            format!("{command}/v1/projects/{project}/sessions/{session_id}/end"),
            Some(json!({"reason": reason})),
        )
        .await;
    }
    wait_converged(&services.system.db.pool, Duration::from_secs(30)).await;
    for path in [
        format!("contacts/{contact_id}?min_version=2"),
        format!("sessions/{session_id}"),
        format!("contacts/{}", uuid::Uuid::now_v7()),
        "event-log".to_owned(),
    ] {
        send(
            Method::GET,
            format!("{query}/v1/projects/{project}/{path}"),
            None,
        )
        .await;
    }
    let unauthenticated = http
        .get(format!("{query}/v1/projects/{project}/contacts"))
        .send()
        .await
        .expect("request");
    assert_eq!(unauthenticated.status(), 401);
    // A retention sweep on each service (RETENTION_INTERVAL is 1 s).
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    for (service, base, families) in [
        (
            "command-service",
            &command,
            &[
                "commands_total",
                "outbox_published_total",
                "aggregate_load_seconds",
                "http_requests_total",
                "retention_sweep_seconds",
            ][..],
        ),
        (
            "projection-service",
            &query,
            &[
                "projection_events_applied_total",
                "projection_batch_seconds",
                "projection_consumer_lag_events",
                "http_request_duration_seconds",
                "auth_key_lookups_total",
            ][..],
        ),
    ] {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        // Linting an empty page would prove nothing: the traffic's families are there.
        let typed: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for family in families {
            assert!(typed.contains(family), "{service}: no {family} in\n{text}");
        }
        let mut child = tokio::process::Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("promtool starts");
        let mut stdin = child.stdin.take().expect("stdin");
        tokio::io::AsyncWriteExt::write_all(&mut stdin, text.as_bytes())
            .await
            .expect("metrics to promtool");
        drop(stdin);
        let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("promtool ran over 30 s")
            .expect("promtool");
        assert!(
            output.status.success(),
            "promtool check metrics on {service}'s /metrics ({} families):\n{}",
            typed.len(),
            report(&output)
        );
        println!(
            "promtool check metrics on {service}: clean, {} families",
            typed.len()
        );
    }
}

/// The quoted names after each `macro!(` in `source`.
fn names_after(source: &str, macro_call: &str) -> Vec<String> {
    source
        .match_indices(macro_call)
        .filter_map(|(at, _)| {
            let rest = source[at + macro_call.len()..].trim_start();
            let name = rest.strip_prefix('"')?;
            Some(name[..name.find('"')?].to_owned())
        })
        .collect()
}

/// The promtool test sees the families its traffic moves; this sees the others too (shed
/// requests, parked events, ...): every family any crate records has `# HELP` text, and a
/// counter's name ends in `_total`.
#[test]
fn every_metric_family_recorded_anywhere_is_described() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut recorded: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut described: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack: Vec<PathBuf> = [
        "platform",
        "command-service",
        "projection-service",
        "replay-tool",
    ]
    .iter()
    .map(|krate| root.join(krate).join("src"))
    .collect();
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(
                std::fs::read_dir(&path)
                    .expect("source dir")
                    .map(|e| e.expect("entry").path()),
            );
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("source");
        for kind in ["counter", "gauge", "histogram"] {
            for name in names_after(&source, &format!("metrics::{kind}!(")) {
                recorded.entry(kind.to_owned()).or_default().insert(name);
            }
            for name in names_after(&source, &format!("describe_{kind}!(")) {
                described.entry(kind.to_owned()).or_default().insert(name);
            }
        }
    }
    assert!(
        recorded.values().map(BTreeSet::len).sum::<usize>() > 30,
        "the scan found the families: {recorded:?}"
    );
    for (kind, names) in &recorded {
        let undescribed: Vec<_> = names
            .difference(described.get(kind).unwrap_or(&BTreeSet::new()))
            .cloned()
            .collect();
        assert!(
            undescribed.is_empty(),
            "{kind}s recorded without a describe_{kind}! (no # HELP): {undescribed:?}"
        );
    }
    let unsuffixed: Vec<_> = recorded["counter"]
        .iter()
        .filter(|name| !name.ends_with("_total"))
        .collect();
    assert!(
        unsuffixed.is_empty(),
        "counters without _total: {unsuffixed:?}"
    );
}
