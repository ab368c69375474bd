//! The command-service's aggregate cache never decides on a stale state: a write by another
//! instance (here a second command handler on the same database, with no cache) is seen by the
//! next command, a decision on the cache alone is checked by its write, and another tenant
//! asking for a cached id still gets 404.

use command_service::commands::{Actor, Command, CommandMeta};
use command_service::{system_clock, CommandHandler};
use e2e::TestSystem;
use event_model::session::NewMessage;
use event_model::{ContactCommand, SessionCommand};
use platform::event_store::EventStore;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_by_another_instance_is_seen_by_the_next_command() {
    let system = TestSystem::start().await;
    let contact = system
        .create_contact(json!({"name": "Cached", "tags": ["a"]}))
        .await;
    // The service now holds the contact at version 1 (and 2 after this).
    let reply = system
        .command(
            Method::POST,
            &format!("/contacts/{contact}/tags"),
            Some(json!({"tag": "b"})),
        )
        .await;
    assert_eq!(reply.body["version"], 2, "{}", reply.body);

    // Another instance writes version 3.
    let other = CommandHandler::new(
        EventStore::new(system.db.pool.clone()),
        system.keys(),
        system_clock(),
        100,
        10,
    );
    let actor = Actor {
        tenant_id: system.tenant.tenant_id.clone(),
        project_id: system.tenant.project_id,
        user_id: Some(system.tenant.user_id),
        session_timeout: event_model::values::SessionTimeout::from_minutes(30),
        ends_any_session: true,
    };
    let meta = CommandMeta {
        correlation_id: Uuid::now_v7(),
        causation_id: Uuid::now_v7(),
        if_match: None,
    };
    let written = other
        .execute(
            &actor,
            meta,
            Command::Contact {
                contact_id: contact,
                command: ContactCommand::AddTag { tag: "c".into() },
            },
            None,
        )
        .await
        .expect("the other instance's command")
        .now()
        .expect("decided now");
    assert_eq!(written.version, 3);

    // The service's next command decides on version 3: If-Match 3 is accepted, and the tag
    // written elsewhere is there.
    let reply = system
        .command_as(
            &system.tenant,
            Method::POST,
            &format!("/contacts/{contact}/tags"),
            Some(json!({"tag": "d"})),
            &[("if-match", "\"3\"")],
        )
        .await;
    assert_eq!(reply.body["version"], 4, "{}", reply.body);
    // Removing the tag the other instance added is a change (not a no-op on a stale state).
    let reply = system
        .command(Method::DELETE, &format!("/contacts/{contact}/tags/c"), None)
        .await;
    assert_eq!(reply.body["version"], 5, "{}", reply.body);

    let read = system
        .query(&format!("/contacts/{contact}?min_version=5"))
        .await;
    assert_eq!(read.body["tags"], json!(["a", "b", "d"]), "{}", read.body);
    assert_eq!(read.body["version"], 5);

    // The same for a session and its contact, read together: the service holds the session (and
    // its contact), the other instance records a message.
    let session = system.open_session(contact).await;
    let opened_at: i64 = sqlx::query_scalar(
        "select max(sequence_number) from contact_event_store where aggregate_id = $1",
    )
    .bind(session)
    .fetch_one(&system.db.pool)
    .await
    .unwrap();
    let written = other
        .execute(
            &actor,
            meta,
            Command::Session {
                session_id: session,
                command: SessionCommand::RecordMessage(NewMessage {
                    message_id: None,
                    from_contact: true,
                    agent_id: None,
                    sent_at: chrono::Utc::now(),
                    content: Default::default(),
                }),
            },
            None,
        )
        .await
        .expect("the other instance's message")
        .now()
        .expect("decided now");
    assert_eq!(written.version, opened_at + 1);
    let if_match = format!("\"{}\"", written.version);
    let reply = system
        .command_as(
            &system.tenant,
            Method::POST,
            &format!("/sessions/{session}/messages"),
            Some(json!({"from_contact": true})),
            &[("if-match", if_match.as_str())],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["version"], written.version + 1, "{}", reply.body);

    system.wait_until_projected(Duration::from_secs(20)).await;
    let read = system
        .query(&format!(
            "/sessions/{session}?min_version={}",
            written.version + 1
        ))
        .await;
    assert_eq!(read.body["version"], written.version + 1, "{}", read.body);
    assert_eq!(
        read.body["message_count"], 3,
        "three messages: {}",
        read.body
    );

    // Every stream now cached is current, so the service decides on its cache alone; a write
    // elsewhere makes that decision a lost race, decided again on the store: once for a stream
    // the command appends to (its next position is taken), once for a stream it only reads
    // (the session's contact, checked by the write).
    let retried = || system.sample(&system.command_url, "commands_retried_total", &[]);
    let retries_before = retried().await;
    let tag_elsewhere = |tag: &'static str| {
        let (other, actor) = (&other, &actor);
        async move {
            other
                .execute(
                    actor,
                    meta,
                    Command::Contact {
                        contact_id: contact,
                        command: ContactCommand::AddTag { tag: tag.into() },
                    },
                    None,
                )
                .await
                .expect("the other instance's tag")
                .now()
                .expect("decided now")
                .version
        }
    };
    let contact_at = tag_elsewhere("e").await;
    let reply = system
        .command(
            Method::POST,
            &format!("/contacts/{contact}/tags"),
            Some(json!({"tag": "f"})),
        )
        .await;
    assert_eq!(reply.body["version"], contact_at + 1, "{}", reply.body);
    assert_eq!(retried().await - retries_before, 1.0);
    tag_elsewhere("g").await;
    let reply = system
        .command(
            Method::POST,
            &format!("/sessions/{session}/messages"),
            Some(json!({"from_contact": true})),
        )
        .await;
    assert_eq!(reply.body["version"], written.version + 2, "{}", reply.body);
    assert_eq!(retried().await - retries_before, 2.0);
    let read = system
        .query(&format!(
            "/contacts/{contact}?min_version={}",
            contact_at + 2
        ))
        .await;
    assert_eq!(
        read.body["tags"],
        json!(["a", "b", "d", "e", "f", "g"]),
        "{}",
        read.body
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_asking_for_a_cached_id_gets_404_and_writes_nothing() {
    let system = TestSystem::start().await;
    let contact = system.create_contact(json!({"name": "Mine"})).await;
    let other = TestSystem::bootstrap_tenant(&system.db.pool, "other-tenant").await;
    let before = system.rows("contact_event_store").await;

    let reply = system
        .command_as(
            &other,
            Method::POST,
            &format!("/contacts/{contact}/tags"),
            Some(json!({"tag": "x"})),
            &[],
        )
        .await;
    reply.assert_problem(404);
    assert_eq!(system.rows("contact_event_store").await, before);
    system.stop().await;
}
