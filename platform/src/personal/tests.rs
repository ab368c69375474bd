use event_model::{ContactEvent, DomainEvent, EventEnvelope, SessionEvent};
use serde_json::{json, Value};

use super::*;

fn created(name: &str) -> DomainEvent {
    DomainEvent::Contact(ContactEvent::Created {
        name: Some(name.into()),
        email: Some("ana@example.com".into()),
        phone: None,
        external_id: None,
        source_channel: None,
        language: "pt".into(),
        timezone: None,
        tags: vec!["vip".into()],
    })
}

fn envelope(event_id: Uuid, contact_id: Uuid, event: &DomainEvent, data: Value) -> EventEnvelope {
    EventEnvelope {
        event_id,
        aggregate_id: contact_id,
        aggregate_type: event.aggregate_type(),
        event_type: event.event_type().into(),
        event_version: event.event_version().into(),
        sequence_number: 1,
        position: 1,
        tenant_id: "t".into(),
        project_id: Uuid::nil(),
        contact_id,
        user_id: None,
        occurred_at: chrono::Utc::now(),
        recorded_at: chrono::Utc::now(),
        causation_id: None,
        correlation_id: None,
        data,
    }
}

#[test]
fn a_sealed_event_opens_with_its_key_and_is_redacted_once_the_key_is_destroyed() {
    let (key, _) = DataKey::generate();
    let contact = Uuid::now_v7();
    let event_id = Uuid::now_v7();
    let event = created("Ana Souza");
    let stored = seal_event(&key, contact, event_id, &event).unwrap();
    let text = stored.to_string();
    assert!(
        !text.contains("Ana Souza") && !text.contains("ana@example.com"),
        "{text}"
    );
    assert!(text.contains("vip"), "public fields stay readable: {text}");
    assert_eq!(sealed_contact(&stored), Some(contact));

    let env = envelope(event_id, contact, &event, stored.clone());
    let opened = KeySet::single(contact, KeyState::Active(key.clone()))
        .open(&env)
        .unwrap();
    assert_eq!(opened.event, event);
    assert!(!opened.redacted());

    let gone = KeySet::single(contact, KeyState::Destroyed)
        .open(&env)
        .unwrap();
    assert!(gone.redacted());
    assert_eq!(gone.data()["name"], Value::Null);
    assert_eq!(gone.data()["tags"], json!(["vip"]));
    let DomainEvent::Contact(ContactEvent::Created { name, email, .. }) = gone.event else {
        panic!("a contact.created")
    };
    assert_eq!((name, email), (None, None));

    assert!(matches!(
        KeySet::default().open(&env),
        Err(PersonalError::MissingKey(c)) if c == contact
    ));
    // Moved into another event, or another contact's envelope: refused.
    let moved = envelope(Uuid::now_v7(), contact, &event, stored.clone());
    assert!(KeySet::single(contact, KeyState::Active(key.clone()))
        .open(&moved)
        .is_err());
    let other = Uuid::now_v7();
    let elsewhere = envelope(event_id, other, &event, stored);
    assert!(matches!(
        KeySet::single(other, KeyState::Active(key)).open(&elsewhere),
        Err(PersonalError::WrongContact { .. })
    ));
}

#[test]
fn an_event_without_personal_fields_needs_no_key_and_a_plain_v1_one_is_redacted_when_forgotten() {
    let contact = Uuid::now_v7();
    let tag = DomainEvent::Contact(ContactEvent::TagAdded { tag: "vip".into() });
    let stored = seal_event(&DataKey::generate().0, contact, Uuid::now_v7(), &tag).unwrap();
    assert_eq!(stored, json!({"tag": "vip"}));
    let env = envelope(Uuid::now_v7(), contact, &tag, stored);
    assert_eq!(KeySet::default().open(&env).unwrap().event, tag);

    let summary = DomainEvent::Session(SessionEvent::Summarized {
        summary: Some("Ana wants a refund".into()),
        sentiment: None,
        sentiment_score: None,
        topics: Some(vec!["refund".into()]),
        next_steps: Some(vec![]),
        key_entities: None,
    });
    let mut v1 = envelope(Uuid::now_v7(), contact, &summary, summary.data());
    v1.event_version = "v1".into();
    assert_eq!(KeySet::default().open(&v1).unwrap().event, summary);
    let forgotten = KeySet::single(contact, KeyState::Destroyed)
        .open(&v1)
        .unwrap();
    assert!(forgotten.redacted());
    assert_eq!(forgotten.data()["summary"], Value::Null);
}

#[test]
fn a_sealed_snapshot_opens_at_its_own_place_only() {
    let (key, _) = DataKey::generate();
    let (contact, session) = (Uuid::now_v7(), Uuid::now_v7());
    let state = json!({"schema_version": 1, "state": {"name": "Ana"}});
    let sealed = seal_snapshot(&key, contact, session, 100, &state);
    assert!(!sealed.to_string().contains("Ana"));
    let active = KeyState::Active(key);
    let open = |at| {
        StoredSnapshot::parse(sealed.clone())
            .unwrap()
            .open(&active, session, at)
    };
    assert_eq!(open(100).unwrap(), Some(state.clone()));
    assert!(open(200).is_err());
    let forgotten = StoredSnapshot::parse(sealed.clone())
        .unwrap()
        .open(&KeyState::Destroyed, session, 100)
        .unwrap();
    assert_eq!(forgotten, None);
}
