//! Acceptance 9: bad input on every command route gets the right problem+json status and writes
//! nothing.

use e2e::TestSystem;
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

/// Every command route that takes a body, with a valid body for it.
fn routes(contact: Uuid, session: Uuid) -> Vec<(Method, String, serde_json::Value)> {
    vec![
        (
            Method::POST,
            "/contacts".to_owned(),
            json!({"name": "Valid"}),
        ),
        (
            Method::PATCH,
            format!("/contacts/{contact}"),
            json!({"name": "Valid"}),
        ),
        (
            Method::POST,
            format!("/contacts/{contact}/tags"),
            json!({"tag": "valid"}),
        ),
        (
            Method::PUT,
            format!("/contacts/{contact}/profile-picture"),
            json!({"url": "https://x.io/p.png"}),
        ),
        (
            Method::POST,
            format!("/contacts/{contact}/messages"),
            json!({"channel_type_id": 1, "from_contact": true}),
        ),
        (
            Method::POST,
            format!("/contacts/{contact}/sessions"),
            json!({"channel_type_id": 3}),
        ),
        (
            Method::POST,
            format!("/sessions/{session}/messages"),
            json!({"from_contact": true}),
        ),
        (
            Method::POST,
            format!("/sessions/{session}/agents"),
            json!({"agent_id": Uuid::now_v7()}),
        ),
        (
            Method::PUT,
            format!("/sessions/{session}/summary"),
            json!({"summary": "fine"}),
        ),
        (
            Method::PUT,
            format!("/sessions/{session}/outcome"),
            json!({"escalated": true}),
        ),
        (
            Method::POST,
            format!("/sessions/{session}/end"),
            json!({"reason": "manual_close"}),
        ),
    ]
}

#[tokio::test]
async fn malformed_requests_on_every_command_route_are_refused_and_write_nothing() {
    let system = TestSystem::start().await;
    let contact = system.create_contact(json!({"name": "Target"})).await;
    let session = system.open_session(contact).await;
    let before = system.rows("contact_event_store").await;

    for (method, path, valid) in routes(contact, session) {
        let json_ct = Some("application/json");
        let cases: Vec<(&str, Option<&str>, Vec<u8>, u16)> = vec![
            ("malformed JSON", json_ct, b"{\"name\": ".to_vec(), 400),
            ("not an object", json_ct, b"[1, 2]".to_vec(), 400),
            (
                "unknown field",
                json_ct,
                {
                    let mut v = valid.clone();
                    v["surprise"] = json!(true);
                    serde_json::to_vec(&v).unwrap()
                },
                400,
            ),
            (
                "wrong type",
                json_ct,
                {
                    let mut v = valid.clone();
                    let key = v.as_object().unwrap().keys().next().unwrap().clone();
                    v[&key] = json!({"nested": [1]});
                    serde_json::to_vec(&v).unwrap()
                },
                400,
            ),
            (
                "wrong content type",
                Some("text/plain"),
                serde_json::to_vec(&valid).unwrap(),
                415,
            ),
            (
                "no content type",
                None,
                serde_json::to_vec(&valid).unwrap(),
                415,
            ),
            (
                "oversize body",
                json_ct,
                {
                    let mut v = valid.clone();
                    v["padding"] = json!("x".repeat(300 * 1024));
                    serde_json::to_vec(&v).unwrap()
                },
                413,
            ),
        ];
        for (what, content_type, body, status) in cases {
            let reply = system
                .send_raw(method.clone(), &path, content_type, body)
                .await;
            assert_eq!(
                reply.status.as_u16(),
                status,
                "{what} on {method} {path}: {}",
                reply.body
            );
            reply.assert_problem(status);
        }
        // An invalid UUID in the path (where there is one).
        if path.contains(&contact.to_string()) || path.contains(&session.to_string()) {
            let bad = path
                .replace(&contact.to_string(), "not-a-uuid")
                .replace(&session.to_string(), "not-a-uuid");
            let reply = system
                .send_raw(
                    method.clone(),
                    &bad,
                    Some("application/json"),
                    serde_json::to_vec(&valid).unwrap(),
                )
                .await;
            reply.assert_problem(400);
        }
    }
    let bad_project = format!("{}/v1/projects/not-a-uuid/contacts", system.command_url);
    let reply = system
        .send(
            Method::POST,
            &bad_project,
            Some(&system.tenant.api_key),
            Some(&json!({"name": "x"})),
            &[],
        )
        .await;
    reply.assert_problem(400);
    assert_eq!(
        system.rows("contact_event_store").await,
        before,
        "nothing was written"
    );
    system.stop().await;
}

