//! Group commit: concurrent commands' writes share a transaction, each is still checked on its
//! own stream positions, a refused one fails alone, and a crash with groups in flight leaves
//! every acknowledged command stored once and no command stored in part.

use std::time::Duration;

use chrono::Utc;
use command_service::writer::{GroupWriter, Grouping, Write, WriteError};
use e2e::process::ProcessSystem;
use e2e::traffic::{assert_end_state, wait_converged, Traffic};
use e2e::{TestDb, TestSystem};
use event_model::AggregateType;
use futures::future::join_all;
use platform::event_store::NewEvent;
use serde_json::json;
use uuid::Uuid;

/// A write of one `contact.tag_added` at `sequence` of `contact`.
fn tagging(tenant: &e2e::Tenant, contact: Uuid, sequence: i64) -> Write {
    Write {
        tenant_id: tenant.tenant_id.clone(),
        contact_id: contact,
        new_key: None,
        read_only: Vec::new(),
        events: vec![NewEvent {
            event_id: Uuid::now_v7(),
            aggregate_id: contact,
            aggregate_type: AggregateType::Contact,
            event_type: "contact.tag_added",
            event_version: "v1",
            sequence_number: sequence,
            data: json!({"tag": "grouped"}),
            contact_id: contact,
            user_id: None,
            occurred_at: Utc::now(),
            tenant_id: tenant.tenant_id.clone(),
            project_id: tenant.project_id,
            causation_id: Some(Uuid::now_v7()),
            correlation_id: None,
            traceparent: None,
        }],
        snapshots: Vec::new(),
        forget: false,
        idempotency: None,
    }
}

/// Asserts the write was refused as a lost race.
fn refused(answer: &Result<(), WriteError>) {
    assert!(matches!(answer, Err(WriteError::Conflict)), "{answer:?}");
}

fn recorded(family: &str) -> f64 {
    recorded_with(family, &[])
}

fn recorded_with(family: &str, labels: &[&str]) -> f64 {
    e2e::sample(&platform::health::metrics_handle().render(), family, labels)
}

/// The ids of `ids` that are in the store and the outbox.
async fn stored_of(pool: &sqlx::PgPool, ids: &[Uuid]) -> (Vec<Uuid>, i64) {
    let stored =
        sqlx::query_scalar("select id from contact_event_store where id = any($1) order by id")
            .bind(ids)
            .fetch_all(pool)
            .await
            .unwrap();
    let outbox = sqlx::query_scalar("select count(*) from outbox_events where event_id = any($1)")
        .bind(ids)
        .fetch_one(pool)
        .await
        .unwrap();
    (stored, outbox)
}

/// A database with two tenants, and one writer task on the request login, bound by row-level
/// security: each tenant's rows go in under its own.
async fn two_tenants_and_one_writer(name: &str) -> (TestDb, e2e::Tenant, e2e::Tenant, GroupWriter) {
    let db = TestDb::new().await;
    let (a, b) = (
        TestSystem::bootstrap_tenant(&db.pool, &format!("{name}-a")).await,
        TestSystem::bootstrap_tenant(&db.pool, &format!("{name}-b")).await,
    );
    let pool = e2e::settings_for(&db.url)
        .app_pool("group commit test")
        .unwrap();
    let writer = GroupWriter::start(
        pool,
        Grouping {
            writers: 1,
            max_group: 64,
        },
    );
    (db, a, b, writer)
}

