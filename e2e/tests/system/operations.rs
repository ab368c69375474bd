//! The operations surface: the OpenAPI documents describe exactly the routes each service
//! serves, `/docs` renders them, health and metrics answer.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::TestSystem;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const OPERATIONS: [&str; 5] = [
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
    "GET /docs",
];

/// API.md's command routes.
const COMMANDS: [&str; 22] = [
    "POST /v1/projects/{project_id}/contacts",
    "PATCH /v1/projects/{project_id}/contacts/{contact_id}",
    "DELETE /v1/projects/{project_id}/contacts/{contact_id}",
    "POST /v1/projects/{project_id}/contacts/{contact_id}/forget",
    "POST /v1/projects/{project_id}/contacts/{contact_id}/tags",
    "DELETE /v1/projects/{project_id}/contacts/{contact_id}/tags/{tag}",
    "PUT /v1/projects/{project_id}/contacts/{contact_id}/profile-picture",
    "POST /v1/projects/{project_id}/contacts/{contact_id}/messages",
    "POST /v1/projects/{project_id}/contacts/{contact_id}/sessions",
    "POST /v1/projects/{project_id}/sessions/{session_id}/messages",
    "POST /v1/projects/{project_id}/sessions/{session_id}/agents",
    "PUT /v1/projects/{project_id}/sessions/{session_id}/summary",
    "PUT /v1/projects/{project_id}/sessions/{session_id}/outcome",
    "POST /v1/projects/{project_id}/sessions/{session_id}/end",
    "POST /v1/projects/{project_id}/api-keys",
    "DELETE /v1/projects/{project_id}/api-keys/{key_id}",
    "PUT /v1/projects/{project_id}/members/{user_id}",
    "DELETE /v1/projects/{project_id}/members/{user_id}",
    "POST /v1/projects/{project_id}/webhooks",
    "PATCH /v1/projects/{project_id}/webhooks/{webhook_id}",
    "DELETE /v1/projects/{project_id}/webhooks/{webhook_id}",
    "POST /v1/projects/{project_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
];

/// API.md's query routes.
const QUERIES: [&str; 20] = [
    "GET /v1/projects/{project_id}/contacts",
    "GET /v1/projects/{project_id}/contacts/{contact_id}",
    "GET /v1/projects/{project_id}/contacts/{contact_id}/sessions",
    "GET /v1/projects/{project_id}/contacts/{contact_id}/events",
    "GET /v1/projects/{project_id}/sessions",
    "GET /v1/projects/{project_id}/sessions/{session_id}",
    "GET /v1/projects/{project_id}/event-log",
    "GET /v1/projects/{project_id}/sessions/{session_id}/messages",
    "GET /v1/projects/{project_id}/contacts/{contact_id}/messages",
    "GET /v1/projects/{project_id}/messages",
    "GET /v1/projects/{project_id}/api-keys",
    "GET /v1/projects/{project_id}/members",
    "GET /v1/projects/{project_id}/webhooks",
    "GET /v1/projects/{project_id}/changes",
    "GET /v1/projects/{project_id}/webhooks/{webhook_id}",
    "GET /v1/projects/{project_id}/webhooks/{webhook_id}/deliveries",
    "GET /v1/projects/{project_id}/me",
    "GET /v1/projects/{project_id}/ops/pipeline",
    "GET /v1/projects/{project_id}/ops/dead-letters",
    "POST /v1/projects/{project_id}/ops/dead-letters/{dead_letter_id}/retry",
];

fn documented(doc: &Value) -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                routes.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    routes
}

/// Asks the service for a documented route with placeholder ids: anything but the router's own
/// "no such route" / "method not allowed" means the route is served.
async fn assert_served(system: &TestSystem, base: &str, route: &str) {
    let (method, path) = route.split_once(' ').unwrap();
    let path = path
        .replace("{project_id}", &system.tenant.project_id.to_string())
        .replace("{contact_id}", "0190f1f0-0000-7000-8000-000000000001")
        .replace("{session_id}", "0190f1f0-0000-7000-8000-000000000002")
        .replace("{tag}", "vip");
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    // The change feed does not end: asked with a position it cannot read, it answers 400.
    let headers: &[(&str, &str)] = if path.ends_with("/changes") {
        &[("last-event-id", "not-a-position")]
    } else {
        &[]
    };
    let reply = system
        .send(
            method,
            &format!("{base}{path}"),
            Some(&system.tenant.api_key),
            Some(&json!({})),
            headers,
        )
        .await;
    assert_ne!(
        reply.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{route} is documented but not served"
    );
    assert!(
        !(reply.status == StatusCode::NOT_FOUND && reply.body["detail"] == "no such route"),
        "{route} is documented but not served"
    );
}

