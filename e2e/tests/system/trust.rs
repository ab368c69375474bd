//! The wire is not the truth: whoever can publish on the events' subjects cannot change a read
//! row. A projection worker applies each message's event as the store holds it; a message the
//! store does not back is counted, parked for an operator, and never applied.

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use e2e::TestSystem;
use event_model::AggregateType;
use platform::event_store::EventStore;
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

/// The sum of a Prometheus counter's series whose labels contain `label`.
async fn counter(system: &TestSystem, family: &str, label: &str) -> f64 {
    counter_at(system, &system.query_url, family, label).await
}

/// [`counter`] on the service at `base`.
async fn counter_at(system: &TestSystem, base: &str, family: &str, label: &str) -> f64 {
    scrape(system, base)
        .await
        .lines()
        .filter(|l| l.starts_with(family) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A service's `/metrics` text.
async fn scrape(system: &TestSystem, base: &str) -> String {
    system
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn forged_and_mutated_messages_on_the_subject_change_no_row_and_are_counted() {
    let system = TestSystem::start().await;
    let other = TestSystem::bootstrap_tenant(&system.db.pool, "tenant-b").await;
    let contact = system
        .create_contact(json!({"name": "Target", "tags": ["real"]}))
        .await;
    system.wait_until_projected(Duration::from_secs(20)).await;
    let store = EventStore::new(system.db.pool.clone());
    let created = store
        .load_stream(
            &system.db.pool,
            &system.tenant.tenant_id,
            AggregateType::Contact,
            contact,
            0,
        )
        .await
        .unwrap()
        .remove(0);

    let js = async_nats::jetstream::new(system.stream.admin_client().await);
    let settings = system.stream_settings();
    let publish = |envelope: event_model::EventEnvelope| {
        let js = js.clone();
        let subject = settings.subject(
            envelope.contact_id,
            envelope.aggregate_type.as_str(),
            &envelope.event_type,
        );
        async move {
            let message = PublishMessage::build()
                .payload(serde_json::to_vec(&envelope).unwrap().into())
                .message_id(Uuid::new_v4().to_string());
            js.send_publish(subject, message)
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    // A forgery of the right shape: the contact's next version, another tenant's id.
    let mut forged = created.clone();
    forged.event_id = Uuid::now_v7();
    forged.event_type = "contact.tag_added".into();
    forged.sequence_number = 2;
    forged.position += 1_000;
    forged.tenant_id = other.tenant_id.clone();
    forged.data = json!({"tag": "forged"});
    publish(forged).await;
    // A contact that does not exist, made up whole.
    let mut invented = created.clone();
    invented.event_id = Uuid::now_v7();
    invented.aggregate_id = Uuid::now_v7();
    invented.contact_id = invented.aggregate_id;
    invented.tenant_id = other.tenant_id.clone();
    publish(invented.clone()).await;
    // A mutated copy of the real event: its id, another tenant (and so a forged duplicate).
    let mut mutated = created.clone();
    mutated.tenant_id = other.tenant_id.clone();
    mutated.data["tags"] = json!(["mutated"]);
    publish(mutated).await;

    // The partition flows on: a real command after them is applied.
    let reply = system
        .command(
            Method::POST,
            &format!("/contacts/{contact}/tags"),
            Some(json!({"tag": "after"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let read = system
        .query(&format!("/contacts/{contact}?min_version=2"))
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["tags"], json!(["after", "real"]), "{}", read.body);
    system.wait_until_consumed(Duration::from_secs(20)).await;
    let tenants: Vec<String> = sqlx::query_scalar("select distinct tenant_id from contacts")
        .fetch_all(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(
        tenants,
        vec![system.tenant.tenant_id.as_str()],
        "nobody moved a row"
    );
    assert_eq!(
        system
            .count(&format!(
                "select count(*) from contacts where id = '{}'",
                invented.contact_id
            ))
            .await,
        0,
        "an invented contact has no row"
    );
    let b_sees = system
        .query_as(&other, &format!("/contacts/{contact}"))
        .await;
    assert_eq!(b_sees.status, StatusCode::NOT_FOUND);

    system
        .eventually(
            Duration::from_secs(10),
            "the rejections counted",
            || async {
                counter(
                    &system,
                    "projection_rejected_messages_total",
                    "not_in_store",
                )
                .await
                    >= 2.0
                    && counter(&system, "projection_rejected_messages_total", "differs").await
                        >= 1.0
            },
        )
        .await;
    let parked = projection_service::dead_letters::list(&system.db.pool, None)
        .await
        .unwrap();
    assert_eq!(parked.len(), 3, "each rejected message parked: {parked:?}");
    assert!(
        parked.iter().all(|d| d.error.starts_with("rejected")),
        "{parked:?}"
    );
    // A retry applies stored events only: the forgeries stay parked, the mutated copy's event
    // (already applied) is resolved.
    let report = projection_service::dead_letters::retry(&system.db.pool, &system.keys(), None)
        .await
        .unwrap();
    assert_eq!((report.resolved, report.still_failing), (1, 2));
    assert_eq!(
        system.query(&format!("/contacts/{contact}")).await.body["tags"],
        json!(["after", "real"])
    );
    assert!(system.verify().await.is_empty());
}

/// The series of a metric family in a service's `/metrics`.
async fn series(system: &TestSystem, base: &str, family: &str) -> usize {
    scrape(system, base)
        .await
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .count()
}

#[tokio::test]
async fn a_thousand_invented_methods_add_a_handful_of_metric_series_at_most() {
    let system = TestSystem::start().await;
    for base in [&system.command_url, &system.query_url] {
        let before = series(&system, base, "http_requests_total").await;
        for chunk in (0..1_000).collect::<Vec<_>>().chunks(50) {
            futures::future::join_all(chunk.iter().map(|i| {
                let method = Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
                system
                    .http
                    .request(
                        method,
                        format!("{base}/v1/projects/{}/contacts", Uuid::nil()),
                    )
                    .send()
            }))
            .await;
        }
        let after = series(&system, base, "http_requests_total").await;
        assert!(
            after <= before + 3,
            "{base}: {before} series before 1,000 invented methods, {after} after"
        );
    }
}

/// The names of every index a plan reads, and whether it sorts.
fn plan_of(plan: &serde_json::Value, indexes: &mut Vec<String>, sorts: &mut bool) {
    if plan["Node Type"] == "Sort" || plan["Node Type"] == "Incremental Sort" {
        *sorts = true;
    }
    if let Some(index) = plan["Index Name"].as_str() {
        indexes.push(index.to_owned());
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        plan_of(child, indexes, sorts);
    }
}

#[tokio::test]
async fn a_page_of_sessions_or_audit_rows_reads_the_tenants_index_and_sorts_nothing() {
    let db = e2e::TestDb::new().await;
    for (sql, index) in [
        (
            "select s.id from sessions s where s.tenant_id = $1 and s.id > $2 and s.deleted_at is null order by s.id limit 51",
            "sessions_tenant_id_id_idx",
        ),
        (
            "select id from domain_event_logs where deleted_at is null and tenant_id = $1 and id > $2 order by id limit 51",
            "domain_event_logs_tenant_id_id_idx",
        ),
    ] {
        let mut tx = db.pool.begin().await.unwrap();
        // As on a table large enough that reading it whole is out of the question.
        sqlx::query("set local enable_seqscan = off")
            .execute(&mut *tx)
            .await
            .unwrap();
        let explained: serde_json::Value =
            sqlx::query_scalar(&format!("explain (format json) {sql}"))
                .bind("tenant-a")
                .bind(Uuid::nil())
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        let (mut indexes, mut sorts) = (Vec::new(), false);
        plan_of(&explained[0]["Plan"], &mut indexes, &mut sorts);
        assert!(
            indexes == [index] && !sorts,
            "{sql}: reads {indexes:?}, sorts: {sorts}\n{explained}"
        );
    }
}

#[tokio::test]
async fn a_request_paths_statement_is_cancelled_at_its_timeout_and_answered_503() {
    let db = e2e::TestDb::new().await;
    let settings = platform::Settings {
        request_statement_timeout_ms: 200,
        ..e2e::settings_for(&db.url)
    };
    let app = settings.app_pool(&db.pool).await.unwrap();
    let started = std::time::Instant::now();
    let error = sqlx::query("select pg_sleep(5)")
        .execute(&app)
        .await
        .expect_err("cancelled");
    assert!(started.elapsed() < Duration::from_secs(4), "{error}");
    let answer = axum::response::IntoResponse::into_response(platform::ApiError::internal(error));
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers().contains_key("retry-after"));
    // The cross-tenant pool (relay, workers, sweeps) has no such limit: a rebuild's merge may run long.
    let system = settings.system_pool(&db.pool, 1).await.unwrap();
    sqlx::query("select pg_sleep(0.3)")
        .execute(&system)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_burst_beyond_a_keys_limit_gets_429_and_the_next_window_works() {
    let system = TestSystem::start_with(e2e::Options {
        rate_limit: (5, 10),
        ..e2e::Options::default()
    })
    .await;
    let other = system.add_member(&system.tenant, "viewer").await;
    let replies = futures::future::join_all((0..30).map(|_| system.query("/contacts"))).await;
    let limited: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(
        limited.len() >= 15,
        "30 at once against a burst of 10: {} limited",
        limited.len()
    );
    let first = limited[0];
    first.assert_problem(429);
    let retry: u64 = first.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // Another key has its own bucket.
    assert_eq!(
        system.query_as(&other, "/contacts").await.status,
        StatusCode::OK
    );
    // The next window.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(system.query("/contacts").await.status, StatusCode::OK);
    let reply = system
        .command(
            Method::POST,
            "/contacts",
            Some(json!({"name": "After the wait"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

#[tokio::test]
async fn a_flood_of_requests_with_an_unknown_key_costs_one_lookup() {
    let system = TestSystem::start().await;
    // Both services run in this test's process and share its metrics: one scrape sees both.
    let lookups = |result: &'static str| {
        let system = &system;
        async move { counter_at(system, &system.query_url, "auth_key_lookups_total", result).await }
    };
    let before = lookups("result=\"unknown\"").await;
    let made_up = format!("vk_{}", Uuid::new_v4().simple());
    let url = format!(
        "{}/v1/projects/{}/contacts",
        system.query_url, system.tenant.project_id
    );
    for _ in 0..50 {
        let reply = TestSystem::read(
            system
                .http
                .get(&url)
                .bearer_auth(&made_up)
                .send()
                .await
                .unwrap(),
        )
        .await;
        reply.assert_problem(401);
    }
    let after = lookups("result=\"unknown\"").await;
    assert_eq!(after - before, 1.0, "50 requests, one database lookup");
    assert!(lookups("refused_from_cache").await >= 49.0);
    // A real key is not affected.
    assert_eq!(system.query("/contacts").await.status, StatusCode::OK);
}
