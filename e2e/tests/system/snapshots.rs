//! Acceptance 7: a snapshot every `SNAPSHOT_EVERY` events, used on load; a snapshot of another
//! schema version is ignored and the aggregate still loads correctly. The command-service's
//! aggregate cache is off here, so every command loads from the store (the cache has its own
//! tests in `cache.rs`).

use e2e::{Options, TestSystem};
use platform::personal::{KeyState, StoredSnapshot};
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

async fn add_tag(system: &TestSystem, contact: Uuid, tag: &str) -> serde_json::Value {
    let reply = system
        .command(
            Method::POST,
            &format!("/contacts/{contact}/tags"),
            Some(json!({"tag": tag})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}

#[tokio::test]
async fn snapshots_are_written_every_n_events_and_used_unless_of_another_schema() {
    let system = TestSystem::start_with(Options {
        snapshot_every: 5,
        aggregate_cache_capacity: 0,
        ..Options::default()
    })
    .await;
    let contact = system.create_contact(json!({"name": "Snap"})).await;
    for i in 1..=11 {
        add_tag(&system, contact, &format!("t{i}")).await;
    }
    let snapshots: Vec<i64> = sqlx::query_scalar(
        "select last_sequence_number from contact_snapshots where aggregate_id = $1 order by last_sequence_number",
    )
    .bind(contact)
    .fetch_all(&system.db.pool)
    .await
    .unwrap();
    assert_eq!(snapshots, vec![5, 10], "one snapshot per 5 events");
    let latest: serde_json::Value = sqlx::query_scalar(
        "select snapshot_data from contact_snapshots where aggregate_id = $1 and last_sequence_number = 10",
    )
    .bind(contact)
    .fetch_one(&system.db.pool)
    .await
    .unwrap();
    assert!(
        latest["sealed"].is_string() && !latest.to_string().contains("Snap"),
        "a snapshot is sealed with its contact's key: {latest}"
    );
    let key = {
        let mut conn = system.db.pool.acquire().await.unwrap();
        match system
            .keys()
            .load(&mut conn, &[contact])
            .await
            .unwrap()
            .get(contact)
        {
            Some(KeyState::Active(key)) => key.clone(),
            _ => panic!("the contact has a key"),
        }
    };
    let opened = StoredSnapshot::parse(latest)
        .unwrap()
        .open(&KeyState::Active(key.clone()), contact, 10)
        .unwrap()
        .unwrap();
    assert_eq!(opened["schema_version"], 1);
    assert_eq!(opened["state"]["version"], 10);
    assert_eq!(opened["state"]["view"]["name"], "Snap");

    // Plant a tag in the snapshot only (sealed again with the contact's key): a load that uses
    // the snapshot believes it is there.
    let plant = |schema_version: i64| {
        let (pool, key, mut state) = (system.db.pool.clone(), key.clone(), opened.clone());
        async move {
            state["state"]["view"]["tags"]
                .as_array_mut()
                .unwrap()
                .push(json!("planted"));
            state["schema_version"] = json!(schema_version);
            let sealed = platform::personal::seal_snapshot(&key, contact, contact, 10, &state);
            sqlx::query(
                "update contact_snapshots set snapshot_data = $2 where aggregate_id = $1 and last_sequence_number = 10",
            )
            .bind(contact)
            .bind(sealed)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    plant(1).await;
    let used = add_tag(&system, contact, "planted").await;
    assert_eq!(
        used["event_ids"],
        json!([]),
        "the snapshot was used: the planted tag looked present"
    );
    assert_eq!(used["version"], 12);

    // The same snapshot under another schema version is ignored: the state comes from the events.
    plant(999).await;
    let ignored = add_tag(&system, contact, "planted").await;
    assert_eq!(
        ignored["event_ids"].as_array().map(Vec::len),
        Some(1),
        "folded from events, the tag was absent"
    );
    assert_eq!(ignored["version"], 13);
    // A seal that was tampered with is passed over the same way.
    sqlx::query(
        "update contact_snapshots set snapshot_data = jsonb_build_object('sealed', \
           overlay(snapshot_data->>'sealed' placing \
                   (case when substr(snapshot_data->>'sealed', 80, 1) = 'A' then 'B' else 'A' end) from 80 for 1)) \
         where aggregate_id = $1 and last_sequence_number = 10",
    )
    .bind(contact)
    .execute(&system.db.pool)
    .await
    .unwrap();
    let present = add_tag(&system, contact, "t3").await;
    assert_eq!(
        present["event_ids"],
        json!([]),
        "and the rest of the state is intact"
    );
    let read = system
        .query(&format!("/contacts/{contact}?min_version=13"))
        .await;
    assert_eq!(read.body["tags"].as_array().map(Vec::len), Some(12));
    system.stop().await;
}