#[tokio::test]
async fn each_openapi_document_lists_exactly_the_routes_its_service_serves() {
    let system = TestSystem::start().await;
    for (base, contract) in [
        (&system.command_url, &COMMANDS[..]),
        (&system.query_url, &QUERIES[..]),
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
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            reply.body["openapi"].as_str().unwrap().starts_with("3.1"),
            "OpenAPI 3.1"
        );
        let doc = documented(&reply.body);
        let expected: BTreeSet<String> = contract
            .iter()
            .chain(OPERATIONS.iter())
            .map(|s| s.to_string())
            .collect();
        assert_eq!(doc, expected, "the document of {base} against API.md");
        for route in &doc {
            assert_served(&system, base, route).await;
        }
        // An undocumented route is not served.
        let stray = system
            .send(
                Method::GET,
                &format!("{base}/v1/nothing-here"),
                None,
                None,
                &[],
            )
            .await;
        stray.assert_problem(404);
        assert!(reply.body["components"]["securitySchemes"]["api_key"].is_object());

        let docs = system
            .http
            .get(format!("{base}/docs"))
            .send()
            .await
            .unwrap();
        assert_eq!(docs.status(), StatusCode::OK);
        let html = docs.text().await.unwrap();
        assert!(
            html.contains("<html") && html.contains("swagger-ui"),
            "the docs page: {html}"
        );
        // The page (served from the binary, no CDN) loads this service's document, with
        // "Try it out" on.
        let init = system
            .http
            .get(format!("{base}/docs/swagger-initializer.js"))
            .send()
            .await
            .unwrap();
        let init = init.text().await.unwrap();
        assert!(
            init.contains("/openapi.json") && init.contains("tryItOutEnabled"),
            "{init}"
        );
        let bundle = system
            .http
            .get(format!("{base}/docs/swagger-ui-bundle.js"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            bundle.status(),
            StatusCode::OK,
            "the UI's script is served by the service itself"
        );
    }
    system.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let system = TestSystem::start().await;
    let host = platform::db::host_port(&platform::db::connect_options(&system.db.url).unwrap());
    for (base, expected) in [
        (
            &system.command_url,
            json!({"database": true, "database_host": host, "database_primary": true,
                   "broker": true, "data_keys": "data keys wrapped by DATA_KEK"}),
        ),
        (
            &system.query_url,
            json!({"database": true, "database_host": host, "database_primary": true,
                   "broker": true, "stalled_consumers": [],
                   "data_keys": "data keys wrapped by DATA_KEK"}),
        ),
    ] {
        let alive = system
            .send(Method::GET, &format!("{base}/healthz"), None, None, &[])
            .await;
        assert_eq!(alive.status, StatusCode::OK);
        let ready = system
            .send(Method::GET, &format!("{base}/readyz"), None, None, &[])
            .await;
        assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
        assert_eq!(ready.body, expected);
    }
    system.stop().await;
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let system = TestSystem::start_with(e2e::Options {
        snapshot_every: 2,
        ..e2e::Options::default()
    })
    .await;
    let before = system.metrics(&system.command_url).await;
    let contact = system.create_contact(json!({"name": "Counted"})).await;
    for tag in ["a", "a", ""] {
        system
            .command(
                Method::POST,
                &format!("/contacts/{contact}/tags"),
                Some(json!({ "tag": tag })),
            )
            .await;
    }
    system.wait_until_projected(Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await; // the lag and backlog gauges refresh
    let after = system.metrics(&system.command_url).await;
    let moved = |family: &str, labels: &[&str]| {
        let (b, a) = (
            e2e::sample(&before, family, labels),
            e2e::sample(&after, family, labels),
        );
        assert!(
            a > b,
            "{family}{labels:?} did not move: {b} -> {a}\n{after}"
        );
    };
    moved(
        "http_requests_total",
        &[
            "route=\"/v1/projects/{project_id}/contacts\"",
            "status=\"201\"",
        ],
    );
    moved(
        "http_request_duration_seconds_count",
        &["route=\"/v1/projects/{project_id}/contacts/{contact_id}/tags\""],
    );
    moved(
        "commands_total",
        &["command=\"create_contact\"", "outcome=\"ok\""],
    );
    moved(
        "commands_total",
        &["command=\"add_tag\"", "outcome=\"refused\""],
    );
    moved("aggregate_load_seconds_count", &["aggregate=\"contact\""]);
    moved("aggregate_events_folded_count", &[]);
    moved("snapshots_written_total", &[]);
    moved("outbox_published_total", &[]);
    moved("outbox_publish_batch_seconds_count", &[]);
    moved("projection_events_applied_total", &[]);
    moved("projection_batch_size_count", &[]);
    moved("projection_batch_seconds_count", &[]);
    for gauge in [
        "outbox_pending_rows",
        "outbox_oldest_pending_age_seconds",
        "projection_consumer_lag_events",
        "projection_consumer_lag_seconds",
    ] {
        assert!(after.contains(gauge), "{gauge} is exported");
    }
    system.stop().await;
}

#[tokio::test]
async fn a_consumer_that_stops_advancing_while_events_wait_makes_readyz_fail() {
    let system = TestSystem::start_with(e2e::Options {
        stall_secs: 2,
        partitions: 1,
        ..e2e::Options::default()
    })
    .await;
    let ready = format!("{}/readyz", system.query_url);
    assert_eq!(
        system
            .send(Method::GET, &ready, None, None, &[])
            .await
            .status,
        StatusCode::OK
    );
    // Another session holds the read table (a long migration, say): the worker's batch waits.
    let mut blocker = system.db.pool.begin().await.unwrap();
    sqlx::query("lock table contacts in access exclusive mode")
        .execute(&mut *blocker)
        .await
        .unwrap();
    system.create_contact(json!({"name": "Waiting"})).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = system.send(Method::GET, &ready, None, None, &[]).await;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(
                reply.body["stalled_consumers"],
                json!(["projections-p0"]),
                "{}",
                reply.body
            );
            assert_eq!(reply.body["database"], true);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled consumer was never reported: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Held past the ack wait (5 s in tests): the stuck worker keeps its message with progress
    // acks rather than have it redelivered.
    tokio::time::sleep(Duration::from_secs(7)).await;
    blocker.rollback().await.unwrap();
    system.wait_until_projected(Duration::from_secs(30)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while system
        .send(Method::GET, &ready, None, None, &[])
        .await
        .status
        != StatusCode::OK
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz did not recover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = system.metrics(&system.query_url).await;
    assert_eq!(
        e2e::sample(
            &metrics,
            "projection_redeliveries_total",
            &["consumer=\"projections-p0\""],
        ),
        0.0,
        "the held message was redelivered:\n{metrics}"
    );
    let applied = e2e::db::applied_per_projection(&system.db.pool).await;
    assert_eq!(
        applied,
        [
            ("contacts".to_owned(), 1),
            ("domain_event_logs".to_owned(), 1),
            ("messages".to_owned(), 1),
            ("sessions".to_owned(), 1)
        ]
    );
    system.stop().await;
}

#[tokio::test]
async fn a_poison_event_is_parked_the_partition_keeps_flowing_and_a_retry_applies_it_after_a_fix() {
    let system = TestSystem::start_with(e2e::Options {
        partitions: 1,
        ..e2e::Options::default()
    })
    .await;
    let poisoned = system.create_contact(json!({"name": "Poisoned"})).await;
    system.wait_until_projected(Duration::from_secs(20)).await;
    // A newer producer stored an event this version cannot read (v9 of contact.tag_added).
    let poison: uuid::Uuid = sqlx::query_scalar(
        "with e as (insert into contact_event_store (aggregate_id, aggregate_type, event_type, event_version, sequence_number, \
                    event_data, metadata, occurred_at, tenant_id, project_id) \
             select aggregate_id, 'contact', 'contact.tag_added', 'v9', 2, '{\"tag\": \"from-v9\"}', metadata, occurred_at, \
                    tenant_id, project_id from contact_event_store where aggregate_id = $1 \
             returning *) \
         insert into outbox_events (event_id, aggregate_id, aggregate_type, event_type, event_version, event_data, metadata, \
                                    tenant_id, project_id) \
         select id, aggregate_id, aggregate_type, event_type, event_version, event_data, metadata, tenant_id, project_id from e \
         returning event_id",
    )
    .bind(poisoned)
    .fetch_one(&system.db.pool)
    .await
    .unwrap();
    // Traffic after it, on another contact of the same (only) partition, keeps flowing.
    let healthy = system.create_contact(json!({"name": "Healthy"})).await;
    let read = system
        .query(&format!("/contacts/{healthy}?min_version=1"))
        .await;
    assert_eq!(
        read.status,
        StatusCode::OK,
        "the partition did not stall behind the poison"
    );

    let parked = projection_service::dead_letters::list(&system.db.pool, None)
        .await
        .unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(
        (parked[0].event_id, parked[0].consumer_name.as_str()),
        (poison, "projections-p0")
    );
    assert!(
        parked[0].error.contains("v9"),
        "the error says why: {}",
        parked[0].error
    );
    let ready = system
        .send(
            Method::GET,
            &format!("{}/readyz", system.query_url),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(
        ready.status,
        StatusCode::OK,
        "a parked event is not a stall: {}",
        ready.body
    );
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let metrics = system.metrics(&system.query_url).await;
    assert!(
        e2e::sample(
            &metrics,
            "projection_parked_events",
            &["consumer=\"projections-p0\""]
        ) >= 1.0,
        "{metrics}"
    );
    assert!(e2e::sample(&metrics, "projection_events_parked_total", &[]) >= 1.0);

    // Retrying before the fix changes nothing but the attempt count.
    let report = projection_service::dead_letters::retry(&system.db.pool, &system.keys(), None)
        .await
        .unwrap();
    assert_eq!((report.resolved, report.still_failing), (0, 1));
    // The fix: the v9 payload is upcast to v2 in the store (what a new release's upcaster does).
    sqlx::query("update contact_event_store set event_version = 'v2' where id = $1")
        .bind(poison)
        .execute(&system.db.pool)
        .await
        .unwrap();
    let report = projection_service::dead_letters::retry(&system.db.pool, &system.keys(), None)
        .await
        .unwrap();
    assert_eq!((report.resolved, report.still_failing), (1, 0));
    assert!(
        projection_service::dead_letters::list(&system.db.pool, None)
            .await
            .unwrap()
            .is_empty()
    );
    let read = system
        .query(&format!("/contacts/{poisoned}?min_version=2"))
        .await;
    assert_eq!(
        read.body["tags"],
        json!(["from-v9"]),
        "the retried event took effect"
    );
    assert!(
        system.verify().await.is_empty(),
        "and the read tables equal the history"
    );
    system.stop().await;
}

#[tokio::test]
async fn one_trace_runs_from_the_command_through_the_outbox_and_nats_to_the_projection() {
    // The relay deletes what it publishes: off until the outbox row has been read.
    let mut system = TestSystem::start_with(e2e::Options {
        relay_enabled: false,
        ..e2e::Options::default()
    })
    .await;
    // A caller's trace, continued.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let reply = system
        .command_as(
            &system.tenant,
            Method::POST,
            "/contacts",
            Some(json!({"name": "Traced"})),
            &[("traceparent", &traceparent)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let event_id = reply.body["event_ids"][0].as_str().unwrap().to_owned();
    let stored: String = sqlx::query_scalar(
        "select metadata->>'traceparent' from contact_event_store where id = $1::uuid",
    )
    .bind(&event_id)
    .fetch_one(&system.db.pool)
    .await
    .unwrap();
    assert!(
        stored.starts_with(&format!("00-{trace_id}-")),
        "the event keeps the trace: {stored}"
    );
    let queued: String = sqlx::query_scalar(
        "select metadata->>'traceparent' from outbox_events where event_id = $1::uuid",
    )
    .bind(&event_id)
    .fetch_one(&system.db.pool)
    .await
    .unwrap();
    assert_eq!(queued, stored, "so does its outbox row");
    system.stop_command().await;
    system.options.relay_enabled = true;
    system.start_command().await;

    system.wait_until_projected(Duration::from_secs(20)).await;
    let projected = wait_for_spans("projection.event", "event_id", &event_id).await;
    assert_eq!(
        projected[0].span_context.trace_id().to_string(),
        trace_id,
        "the projection's span is in the caller's trace"
    );

    // A trace the service starts itself: the request span and the projection span share it.
    let reply = system
        .command_as(
            &system.tenant,
            Method::POST,
            "/contacts",
            Some(json!({"name": "Traced too"})),
            &[("x-correlation-id", "trace-me")],
        )
        .await;
    let event_id = reply.body["event_ids"][0].as_str().unwrap().to_owned();
    let requests = wait_for_spans("request", "correlation_id", "trace-me").await;
    let projected = wait_for_spans("projection.event", "event_id", &event_id).await;
    let trace = requests[0].span_context.trace_id();
    assert_eq!(projected[0].span_context.trace_id(), trace);
    let names: BTreeSet<String> = e2e::traces::spans_of(trace)
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    assert!(
        names.contains("execute"),
        "the command handler's span is in the trace too: {names:?}"
    );
    system.stop().await;
}

async fn wait_for_spans(
    name: &str,
    key: &str,
    value: &str,
) -> Vec<opentelemetry_sdk::trace::SpanData> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let spans = e2e::traces::spans_with(name, key, value);
        if !spans.is_empty() {
            return spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no finished {name} span with {key} = {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn both_services_stop_gracefully_on_sigterm() {
    let db = e2e::TestDb::new().await;
    let stream = e2e::TestStream::new(None, 2);
    let tenant = TestSystem::bootstrap_tenant(&db.pool, "tenant-a").await;
    let env = [
        stream.service_env(&db.url),
        vec![("SHUTDOWN_DEADLINE_SECS", "10".to_owned())],
    ]
    .concat();
    let mut command =
        e2e::process::ServiceProcess::start("command-service", "COMMAND_ADDR", &env).await;
    let mut query =
        e2e::process::ServiceProcess::start("projection-service", "QUERY_ADDR", &env).await;
    let http = reqwest::Client::new();
    let created = http
        .post(format!(
            "{}/v1/projects/{}/contacts",
            command.url(),
            tenant.project_id
        ))
        .bearer_auth(&tenant.api_key)
        .json(&json!({"name": "Before the signal"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let read = http
        .get(format!(
            "{}/v1/projects/{}/contacts/{id}?min_version=1",
            query.url(),
            tenant.project_id
        ))
        .bearer_auth(&tenant.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        read.status(),
        StatusCode::OK,
        "the event went all the way through"
    );

    for (service, name) in [
        (&mut command, "command-service"),
        (&mut query, "projection-service"),
    ] {
        service.terminate();
        let status = service.exited(Duration::from_secs(15)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "{name} did not stop cleanly: {status:?}\n{}",
            service.log()
        );
        let log = service.log();
        assert!(log.contains("SIGTERM received"), "{name} log:\n{log}");
        assert!(
            log.contains(&format!("{name} stopped")),
            "{name} log:\n{log}"
        );
    }
}

#[tokio::test]
async fn spans_are_exported_over_otlp_when_the_endpoint_is_set() {
    // A stand-in collector: it only records what is posted to /v1/traces.
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, usize)>::new()));
    let collector = {
        let received = received.clone();
        axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let received = received.clone();
                    async move {
                        let content_type = headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        received.lock().unwrap().push((content_type, body.len()));
                        StatusCode::OK
                    }
                },
            ),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let db = e2e::TestDb::new().await;
    let stream = e2e::TestStream::new(None, 1);
    let tenant = TestSystem::bootstrap_tenant(&db.pool, "tenant-a").await;
    let env = [
        stream.service_env(&db.url),
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
        ],
    ]
    .concat();
    let command =
        e2e::process::ServiceProcess::start("command-service", "COMMAND_ADDR", &env).await;
    let created = reqwest::Client::new()
        .post(format!(
            "{}/v1/projects/{}/contacts",
            command.url(),
            tenant.project_id
        ))
        .bearer_auth(&tenant.api_key)
        .json(&json!({"name": "Exported"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((content_type, size)) = received.lock().unwrap().first().cloned() {
            assert_eq!(
                content_type, "application/x-protobuf",
                "OTLP/HTTP with protobuf"
            );
            assert!(size > 0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no spans reached the collector:\n{}",
            command.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