/// On the test's one thread the writer runs only once every write below is queued, so they
/// make one group: deterministic, where a multi-threaded runtime would race the queue.
#[tokio::test(flavor = "current_thread")]
async fn a_refused_write_fails_alone_and_the_rest_of_its_group_commits_in_two_tenants() {
    let (db, a, b, writer) = two_tenants_and_one_writer("group").await;
    let (taken, fresh_a, fresh_b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    writer.write(tagging(&a, taken, 1)).await.unwrap();
    let (groups_before, grouped_before, fallbacks_before) = (
        recorded("command_group_size_count"),
        recorded("command_group_size_sum"),
        recorded("command_group_fallbacks_total"),
    );

    let writes = vec![
        tagging(&a, fresh_a, 1),
        tagging(&a, taken, 1), // the stream is at 1 already: refused by the store
        tagging(&b, fresh_b, 1),
        tagging(&a, fresh_a, 1), // the same position as the first of the group
    ];
    let ids: Vec<Uuid> = writes.iter().map(|w| w.events[0].event_id).collect();
    let answers = join_all(writes.into_iter().map(|w| writer.write(w))).await;

    assert!(answers[0].is_ok(), "{:?}", answers[0]);
    refused(&answers[1]);
    assert!(answers[2].is_ok(), "{:?}", answers[2]);
    refused(&answers[3]);
    let (stored, outbox) = stored_of(&db.pool, &ids).await;
    let mut expected = vec![ids[0], ids[2]];
    expected.sort();
    assert_eq!(stored, expected, "the accepted writes, and only they");
    assert_eq!(outbox, 2, "an outbox row for each stored event");
    // One group of three (the clash was answered before it went to the database), rolled back
    // for the refused write and stored write by write.
    assert_eq!(recorded("command_group_size_count") - groups_before, 1.0);
    assert_eq!(recorded("command_group_size_sum") - grouped_before, 3.0);
    assert_eq!(
        recorded("command_group_fallbacks_total") - fallbacks_before,
        1.0
    );
}

/// A group of one tenant's events goes in one autocommit statement; a stale write in it, or one
/// whose read stream moved, still fails alone; and row-level security checks the statement's rows.
#[tokio::test(flavor = "current_thread")]
async fn one_tenants_group_is_one_statement_and_each_write_in_it_is_still_checked_on_its_own() {
    let (db, a, b, writer) = two_tenants_and_one_writer("statement").await;
    let (taken, read) = (Uuid::new_v4(), Uuid::new_v4());
    writer.write(tagging(&a, taken, 1)).await.unwrap();
    writer.write(tagging(&a, read, 1)).await.unwrap();
    let statements = || recorded_with("command_group_commits_total", &["way=\"statement\""]);
    let transactions = || recorded_with("command_group_commits_total", &["way=\"transaction\""]);
    let (statements_before, transactions_before, fallbacks_before) = (
        statements(),
        transactions(),
        recorded("command_group_fallbacks_total"),
    );

    // A clean group: one statement stores all three.
    let clean: Vec<Write> = (0..3).map(|_| tagging(&a, Uuid::new_v4(), 1)).collect();
    let clean_ids: Vec<Uuid> = clean.iter().map(|w| w.events[0].event_id).collect();
    let answers = join_all(clean.into_iter().map(|w| writer.write(w))).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    let (stored, outbox) = stored_of(&db.pool, &clean_ids).await;
    assert_eq!(stored.len(), 3);
    assert_eq!(outbox, 3);
    assert_eq!(statements() - statements_before, 1.0, "one statement");
    assert_eq!(transactions() - transactions_before, 0.0);

    // A group with a stale write and a write that read a stream since moved on.
    let mut moved = tagging(&a, Uuid::new_v4(), 1);
    moved.read_only = vec![(read, 0)]; // `read` is at 1
    let mut unmoved = tagging(&a, Uuid::new_v4(), 1);
    unmoved.read_only = vec![(read, 1)];
    let writes = vec![
        tagging(&a, Uuid::new_v4(), 1),
        tagging(&a, taken, 1), // the stream is at 1 already
        moved,
        unmoved,
    ];
    let ids: Vec<Uuid> = writes.iter().map(|w| w.events[0].event_id).collect();
    let answers = join_all(writes.into_iter().map(|w| writer.write(w))).await;
    assert!(answers[0].is_ok(), "{:?}", answers[0]);
    refused(&answers[1]);
    refused(&answers[2]);
    assert!(answers[3].is_ok(), "{:?}", answers[3]);
    let mut expected = vec![ids[0], ids[3]];
    expected.sort();
    assert_eq!(stored_of(&db.pool, &ids).await, (expected, 2));
    // The group's statement was refused whole, then each write went alone, in a statement too.
    assert_eq!(
        recorded("command_group_fallbacks_total") - fallbacks_before,
        1.0
    );
    assert_eq!(statements() - statements_before, 3.0);
    assert_eq!(transactions() - transactions_before, 0.0);

    // An event of another tenant in a write of this one: row-level security refuses the row.
    let mut smuggled = tagging(&a, Uuid::new_v4(), 1);
    smuggled.events[0].tenant_id = b.tenant_id.clone();
    let id = smuggled.events[0].event_id;
    let answer = writer.write(smuggled).await;
    assert!(matches!(answer, Err(WriteError::Store(_))), "{answer:?}");
    assert_eq!(stored_of(&db.pool, &[id]).await, (vec![], 0));
}

#[tokio::test]
async fn concurrent_commands_share_commits_and_each_lands_once() {
    let system = TestSystem::start().await;
    let contacts: Vec<Uuid> = join_all((0..16).map(|i| {
        let system = &system;
        async move {
            system
                .create_contact(json!({"name": format!("Grouped {i}")}))
                .await
        }
    }))
    .await;
    let groups = || system.sample(&system.command_url, "command_group_size_count", &[]);
    let grouped = || system.sample(&system.command_url, "command_group_size_sum", &[]);
    let (groups_before, grouped_before) = (groups().await, grouped().await);

    // 16 clients, 10 tags each, all at once: more commands in flight than writers.
    join_all(contacts.iter().map(|contact| {
        let system = &system;
        async move {
            for i in 0..10 {
                let reply = system
                    .command(
                        reqwest::Method::POST,
                        &format!("/contacts/{contact}/tags"),
                        Some(json!({"tag": format!("t{i}")})),
                    )
                    .await;
                assert_eq!(reply.status, reqwest::StatusCode::OK, "{}", reply.body);
                assert_eq!(
                    reply.header("etag"),
                    Some(format!("\"{}\"", i + 2).as_str())
                );
            }
        }
    }))
    .await;

    let commands = grouped().await - grouped_before;
    let transactions = groups().await - groups_before;
    assert_eq!(
        commands, 160.0,
        "every command's write went through a group"
    );
    assert!(
        transactions < commands,
        "{commands} commands in {transactions} transactions: none shared"
    );
    let per_contact: Vec<i64> = sqlx::query_scalar(
        "select count(*) from contact_event_store where aggregate_type = 'contact' \
          group by aggregate_id order by 1",
    )
    .fetch_all(&system.db.pool)
    .await
    .unwrap();
    assert_eq!(
        per_contact,
        vec![11; 16],
        "each contact created and tagged ten times"
    );
    println!("group commit: {commands} commands in {transactions} transactions");
    system.stop().await;
}

#[tokio::test]
async fn killing_command_service_with_groups_in_flight_stores_each_command_whole_or_not_at_all() {
    // One writer: while it commits, every other client's write queues for the next group.
    // Bound in this order so that they drop in the reverse one: the processes first.
    let ProcessSystem {
        db,
        broker,
        tenant,
        query: _query,
        mut command,
    } = ProcessSystem::start(&[("COMMAND_WRITERS", "1".to_owned())]).await;
    let stream = &broker.stream;
    let mut traffic = Traffic::start(vec![command.url()], tenant.clone(), 16);

    let mut largest = 0.0f64;
    for pause in [600, 450, 700] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        // Groups of several commands are being committed at the moment of the kill.
        let metrics = reqwest::get(format!("{}/metrics", command.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mean = e2e::sample(&metrics, "command_group_size_sum", &[])
            / e2e::sample(&metrics, "command_group_size_count", &[]).max(1.0);
        largest = largest.max(mean);
        command.kill();
        tokio::time::sleep(Duration::from_millis(200)).await;
        command.restart().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    traffic.stop().await;

    assert!(
        largest > 1.5,
        "commands were grouped (mean group {largest:.2})"
    );
    wait_converged(&db.pool, Duration::from_secs(90)).await;
    let counts = assert_end_state(&db.pool, &stream.keys(), &traffic).await;
    // Whole or not at all: an acknowledged command's events are exactly those it answered (its
    // causation id's), and no stream has a hole where part of a command would be missing.
    for answered in traffic.acknowledged_by_command() {
        let stored: Vec<Uuid> = sqlx::query_scalar(
            "select id from contact_event_store where causation_id = \
               (select causation_id from contact_event_store where id = $1) order by id",
        )
        .bind(answered[0])
        .fetch_all(&db.pool)
        .await
        .unwrap();
        let mut answered = answered.clone();
        answered.sort();
        assert_eq!(
            stored, answered,
            "an acknowledged command stored in part or twice"
        );
    }
    let gaps: i64 = sqlx::query_scalar(
        "select count(*) from (select aggregate_id, count(*) as n, max(sequence_number) as last \
           from contact_event_store group by 1) s where n <> last",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        gaps, 0,
        "a stream with a hole: part of a command went missing"
    );
    println!("SIGKILL with groups in flight (mean group {largest:.2}): {counts}");
}