#[tokio::test]
async fn field_rules_are_422_with_the_failing_fields_and_write_nothing() {
    let system = TestSystem::start().await;
    let contact = system.create_contact(json!({"name": "Target"})).await;
    let session = system.open_session(contact).await;
    let before = system.rows("contact_event_store").await;
    let cases = vec![
        (
            Method::POST,
            "/contacts".to_owned(),
            json!({"name": "X", "email": "not-an-email"}),
            vec!["email"],
        ),
        (
            Method::POST,
            "/contacts".to_owned(),
            json!({"name": "X", "phone": "12345"}),
            vec!["phone"],
        ),
        (
            Method::POST,
            "/contacts".to_owned(),
            json!({"email": "a@b.io"}),
            vec!["name"],
        ),
        (
            Method::POST,
            "/contacts".to_owned(),
            json!({"name": "X", "tags": ["", "y".repeat(65)]}),
            vec!["tags[0]", "tags[1]"],
        ),
        (
            Method::PATCH,
            format!("/contacts/{contact}"),
            json!({"email": "bad@", "phone": "+1"}),
            vec!["email", "phone"],
        ),
        (
            Method::PATCH,
            format!("/contacts/{contact}"),
            json!({"name": null}),
            vec!["name"],
        ),
        (
            Method::POST,
            format!("/contacts/{contact}/tags"),
            json!({"tag": "   "}),
            vec!["tag"],
        ),
        (
            Method::POST,
            format!("/contacts/{contact}/tags"),
            json!({"tag": "z".repeat(65)}),
            vec!["tag"],
        ),
        (
            Method::PUT,
            format!("/contacts/{contact}/profile-picture"),
            json!({"url": "ftp://x"}),
            vec!["url"],
        ),
        (
            Method::POST,
            format!("/contacts/{contact}/messages"),
            json!({"channel_type_id": 999, "from_contact": true}),
            vec!["channel_type_id"],
        ),
        (
            Method::PUT,
            format!("/sessions/{session}/summary"),
            json!({"summary": "s", "sentiment_score": 1.5}),
            vec!["sentiment_score"],
        ),
        (
            Method::PUT,
            format!("/sessions/{session}/summary"),
            json!({"summary": "s", "sentiment": "angry"}),
            vec!["sentiment"],
        ),
        (
            Method::POST,
            format!("/sessions/{session}/end"),
            json!({"reason": "inactivity_timeout"}),
            vec!["reason"],
        ),
        (
            Method::POST,
            format!("/sessions/{session}/agents"),
            json!({"agent_id": Uuid::now_v7(), "source": "psychic"}),
            vec!["source"],
        ),
        (
            Method::POST,
            format!("/sessions/{session}/agents"),
            // The reason after `reassignment_` is a word, not free text with control characters.
            json!({"agent_id": Uuid::now_v7(), "source": "reassignment_late \u{7}"}),
            vec!["source"],
        ),
    ];
    for (method, path, body, fields) in cases {
        let reply = system
            .command(method.clone(), &path, Some(body.clone()))
            .await;
        reply.assert_problem(422);
        let got: Vec<&str> = reply.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(got, fields, "{method} {path} {body}");
    }
    assert_eq!(
        system.rows("contact_event_store").await,
        before,
        "nothing was written"
    );
    // Unicode and SQL-looking text is stored and returned exactly.
    let odd = "Zoë 🚀 '); drop table contacts; --";
    let id = system.create_contact(json!({"name": odd})).await;
    let read = system.query(&format!("/contacts/{id}?min_version=1")).await;
    assert_eq!(read.body["name"], odd);
    assert_eq!(read.status, StatusCode::OK);
    system.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_body() {
    let system = TestSystem::start().await;
    let headers = [
        ("idempotency-key", "create-ana-1"),
        ("x-correlation-id", "req-42"),
    ];
    let body = json!({"name": "Ana"});
    let first = system
        .command_as(
            &system.tenant,
            Method::POST,
            "/contacts",
            Some(body.clone()),
            &headers,
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.header("x-correlation-id"), Some("req-42"));
    let again = system
        .command_as(
            &system.tenant,
            Method::POST,
            "/contacts",
            Some(body),
            &headers,
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body, "the very same answer");
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(system.rows("contact_event_store").await, 1, "written once");
    let other = system
        .command_as(
            &system.tenant,
            Method::POST,
            "/contacts",
            Some(json!({"name": "Bob"})),
            &headers,
        )
        .await;
    other.assert_problem(422);
    assert_eq!(system.rows("contact_event_store").await, 1);
    let correlation: Uuid = sqlx::query_scalar("select correlation_id from contact_event_store")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(
        correlation,
        Uuid::new_v5(&Uuid::NAMESPACE_OID, b"req-42"),
        "the correlation id is carried into the event"
    );
    system.stop().await;
}
