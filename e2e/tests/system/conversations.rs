//! Issue 17, conversations: messages with their content, read back as a conversation; a repeat of a
//! channel's message stores nothing new; content rules refuse with nothing written.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use e2e::TestSystem;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

const AGENT: &str = "0190f1f0-0000-7000-8000-0000000000b1";

/// When turn `i` was sent: half a minute apart, the last well within the session's timeout (the
/// sweeper must not end it meanwhile).
fn sent_at(start: DateTime<Utc>, i: usize) -> String {
    (start + Duration::seconds(30 * i as i64)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The message body of turn `i` of the conversation: the contact and the agent take turns; turn
/// 6 is a photo and turn 9 answers turn 3.
fn turn(start: DateTime<Utc>, i: usize, replies_to: Option<Uuid>) -> Value {
    let from_contact = i.is_multiple_of(2);
    let mut body = json!({
        "from_contact": from_contact,
        "sent_at": sent_at(start, i),
        "text": format!("turn {i}: {}", if from_contact { "hello, a question" } else { "an answer" }),
        "channel_message_id": format!("wamid.turn-{i}"),
    });
    if !from_contact {
        body["agent_id"] = json!(AGENT);
    }
    if i == 6 {
        body["content_type"] = json!("image");
        body["media_url"] = json!("https://media.example/receipt.jpg");
        body["media_mimetype"] = json!("image/jpeg");
    }
    if let Some(id) = replies_to {
        body["reply_to"] = json!(id);
    }
    body
}

/// Turn `i` sent to the contact on channel `channel` (the route that finds or opens the session).
fn turn_on_channel(start: DateTime<Utc>, i: usize, channel: i64) -> Value {
    let mut body = turn(start, i, None);
    body["channel_type_id"] = json!(channel);
    body
}

/// The message id a command's answer names: its last event, the `session.message_recorded`.
fn message_id(reply: &e2e::Reply) -> Uuid {
    let ids = reply.body["event_ids"].as_array().expect("event_ids");
    ids.last()
        .expect("an event")
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn page(system: &TestSystem, path: &str) -> (Vec<Value>, Option<String>) {
    let reply = system.query(path).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    let items = reply.body["items"].as_array().unwrap().clone();
    let next = reply.body["next_cursor"].as_str().map(str::to_owned);
    (items, next)
}

fn texts(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_conversation_reads_back_in_order_with_its_content_and_a_repeat_adds_nothing() {
    let system = TestSystem::start().await;
    let contact = system.create_contact(json!({"name": "Rita Lobo"})).await;
    let start = DateTime::from_timestamp(Utc::now().timestamp() - 15 * 60, 0).unwrap();

    // Turn 0 arrives for the contact and opens a session; the rest go to that session.
    let first = system
        .command(
            Method::POST,
            &format!("/contacts/{contact}/messages"),
            Some(turn_on_channel(start, 0, 1)),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let session = first.id("session_id");
    let mut ids = vec![message_id(&first)];
    let mut session_version = first.body["session_version"].as_i64().unwrap();
    for i in 1..20 {
        let reply_to = (i == 9).then(|| ids[3]);
        let reply = system
            .command(
                Method::POST,
                &format!("/sessions/{session}/messages"),
                Some(turn(start, i, reply_to)),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "turn {i}: {}", reply.body);
        ids.push(message_id(&reply));
        session_version = reply.body["version"].as_i64().unwrap();
    }
    let written = system.rows("contact_event_store").await;

    // The channel delivers turn 5 again: the same message, nothing new.
    let again = system
        .command(
            Method::POST,
            &format!("/sessions/{session}/messages"),
            Some(turn(start, 5, None)),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["event_ids"], json!([]), "{}", again.body);
    assert_eq!(again.body["version"], session_version);
    // Through the contact's route too, even with another time and text.
    let again = system
        .command(
            Method::POST,
            &format!("/contacts/{contact}/messages"),
            Some(
                json!({"channel_type_id": 1, "from_contact": true, "text": "resent",
                        "channel_message_id": "wamid.turn-0"}),
            ),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["event_ids"], json!([]), "{}", again.body);
    assert_eq!(again.body["session_id"], session.to_string());
    // The same channel id on another channel is another message.
    let elsewhere = system
        .command(
            Method::POST,
            &format!("/contacts/{contact}/messages"),
            Some(json!({"channel_type_id": 2, "from_contact": true,
                        "channel_message_id": "wamid.turn-0"})),
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::OK, "{}", elsewhere.body);
    assert_eq!(
        elsewhere.body["event_ids"].as_array().unwrap().len(),
        3,
        "a session opened on channel 2 for it: {}",
        elsewhere.body
    );
    assert_eq!(system.rows("contact_event_store").await, written + 3);

    // Read back in pages of 8, oldest first, after the read model caught up.
    let mut all = Vec::new();
    let mut path = format!("/sessions/{session}/messages?limit=8&min_version={session_version}");
    loop {
        let (items, next) = page(&system, &path).await;
        assert!(items.len() <= 8);
        all.extend(items);
        match next {
            Some(cursor) => path = format!("/sessions/{session}/messages?limit=8&after={cursor}"),
            None => break,
        }
    }
    assert_eq!(all.len(), 20, "every message once: {all:#?}");
    let said: Vec<String> = (0..20)
        .map(|i| turn(start, i, None)["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts(&all), said);
    for (i, message) in all.iter().enumerate() {
        assert_eq!(message["id"], ids[i].to_string());
        assert_eq!(message["session_id"], session.to_string());
        assert_eq!(message["contact_id"], contact.to_string());
        assert_eq!(message["from_contact"], i.is_multiple_of(2));
        assert_eq!(message["channel_type_id"], 1);
        assert_eq!(message["channel_message_id"], format!("wamid.turn-{i}"));
        assert_eq!(message["sent_at"], sent_at(start, i), "{message}");
    }
    assert_eq!(all[1]["agent_id"], AGENT);
    assert_eq!(all[0]["content_type"], "text");
    assert_eq!(all[6]["content_type"], "image");
    assert_eq!(all[6]["media_url"], "https://media.example/receipt.jpg");
    assert_eq!(all[6]["media_mimetype"], "image/jpeg");
    assert_eq!(all[9]["reply_to"], ids[3].to_string());
    assert_eq!(all[8]["reply_to"], Value::Null);

    // The page that ends right before turn 10, and the one before it.
    let (before, next) = page(
        &system,
        &format!("/sessions/{session}/messages?limit=4&before={}", ids[10]),
    )
    .await;
    assert_eq!(texts(&before), said[6..10]);
    assert_eq!(next.as_deref(), Some(ids[6].to_string().as_str()));
    let (earlier, _) = page(
        &system,
        &format!("/sessions/{session}/messages?limit=4&before={}", ids[6]),
    )
    .await;
    assert_eq!(texts(&earlier), said[2..6]);

    // The contact's conversation spans its sessions: 20 here and 1 on channel 2.
    let contact_version = elsewhere.body["version"].as_i64().unwrap();
    let (of_contact, next) = page(
        &system,
        &format!("/contacts/{contact}/messages?limit=100&min_version={contact_version}"),
    )
    .await;
    assert_eq!(next, None);
    assert_eq!(of_contact.len(), 21);
    assert_eq!(texts(&of_contact[..20]), said);
    assert_eq!(of_contact[20]["channel_type_id"], 2);

    // Another project's message with the same channel id is its own: stored, and A's
    // conversation does not show it.
    let b = TestSystem::bootstrap_tenant(&system.db.pool, "tenant-b").await;
    let b_contact = system
        .command_as(
            &b,
            Method::POST,
            "/contacts",
            Some(json!({"name": "B"})),
            &[],
        )
        .await
        .id("id");
    let b_message = system
        .command_as(
            &b,
            Method::POST,
            &format!("/contacts/{b_contact}/messages"),
            Some(
                json!({"channel_type_id": 1, "from_contact": true, "text": "B's words",
                        "channel_message_id": "wamid.turn-0"}),
            ),
            &[],
        )
        .await;
    assert_eq!(b_message.status, StatusCode::OK, "{}", b_message.body);
    assert_eq!(b_message.body["event_ids"].as_array().unwrap().len(), 3);
    assert_ne!(message_id(&b_message), ids[0]);

    // Full-text search within the tenant: every word of a query, newest first, each hit with
    // its contact and session; another tenant's words are not found.
    let b_version = b_message.body["session_version"].as_i64().unwrap();
    let b_session = b_message.id("session_id");
    let seen = system
        .query_as(
            &b,
            &format!("/sessions/{b_session}?min_version={b_version}"),
        )
        .await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.body);
    let (hits, next) = page(&system, "/messages?q=question&limit=4").await;
    assert_eq!(hits.len(), 4);
    let newest: Vec<String> = (0..20).step_by(2).rev().map(|i| said[i].clone()).collect();
    let found: Vec<String> = hits
        .iter()
        .map(|h| h["message"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(found, newest[..4]);
    assert_eq!(hits[0]["contact"]["id"], contact.to_string());
    assert_eq!(hits[0]["contact"]["name"], "Rita Lobo");
    assert_eq!(hits[0]["session"]["id"], session.to_string());
    assert_eq!(hits[0]["session"]["status"], "active");
    let (rest, _) = page(
        &system,
        &format!("/messages?q=question&limit=100&cursor={}", next.unwrap()),
    )
    .await;
    assert_eq!(rest.len(), 6, "the other contact messages, once each");
    let (phrase, _) = page(&system, "/messages?q=%22an%20answer%22%20-7").await;
    assert_eq!(phrase.len(), 9, "a phrase and an excluded word: {phrase:?}");
    let (none, _) = page(&system, "/messages?q=words").await;
    assert_eq!(none, Vec::<Value>::new(), "B's message is B's alone");
    let of_b = system.query_as(&b, "/messages?q=words").await;
    assert_eq!(
        of_b.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        of_b.body
    );
    for bad in ["/messages", "/messages?q=", "/messages?q=%20%20"] {
        let reply = system.query(bad).await;
        assert!(
            reply.status == StatusCode::BAD_REQUEST
                || reply.status == StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {} {}",
            reply.status,
            reply.body
        );
    }
    system
        .query(&format!("/messages?q={}", "x".repeat(201)))
        .await
        .assert_problem(422);

    // A reply names a message of its own contact: B's message is not one of A's contact's.
    let across = system
        .command(
            Method::POST,
            &format!("/contacts/{contact}/messages"),
            Some(
                json!({"channel_type_id": 1, "from_contact": true, "text": "re",
                        "reply_to": message_id(&b_message)}),
            ),
        )
        .await;
    across.assert_problem(422);

    // The session's metrics count each message once.
    let metrics = system.query(&format!("/sessions/{session}")).await;
    assert_eq!(metrics.body["message_count"], 20, "{}", metrics.body);
    assert_eq!(metrics.body["messages_from_contact"], 10);

    // A cursor of no message of this conversation is 404; two directions at once, 422.
    system
        .query(&format!(
            "/sessions/{session}/messages?after={}",
            Uuid::now_v7()
        ))
        .await
        .assert_problem(404);
    system
        .query(&format!(
            "/sessions/{session}/messages?after={}&before={}",
            ids[1], ids[2]
        ))
        .await
        .assert_problem(422);
    system
        .query(&format!("/sessions/{}/messages", Uuid::now_v7()))
        .await
        .assert_problem(404);
    // The messages table is what a rebuild from the history gives.
    system
        .wait_until_projected(std::time::Duration::from_secs(30))
        .await;
    assert_eq!(
        system.verify().await,
        Vec::new(),
        "verify finds no difference"
    );
    system.stop().await;
}

#[tokio::test]
async fn content_that_breaks_a_rule_is_refused_with_the_field_and_nothing_is_written() {
    let system = TestSystem::start().await;
    let contact = system.create_contact(json!({"name": "Rui"})).await;
    let session = system.open_session(contact).await;
    let before = system.rows("contact_event_store").await;
    let in_an_hour = (Utc::now() + Duration::hours(1)).to_rfc3339();
    for (body, field) in [
        (json!({"sent_at": in_an_hour}), "sent_at"),
        (json!({"text": "x".repeat(4_097)}), "text"),
        (json!({"text": ""}), "text"),
        (json!({"content_type": "gif"}), "content_type"),
        (json!({"content_type": "video"}), "media_url"),
        (json!({"media_url": "javascript:alert(1)"}), "media_url"),
        (
            json!({"media_url": "https://x.example/a", "media_mimetype": "not a type"}),
            "media_mimetype",
        ),
        (
            json!({"channel_message_id": "two words"}),
            "channel_message_id",
        ),
        (
            json!({"channel_message_id": "x".repeat(256)}),
            "channel_message_id",
        ),
        (json!({"text": "nul\u{0}inside"}), "text"),
    ] {
        let mut message = json!({"from_contact": true});
        message
            .as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        let reply = system
            .command(
                Method::POST,
                &format!("/sessions/{session}/messages"),
                Some(message),
            )
            .await;
        reply.assert_problem(422);
        assert_eq!(
            reply.body["errors"][0]["field"], field,
            "{body}: {}",
            reply.body
        );
    }
    let stranger = system
        .command(
            Method::POST,
            &format!("/sessions/{session}/messages"),
            Some(json!({"from_contact": true, "text": "re", "reply_to": Uuid::now_v7()})),
        )
        .await;
    stranger.assert_problem(422);
    assert_eq!(
        stranger.body["errors"][0]["field"], "reply_to",
        "{}",
        stranger.body
    );
    let wrong_type = system
        .command(
            Method::POST,
            &format!("/sessions/{session}/messages"),
            Some(json!({"from_contact": true, "text": 42})),
        )
        .await;
    wrong_type.assert_problem(400);
    // The contact's route holds the same bound.
    let ahead = system
        .command(
            Method::POST,
            &format!("/contacts/{contact}/messages"),
            Some(json!({"channel_type_id": 1, "from_contact": true, "sent_at": in_an_hour})),
        )
        .await;
    ahead.assert_problem(422);
    assert_eq!(
        ahead.body["errors"][0]["field"], "sent_at",
        "{}",
        ahead.body
    );
    assert_eq!(system.rows("contact_event_store").await, before);
    // A clock a little ahead of the service's is a clock, not an error.
    let a_little_ahead = system
        .command(
            Method::POST,
            &format!("/sessions/{session}/messages"),
            Some(json!({"from_contact": true, "sent_at": (Utc::now() + Duration::minutes(2)).to_rfc3339()})),
        )
        .await;
    assert_eq!(
        a_little_ahead.status,
        StatusCode::OK,
        "{}",
        a_little_ahead.body
    );
    system.stop().await;
}
