//! Acceptance 3: concurrent writers on one contact lose nothing and never share a sequence
//! number; a stale `If-Match` is refused with 412 and writes nothing.

use std::collections::BTreeSet;

use e2e::TestSystem;
use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn two_concurrent_writers_lose_no_update_and_share_no_sequence_number() {
    let system = TestSystem::start().await;
    let contact = system.create_contact(json!({"name": "Busy"})).await;
    let writer = |prefix: &'static str| {
        let system = &system;
        async move {
            for i in 0..15 {
                let reply = system
                    .command(
                        Method::POST,
                        &format!("/contacts/{contact}/tags"),
                        Some(json!({"tag": format!("{prefix}{i}")})),
                    )
                    .await;
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            }
        }
    };
    tokio::join!(writer("a"), writer("b"));

    let sequences: Vec<i64> =
        sqlx::query_scalar("select sequence_number from contact_event_store where aggregate_id = $1 order by sequence_number")
            .bind(contact)
            .fetch_all(&system.db.pool)
            .await
            .unwrap();
    assert_eq!(
        sequences,
        (1..=31).collect::<Vec<i64>>(),
        "31 events, gap-free, none shared"
    );

    let read = system
        .query(&format!("/contacts/{contact}?min_version=31"))
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let tags: BTreeSet<String> = serde_json::from_value(read.body["tags"].clone()).unwrap();
    let expected: BTreeSet<String> = (0..15)
        .flat_map(|i| [format!("a{i}"), format!("b{i}")])
        .collect();
    assert_eq!(tags, expected, "every writer's tags survived");
    system.stop().await;
}

#[tokio::test]
async fn a_stale_if_match_is_refused_with_412_and_writes_nothing() {
    let system = TestSystem::start().await;
    let contact = system.create_contact(json!({"name": "Versioned"})).await;
    let path = format!("/contacts/{contact}");
    let tagged = system
        .command(
            Method::POST,
            &format!("{path}/tags"),
            Some(json!({"tag": "x"})),
        )
        .await;
    assert_eq!(tagged.header("etag"), Some("\"2\""));
    let before = system.rows("contact_event_store").await;

    let stale = system
        .command_as(
            &system.tenant,
            Method::PATCH,
            &path,
            Some(json!({"name": "Lost"})),
            &[("if-match", "\"1\"")],
        )
        .await;
    stale.assert_problem(412);
    assert_eq!(
        stale.header("etag"),
        Some("\"2\""),
        "the 412 tells the current version"
    );
    assert_eq!(
        system.rows("contact_event_store").await,
        before,
        "nothing written"
    );
    assert_eq!(
        system
            .count(
                "select count(*) from outbox_events o \
                  where not exists (select 1 from contact_event_store e where e.id = o.event_id)"
            )
            .await,
        0,
        "nothing queued"
    );

    let fresh = system
        .command_as(
            &system.tenant,
            Method::PATCH,
            &path,
            Some(json!({"name": "Kept"})),
            &[("if-match", "\"2\"")],
        )
        .await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.body);
    assert_eq!(fresh.body["version"], 3);
    system.stop().await;
}

#[tokio::test]
async fn of_racing_writers_with_the_same_if_match_exactly_one_wins() {
    let system = TestSystem::start().await;
    let contact = system.create_contact(json!({"name": "Raced"})).await;
    let path = format!("/contacts/{contact}/tags");
    let replies = join_all((0..10).map(|i| {
        let system = &system;
        let path = path.clone();
        async move {
            system
                .command_as(
                    &system.tenant,
                    Method::POST,
                    &path,
                    Some(json!({"tag": format!("t{i}")})),
                    &[("if-match", "\"1\"")],
                )
                .await
        }
    }))
    .await;
    let won = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    for lost in replies.iter().filter(|r| r.status != StatusCode::OK) {
        lost.assert_problem(412);
    }
    assert_eq!(won, 1, "exactly one writer at version 1 wins");
    assert_eq!(system.rows("contact_event_store").await, 2);
    system.stop().await;
}

#[tokio::test]
async fn more_concurrent_session_commands_than_pooled_connections_all_go_through() {
    // Each session command reads its session and its contact: both inside the command's one
    // transaction, never a second connection per command (which deadlocks a full pool).
    let system = TestSystem::start().await;
    let mut sessions = Vec::new();
    for i in 0..48 {
        let contact = system
            .create_contact(json!({ "name": format!("c{i}") }))
            .await;
        let inbound = system
            .command(
                Method::POST,
                &format!("/contacts/{contact}/messages"),
                Some(json!({"channel_type_id": 1, "from_contact": true})),
            )
            .await;
        sessions.push(inbound.id("session_id"));
    }
    let paths: Vec<String> = sessions
        .iter()
        .map(|s| format!("/sessions/{s}/messages"))
        .collect();
    let replies = join_all(
        paths
            .iter()
            .map(|path| system.command(Method::POST, path, Some(json!({"from_contact": false})))),
    )
    .await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    // With a second connection per command, a full pool waits out its acquire timeout: 503s.
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    system.stop().await;
}
