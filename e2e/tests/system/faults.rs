//! Crashes: the real binaries killed with SIGKILL at arbitrary moments while clients keep sending
//! commands. Whatever was acknowledged is in the store exactly once, every event is published and
//! applied exactly once, no outbox row is stuck, and the read tables equal a rebuild.

use std::time::Duration;

use e2e::process::{ProcessSystem, ServiceProcess};
use e2e::traffic::{assert_end_state, stream_messages, wait_converged, Traffic};
use e2e::{Login, SecuredBroker, TestDb, TestSystem};
use serde_json::{json, Value};

#[tokio::test]
async fn killing_either_service_at_any_moment_loses_nothing_and_applies_nothing_twice() {
    // Bound in this order so that they drop in the reverse one: the processes first.
    let ProcessSystem {
        db,
        broker,
        tenant,
        mut query,
        mut command,
    } = ProcessSystem::start(&[]).await;
    let stream = &broker.stream;
    let mut traffic = Traffic::start(vec![command.url()], tenant.clone(), 4);

    // Crashes at moments the traffic does not choose: mid-request, between commit and answer,
    // in the relay between publish and marking processed, in a worker mid-batch.
    for (pause, which) in [
        (400, "command"),
        (300, "projection"),
        (500, "command"),
        (250, "both"),
    ] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if which == "command" || which == "both" {
            command.kill();
        }
        if which == "projection" || which == "both" {
            query.kill();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if which == "command" || which == "both" {
            command.restart().await;
        }
        if which == "projection" || which == "both" {
            query.restart().await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    traffic.stop().await;

    wait_converged(&db.pool, Duration::from_secs(90)).await;
    let counts = assert_end_state(&db.pool, &stream.keys(), &traffic).await;
    assert!(
        counts.acknowledged > 20,
        "enough traffic got through: {counts}"
    );
    assert_eq!(
        stream_messages(&stream.url, &stream.auth(Login::Admin), &stream.name).await as usize,
        counts.stored,
        "each event in the stream exactly once"
    );
    println!("SIGKILL under load: {counts}");
}

#[tokio::test]
async fn both_services_ride_out_a_postgresql_outage_and_readyz_reports_it() {
    let postgres = e2e::postgres::PrivatePostgres::start().await;
    let db = TestDb::on(&postgres.url()).await;
    let broker = SecuredBroker::start(2).await;
    let stream = &broker.stream;
    let tenant = TestSystem::bootstrap_tenant(&db.pool, "tenant-a").await;
    let relay_poll = vec![("RELAY_POLL_MS", "100".to_owned())];
    let command_env = [stream.command_env(&db.url), relay_poll.clone()].concat();
    let query_env = [stream.projection_env(&db.url), relay_poll].concat();
    let command = ServiceProcess::start("command-service", "COMMAND_ADDR", &command_env).await;
    let query = ServiceProcess::start("projection-service", "QUERY_ADDR", &query_env).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let create = |name: &str| {
        http.post(format!(
            "{}/v1/projects/{}/contacts",
            command.url(),
            tenant.project_id
        ))
        .bearer_auth(&tenant.api_key)
        .json(&json!({ "name": name }))
        .send()
    };
    assert_eq!(
        create("before").await.unwrap().status(),
        reqwest::StatusCode::CREATED
    );

    postgres.stop();
    for service in [&command, &query] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http
                .get(format!("{}/readyz", service.url()))
                .send()
                .await
                .unwrap();
            if ready.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                let body: Value = ready.json().await.unwrap();
                assert_eq!(body["database"], false, "{body}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "readyz never reported the outage"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let refused = create("during").await.unwrap();
    assert_eq!(
        refused.status(),
        reqwest::StatusCode::SERVICE_UNAVAILABLE,
        "a command during the outage is 503"
    );
    assert_eq!(
        refused.headers().get("content-type").unwrap(),
        "application/problem+json"
    );

    postgres.resume().await;
    // Neither service is restarted: they reconnect by themselves.
    for service in [&command, &query] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while http
            .get(format!("{}/readyz", service.url()))
            .send()
            .await
            .map(|r| r.status())
            .ok()
            != Some(reqwest::StatusCode::OK)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "readyz did not recover"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let after = create("after").await.unwrap();
    assert_eq!(after.status(), reqwest::StatusCode::CREATED);
    let id = after.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let read = http
        .get(format!(
            "{}/v1/projects/{}/contacts/{id}?min_version=1&wait_ms=20000",
            query.url(),
            tenant.project_id
        ))
        .bearer_auth(&tenant.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        read.status(),
        reqwest::StatusCode::OK,
        "the whole path works again"
    );
    let created: i64 = sqlx::query_scalar(
        "select count(*) from contact_event_store where event_type = 'contact.created'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(created, 2, "the refused command stored nothing");
    // Another partition's worker may still be in its retry backoff: wait until every stored
    // event is applied (it fails here if a worker never recovers), then compare.
    wait_converged(&db.pool, Duration::from_secs(60)).await;
    let names: Vec<String> = sqlx::query_scalar("select name from contacts order by name")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        names,
        ["after", "before"],
        "the refused command wrote nothing"
    );
}
