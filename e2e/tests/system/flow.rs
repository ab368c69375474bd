//! Acceptance 1 and 2: a contact's life through every command, read back with the right fields
//! and metrics, and the store, outbox, audit log and processed_events in the shape they must be.

use std::time::Duration;

use e2e::TestSystem;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

const AGENT_1: &str = "0190f1f0-0000-7000-8000-0000000000a1";
const AGENT_2: &str = "0190f1f0-0000-7000-8000-0000000000a2";

struct Story {
    contact_id: Uuid,
    session_id: Uuid,
    contact_version: i64,
    session_version: i64,
    event_ids: Vec<Uuid>,
}

/// Create, tag, inbound message (opens a session), agent reply, assignment, transfer,
/// summary, end.
async fn tell_the_story(system: &TestSystem) -> Story {
    let mut event_ids = Vec::new();
    let mut ids = |reply: &e2e::Reply| {
        for id in reply.body["event_ids"].as_array().expect("event_ids") {
            event_ids.push(Uuid::parse_str(id.as_str().unwrap()).unwrap());
        }
    };
    let created = system
        .command(
            Method::POST,
            "/contacts",
            Some(json!({"name": "Ana Souza", "email": "Ana@Example.com", "phone": "+55 11 98765-4321",
                        "language": "pt-BR", "tags": ["lead"]})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let contact_id = created.id("id");
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(
        created.header("location").map(str::to_owned),
        Some(format!(
            "/v1/projects/{}/contacts/{contact_id}",
            system.tenant.project_id
        ))
    );
    assert!(created.header("x-correlation-id").is_some());
    ids(&created);

    let tagged = system
        .command(
            Method::POST,
            &format!("/contacts/{contact_id}/tags"),
            Some(json!({"tag": "vip"})),
        )
        .await;
    assert_eq!(tagged.status, StatusCode::OK, "{}", tagged.body);
    assert_eq!(tagged.body["version"], 2);
    ids(&tagged);

    let inbound = system
        .command(
            Method::POST,
            &format!("/contacts/{contact_id}/messages"),
            Some(json!({"channel_type_id": 1, "from_contact": true, "sent_at": "2026-01-05T10:00:00Z",
                        "message_id": Uuid::now_v7()})),
        )
        .await;
    assert_eq!(inbound.status, StatusCode::OK, "{}", inbound.body);
    let session_id = inbound.id("session_id");
    assert_eq!(
        inbound.body["version"], 3,
        "contact.session_opened is the contact's 3rd event"
    );
    assert_eq!(
        inbound.body["session_version"], 2,
        "session.started + message_recorded"
    );
    ids(&inbound);

    let reply = system
        .command(
            Method::POST,
            &format!("/sessions/{session_id}/messages"),
            Some(json!({"from_contact": false, "agent_id": AGENT_1, "sent_at": "2026-01-05T10:01:30Z"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["version"], 3);
    ids(&reply);

    for (agent, version) in [(AGENT_1, 4), (AGENT_2, 5)] {
        let assigned = system
            .command(
                Method::POST,
                &format!("/sessions/{session_id}/agents"),
                Some(json!({"agent_id": agent, "source": "manual", "reason": "shift"})),
            )
            .await;
        assert_eq!(assigned.status, StatusCode::OK, "{}", assigned.body);
        assert_eq!(assigned.body["version"], version);
        ids(&assigned);
    }
    let again = system
        .command(
            Method::POST,
            &format!("/sessions/{session_id}/agents"),
            Some(json!({"agent_id": AGENT_2})),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again.body["event_ids"],
        json!([]),
        "assigning the present agent emits nothing"
    );

    let summarized = system
        .command(
            Method::PUT,
            &format!("/sessions/{session_id}/summary"),
            Some(json!({"summary": "Asked about pricing", "sentiment": "positive", "sentiment_score": 0.75,
                        "topics": ["pricing"], "next_steps": ["send quote"], "key_entities": {"plan": "pro"}})),
        )
        .await;
    assert_eq!(summarized.status, StatusCode::OK, "{}", summarized.body);
    ids(&summarized);

    let ended = system
        .command(
            Method::POST,
            &format!("/sessions/{session_id}/end"),
            Some(json!({"reason": "agent_close"})),
        )
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.body);
    assert_eq!(ended.body["version"], 7);
    ids(&ended);
    let twice = system
        .command(
            Method::POST,
            &format!("/sessions/{session_id}/end"),
            Some(json!({"reason": "agent_close"})),
        )
        .await;
    twice.assert_problem(409);

    Story {
        contact_id,
        session_id,
        contact_version: 4,
        session_version: 7,
        event_ids,
    }
}

fn assert_contact(contact: &Value, story: &Story) {
    assert_eq!(contact["id"], story.contact_id.to_string());
    assert_eq!(contact["name"], "Ana Souza");
    assert_eq!(contact["email"], "ana@example.com");
    assert_eq!(contact["phone"], "+5511987654321");
    assert_eq!(contact["language"], "pt-BR");
    assert_eq!(contact["tags"], json!(["lead", "vip"]));
    assert_eq!(contact["version"], story.contact_version);
    assert_eq!(contact["first_interaction_at"], "2026-01-05T10:00:00Z");
    assert_eq!(contact["last_interaction_at"], "2026-01-05T10:01:30Z");
    assert_eq!(contact["deleted_at"], Value::Null);
}

fn assert_session(session: &Value, story: &Story) {
    assert_eq!(session["contact_id"], story.contact_id.to_string());
    assert_eq!(session["status"], "ended");
    assert_eq!(session["end_reason"], "agent_close");
    assert_eq!(session["channel_type_id"], 1);
    assert_eq!(session["started_at"], "2026-01-05T10:00:00Z");
    assert_eq!(session["message_count"], 2);
    assert_eq!(session["messages_from_contact"], 1);
    assert_eq!(session["messages_from_agent"], 1);
    assert_eq!(session["first_contact_message_at"], "2026-01-05T10:00:00Z");
    assert_eq!(session["first_agent_response_at"], "2026-01-05T10:01:30Z");
    assert_eq!(session["agent_response_time_seconds"], 90);
    assert_eq!(session["contact_wait_time_seconds"], Value::Null);
    assert_eq!(session["last_activity_at"], "2026-01-05T10:01:30Z");
    assert_eq!(session["agent_ids"], json!([AGENT_1, AGENT_2]));
    assert_eq!(session["agent_transfers"], 1);
    assert_eq!(session["summary"], "Asked about pricing");
    assert_eq!(session["sentiment"], "positive");
    assert_eq!(session["sentiment_score"], 0.75);
    assert_eq!(session["topics"], json!(["pricing"]));
    assert_eq!(session["key_entities"], json!({"plan": "pro"}));
    assert_eq!(session["timeout_duration"], 1_800_000_000_000i64);
    assert_eq!(session["version"], story.session_version);
    // Ended now, started (by the message's own time) in January: the duration is event times'.
    let started =
        chrono::DateTime::parse_from_rfc3339(session["started_at"].as_str().unwrap()).unwrap();
    let ended =
        chrono::DateTime::parse_from_rfc3339(session["ended_at"].as_str().unwrap()).unwrap();
    assert_eq!(session["duration_seconds"], (ended - started).num_seconds());
}

#[tokio::test]
async fn a_contact_and_its_session_read_back_with_every_metric_via_min_version() {
    let system = TestSystem::start().await;
    let story = tell_the_story(&system).await;

    let contact = system
        .query(&format!(
            "/contacts/{}?min_version={}",
            story.contact_id, story.contact_version
        ))
        .await;
    assert_eq!(contact.status, StatusCode::OK, "{}", contact.body);
    assert_eq!(contact.header("etag"), Some("\"4\""));
    assert_contact(&contact.body, &story);

    let session = system
        .query(&format!(
            "/sessions/{}?min_version={}",
            story.session_id, story.session_version
        ))
        .await;
    assert_eq!(session.status, StatusCode::OK, "{}", session.body);
    assert_session(&session.body, &story);

    let sessions = system
        .query(&format!("/contacts/{}/sessions", story.contact_id))
        .await;
    assert_eq!(sessions.body["items"].as_array().map(Vec::len), Some(1));
    let by_agent = system
        .query(&format!("/sessions?agent_id={AGENT_2}&status=ended"))
        .await;
    assert_eq!(
        by_agent.body["items"][0]["id"],
        story.session_id.to_string()
    );
    let tagged = system.query("/contacts?tag=vip&q=ana").await;
    assert_eq!(tagged.body["items"][0]["id"], story.contact_id.to_string());
    system.stop().await;
}

#[tokio::test]
async fn the_read_model_also_catches_up_without_min_version() {
    let system = TestSystem::start().await;
    let story = tell_the_story(&system).await;
    let url = format!("/sessions/{}", story.session_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let last = loop {
        let reply = system.query(&url).await;
        if reply.status == StatusCode::OK && reply.body["version"] == 7 {
            break reply.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session never reached version 7: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_session(&last, &story);
    let contact = system
        .query(&format!("/contacts/{}", story.contact_id))
        .await;
    assert_contact(&contact.body, &story);
    system.stop().await;
}

#[tokio::test]
async fn the_store_outbox_audit_log_and_processed_events_hold_exactly_what_happened() {
    let system = TestSystem::start().await;
    let story = tell_the_story(&system).await;
    system.wait_until_projected(Duration::from_secs(20)).await;

    // Exactly the expected events, per stream, with gap-free sequences from 1.
    let stream = |id: Uuid| {
        let pool = system.db.pool.clone();
        async move {
            sqlx::query_as::<_, (String, i64)>(
                "select event_type, sequence_number from contact_event_store where aggregate_id = $1 order by sequence_number",
            )
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let contact_stream = stream(story.contact_id).await;
    assert_eq!(
        contact_stream,
        vec![
            ("contact.created".into(), 1),
            ("contact.tag_added".into(), 2),
            ("contact.session_opened".into(), 3),
            ("contact.session_closed".into(), 4)
        ]
    );
    let session_stream = stream(story.session_id).await;
    let types: Vec<&str> = session_stream.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "session.started",
            "session.message_recorded",
            "session.message_recorded",
            "session.agent_assigned",
            "session.agent_assigned",
            "session.summarized",
            "session.ended"
        ]
    );
    assert!(session_stream
        .iter()
        .enumerate()
        .all(|(i, (_, seq))| *seq == i as i64 + 1));

    let stored: Vec<Uuid> =
        sqlx::query_scalar("select id from contact_event_store order by position")
            .fetch_all(&system.db.pool)
            .await
            .unwrap();
    let mut answered = story.event_ids.clone();
    answered.sort();
    let mut stored_sorted = stored.clone();
    stored_sorted.sort();
    assert_eq!(
        stored_sorted, answered,
        "the store holds exactly the events the commands answered with"
    );

    assert_eq!(
        system.rows("outbox_events").await,
        0,
        "every outbox row published, then deleted"
    );
    assert_eq!(
        e2e::traffic::stream_messages(
            &system.stream.url,
            &system.stream.auth(e2e::Login::Admin),
            &system.stream.name
        )
        .await,
        11,
        "one message per event on the stream"
    );
    assert_eq!(system.rows("domain_event_logs").await, 11);
    assert_eq!(
        system
            .rows("domain_event_logs l join contact_event_store e on e.id = l.id")
            .await,
        11,
        "one audit row per event, keyed by the event id"
    );
    assert_eq!(
        system
            .rows("processed_events where consumer_name = 'contacts+sessions+messages+domain_event_logs'")
            .await,
        11,
        "one row per event, naming the four projections it was applied to"
    );
    assert_eq!(system.rows("processed_events").await, 11);
    assert_eq!(
        system.carried().await.applied_once,
        44,
        "each event applied to contacts, sessions, messages and domain_event_logs"
    );
    let log = system
        .query(&format!("/event-log?aggregate_id={}", story.session_id))
        .await;
    assert_eq!(log.body["items"].as_array().map(Vec::len), Some(7));
    let history = system
        .query(&format!("/contacts/{}/events", story.contact_id))
        .await;
    assert_eq!(history.body["items"].as_array().map(Vec::len), Some(11));
    assert!(
        system.verify().await.is_empty(),
        "live tables equal a rebuild"
    );
    system.stop().await;
}
