//! Acceptance 4: at most one active session per contact and channel, even under a race of 20
//! starts; the timeout sweeper ends an idle session with `inactivity_timeout`.

use std::sync::atomic::Ordering;

use e2e::{Options, TestSystem};
use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn twenty_racing_starts_open_one_session_and_the_sweeper_ends_it_after_the_timeout() {
    let system = TestSystem::start_with(Options {
        sweep_interval_ms: 200,
        ..Options::default()
    })
    .await;
    let contact = system.create_contact(json!({"name": "Racer"})).await;
    let path = format!("/contacts/{contact}/sessions");
    let replies = join_all(
        (0..20).map(|_| system.command(Method::POST, &path, Some(json!({"channel_type_id": 1})))),
    )
    .await;

    let created: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .collect();
    assert_eq!(
        created.len(),
        1,
        "exactly one start wins: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for refused in replies.iter().filter(|r| r.status != StatusCode::CREATED) {
        refused.assert_problem(409);
    }
    let session = created[0].id("id");
    assert_eq!(created[0].body["version"], 1);
    assert_eq!(
        created[0].header("location").map(str::to_owned),
        Some(format!(
            "/v1/projects/{}/sessions/{session}",
            system.tenant.project_id
        ))
    );
    assert_eq!(
        system
            .rows("contact_event_store where event_type = 'session.started'")
            .await,
        1
    );
    // Another channel is free.
    let other = system
        .command(Method::POST, &path, Some(json!({"channel_type_id": 2})))
        .await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.body);

    // Not idle yet: the sweeper leaves it alone.
    let active = system
        .query(&format!("/sessions/{session}?min_version=1"))
        .await;
    assert_eq!(active.body["status"], "active");

    // Two hours later (the command side's clock), past the 30-minute timeout.
    system.clock_offset.store(2 * 3600, Ordering::SeqCst);
    let ended = system
        .query(&format!("/sessions/{session}?min_version=2&wait_ms=20000"))
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.body);
    assert_eq!(ended.body["status"], "ended");
    assert_eq!(ended.body["end_reason"], "inactivity_timeout");
    assert_eq!(
        ended.body["duration_seconds"], 1800,
        "it ended when it timed out, not when the sweep ran"
    );

    // The channel is free again.
    let again = system
        .command(Method::POST, &path, Some(json!({"channel_type_id": 1})))
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    system.stop().await;
}

#[tokio::test]
async fn commands_on_a_deleted_contact_and_its_sessions_are_refused() {
    let system = TestSystem::start().await;
    let contact = system.create_contact(json!({"name": "Leaving"})).await;
    let session = system.open_session(contact).await;
    let deleted = system
        .command_as(
            &system.tenant,
            Method::DELETE,
            &format!("/contacts/{contact}"),
            Some(json!({"reason": "gdpr"})),
            &[],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    system
        .command(
            Method::POST,
            &format!("/contacts/{contact}/tags"),
            Some(json!({"tag": "x"})),
        )
        .await
        .assert_problem(409);
    system
        .command(
            Method::POST,
            &format!("/sessions/{session}/messages"),
            Some(json!({"from_contact": true})),
        )
        .await
        .assert_problem(409);

    let closed = system
        .query(&format!("/sessions/{session}?min_version=3"))
        .await;
    assert_eq!(closed.body["end_reason"], "system_close");
    let gone = system
        .query(&format!("/contacts/{contact}?min_version=4"))
        .await;
    assert!(gone.body["deleted_at"].is_string(), "{}", gone.body);
    let listed = system.query("/contacts").await;
    assert_eq!(
        listed.body["items"],
        json!([]),
        "deleted contacts are not listed by default"
    );
    let with_deleted = system.query("/contacts?include_deleted=true").await;
    assert_eq!(with_deleted.body["items"].as_array().map(Vec::len), Some(1));
    system.stop().await;
}
