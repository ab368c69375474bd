//! Acceptance 5 and 6: a replayed or redelivered event changes nothing; the read tables converge
//! to what a rebuild from the store gives after the projections were away; a 30 s broker outage
//! and a redelivery storm under load lose nothing and duplicate nothing.

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use e2e::traffic::{assert_end_state, stream_messages, wait_converged, Traffic};
use e2e::{Login, NatsServer, Options, TestSystem};
use event_model::AggregateType;
use futures::future::join_all;
use platform::event_store::EventStore;
use projection_service::projections::{
    self, apply_batch, apply_unlocked, read_unlocked, Commit, Declined, Projection,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

async fn snapshot_of_read_tables(system: &TestSystem) -> (Vec<Value>, i64) {
    let rows: Vec<Value> = sqlx::query_scalar(
        "select to_jsonb(t) from (select 'c' as k, to_jsonb(c) as r from contacts c \
           union all select 's', to_jsonb(s) from sessions s \
           union all select 'l', to_jsonb(l) from domain_event_logs l) t order by t.k, t.r->>'id'",
    )
    .fetch_all(&system.db.pool)
    .await
    .unwrap();
    (rows, system.rows("processed_events").await)
}

async fn some_traffic(system: &TestSystem) -> (Uuid, Uuid) {
    let contact = system
        .create_contact(json!({"name": "Echo", "tags": ["a"]}))
        .await;
    let session = system.open_session(contact).await;
    for i in 0..3 {
        let r = system
            .command(
                Method::POST,
                &format!("/sessions/{session}/messages"),
                Some(json!({"from_contact": i % 2 == 0, "sent_at": format!("2026-03-01T10:0{i}:00Z")})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    (contact, session)
}

#[tokio::test]
async fn a_replayed_nats_message_changes_nothing() {
    let system = TestSystem::start().await;
    let (contact, session) = some_traffic(&system).await;
    system.wait_until_projected(Duration::from_secs(20)).await;
    let before = snapshot_of_read_tables(&system).await;

    let store = EventStore::new(system.db.pool.clone());
    let tenant = &system.tenant.tenant_id;
    let mut events = store
        .load_stream(&system.db.pool, tenant, AggregateType::Contact, contact, 0)
        .await
        .unwrap();
    events.extend(
        store
            .load_stream(&system.db.pool, tenant, AggregateType::Session, session, 0)
            .await
            .unwrap(),
    );
    let js = async_nats::jetstream::new(system.stream.admin_client().await);
    let settings = system.stream_settings();
    for (i, envelope) in events.iter().enumerate() {
        let subject = settings.subject(
            envelope.contact_id,
            envelope.aggregate_type.as_str(),
            &envelope.event_type,
        );
        let payload = serde_json::to_vec(envelope).unwrap();
        // The same Nats-Msg-Id: the broker drops it as a duplicate.
        let same_id = PublishMessage::build()
            .payload(payload.clone().into())
            .message_id(envelope.event_id.to_string());
        let ack = js
            .send_publish(subject.clone(), same_id)
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(
            ack.duplicate,
            "event {i} was not de-duplicated by the broker"
        );
        // A fresh Nats-Msg-Id (a republish past the broker's window): it is delivered, twice.
        for _ in 0..2 {
            let fresh = PublishMessage::build()
                .payload(payload.clone().into())
                .message_id(Uuid::new_v4().to_string());
            js.send_publish(subject.clone(), fresh)
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
    system.wait_until_consumed(Duration::from_secs(20)).await;
    assert_eq!(
        snapshot_of_read_tables(&system).await,
        before,
        "the read tables and processed_events did not move"
    );
    assert!(system.verify().await.is_empty());
    system.stop().await;
}

#[tokio::test]
async fn applying_a_batch_twice_or_out_of_order_gives_the_same_rows() {
    let mut system = TestSystem::start().await;
    system.stop_projection().await;
    let (contact, session) = some_traffic(&system).await;
    let store = EventStore::new(system.db.pool.clone());
    let tenant = &system.tenant.tenant_id;
    let contact_events = store
        .load_stream(&system.db.pool, tenant, AggregateType::Contact, contact, 0)
        .await
        .unwrap();
    let session_events = store
        .load_stream(&system.db.pool, tenant, AggregateType::Session, session, 0)
        .await
        .unwrap();

    // Only the last session event arrives first: everything before it is filled in from the store.
    let last = session_events.last().cloned().unwrap();
    let mut tx = system.db.pool.begin().await.unwrap();
    let report = apply_batch(
        &mut tx,
        &store,
        &system.keys(),
        &Projection::ALL,
        std::slice::from_ref(&last),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(report.applied > 3, "the gap was filled: {report:?}");
    let session_row = system
        .count(&format!(
            "select version::bigint from sessions where id = '{session}'"
        ))
        .await;
    assert_eq!(session_row, session_events.len() as i64);

    // Then everything, late and in reverse: the rest lands, and a rebuild agrees.
    let mut all: Vec<_> = contact_events
        .iter()
        .chain(session_events.iter())
        .cloned()
        .collect();
    all.reverse();
    let mut tx = system.db.pool.begin().await.unwrap();
    apply_batch(&mut tx, &store, &system.keys(), &Projection::ALL, &all)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        system.carried().await.applied,
        (all.len() * Projection::ALL.len()) as i64,
        "each event applied to each projection once (gap fills included)"
    );
    assert_eq!(
        system.carried().await.applied_once,
        (all.len() * Projection::ALL.len()) as i64
    );
    assert!(
        system.verify().await.is_empty(),
        "the out-of-order path gives a rebuild's rows"
    );

    // And twice more: nothing changes at all.
    let before = snapshot_of_read_tables(&system).await;
    for _ in 0..2 {
        let mut tx = system.db.pool.begin().await.unwrap();
        let report = apply_batch(&mut tx, &store, &system.keys(), &Projection::ALL, &all)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(report.applied, 0, "{report:?}");
    }
    assert_eq!(
        snapshot_of_read_tables(&system).await,
        before,
        "read rows and processed_events unchanged"
    );

    system.stop().await;
}

/// The live path's first try writes without a transaction and checks that the rows it read are
/// still as read. A row changed meanwhile (by a rebuild's swap or merge, say), or one that
/// appeared meanwhile, aborts the write with nothing written, and the batch is declined for the
/// locked path; read again, it applies.
#[tokio::test]
async fn an_unlocked_batch_whose_rows_moved_writes_nothing_and_applies_when_read_again() {
    let mut system = TestSystem::start().await;
    system.stop_projection().await;
    let (contact, session) = some_traffic(&system).await;
    let store = EventStore::new(system.db.pool.clone());
    let keys = system.keys();
    let stream = |kind, id| {
        let (store, system) = (&store, &system);
        async move {
            store
                .load_stream(&system.db.pool, &system.tenant.tenant_id, kind, id, 0)
                .await
                .unwrap()
        }
    };
    let contact_events = stream(AggregateType::Contact, contact).await;
    let first = &contact_events[0];
    // The session's events: each folds into the session's row and its contact's.
    let rest = &stream(AggregateType::Session, session).await[..];
    let mut conn = system.db.pool.acquire().await.unwrap();
    let written_of = |id: Uuid| {
        let system = &system;
        async move {
            (
                system
                    .count(&format!(
                        "select count(*) from processed_events where event_id = '{id}'"
                    ))
                    .await,
                system
                    .count(&format!(
                        "select count(*) from domain_event_logs where id = '{id}'"
                    ))
                    .await,
            )
        }
    };
    let version = |table: &'static str, id: Uuid| {
        let system = &system;
        async move {
            system
                .count(&format!(
                    "select coalesce(max(version), 0)::bigint from {table} where id = '{id}'"
                ))
                .await
        }
    };

    // A row that appears between the read and the write: the locked path applied the contact's
    // first event meanwhile.
    let unlocked = read_unlocked(&mut conn, &keys, &[first.event_id])
        .await
        .unwrap();
    assert_eq!(
        unlocked.stored,
        vec![first.clone()],
        "the stored event, read with the rows"
    );
    let mut tx = system.db.pool.begin().await.unwrap();
    apply_batch(
        &mut tx,
        &store,
        &keys,
        &Projection::ALL,
        std::slice::from_ref(first),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let declined = apply_unlocked(
        &mut conn,
        &store,
        &[std::slice::from_ref(first)],
        unlocked,
        Commit::Durable,
    )
    .await
    .unwrap();
    assert_eq!(declined, Err(Declined::Moved));
    assert_eq!(version("contacts", contact).await, 1);

    // A row changed between the read and the write: the batch writes nothing at all.
    let unlocked = read_unlocked(&mut conn, &keys, &ids_of(rest))
        .await
        .unwrap();
    let before = snapshot_of_read_tables(&system).await;
    sqlx::query("update contacts set updated_at = updated_at where id = $1")
        .bind(contact)
        .execute(&system.db.pool)
        .await
        .unwrap();
    let declined = apply_unlocked(&mut conn, &store, &[rest], unlocked, Commit::Durable)
        .await
        .unwrap();
    assert_eq!(declined, Err(Declined::Moved));
    assert_eq!(
        snapshot_of_read_tables(&system).await,
        before,
        "nothing written"
    );
    for e in rest {
        assert_eq!(
            written_of(e.event_id).await,
            (0, 0),
            "no processed or audit row"
        );
    }

    // Read again, it applies: every event once, to every projection. Committed without waiting
    // for the disk (as live traffic is), it is visible at once, and on disk a moment later.
    let unlocked = read_unlocked(&mut conn, &keys, &ids_of(rest))
        .await
        .unwrap();
    let reports = apply_unlocked(&mut conn, &store, &[rest], unlocked, Commit::Deferred)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        reports[0].applied,
        rest.len() * Projection::ALL.len(),
        "{reports:?}"
    );
    assert_eq!(version("sessions", session).await, rest.len() as i64);
    for e in rest {
        assert_eq!(written_of(e.event_id).await, (1, 1));
    }
    let committed_by = projections::wal(&mut conn).await.unwrap().inserted;
    let flushed = e2e::wait_until(Duration::from_secs(5), || async {
        let mut conn = system.db.pool.acquire().await.unwrap();
        projections::wal(&mut conn).await.unwrap().flushed >= committed_by
    })
    .await;
    assert!(flushed, "the WAL flushed past the batch");
    drop(conn);
    system.start_projection().await;
    system.wait_until_consumed(Duration::from_secs(20)).await;
    assert!(system.verify().await.is_empty(), "the rows a rebuild gives");
    system.stop().await;
}

fn ids_of(events: &[event_model::EventEnvelope]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

/// 1,000 commands from 8 clients: contacts, tags, inbound messages, agent replies, renames.
async fn thousand_commands(system: &TestSystem) {
    join_all((0..8).map(|client| async move {
        let mut contact = Uuid::nil();
        let mut session = Uuid::nil();
        for i in 0..125 {
            let reply = match i % 5 {
                0 => {
                    let r = system.command(Method::POST, "/contacts", Some(json!({"name": format!("c{client}-{i}")}))).await;
                    contact = r.id("id");
                    r
                }
                1 => system.command(Method::POST, &format!("/contacts/{contact}/tags"), Some(json!({"tag": format!("t{i}")}))).await,
                2 => {
                    let r = system
                        .command(
                            Method::POST,
                            &format!("/contacts/{contact}/messages"),
                            Some(json!({"channel_type_id": 1 + (i % 3), "from_contact": true})),
                        )
                        .await;
                    session = r.id("session_id");
                    r
                }
                3 => {
                    system
                        .command(
                            Method::POST,
                            &format!("/sessions/{session}/messages"),
                            Some(json!({"from_contact": false, "agent_id": Uuid::from_u128(client as u128 + 1)})),
                        )
                        .await
                }
                _ => system.command(Method::PATCH, &format!("/contacts/{contact}"), Some(json!({"name": format!("r{i}")}))).await,
            };
            assert!(reply.status.is_success(), "command {i} of client {client}: {} {}", reply.status, reply.body);
        }
    }))
    .await;
}

#[tokio::test]
async fn after_the_projections_were_away_for_1000_commands_they_converge_to_a_rebuild() {
    let mut system = TestSystem::start().await;
    system.stop_projection().await;
    thousand_commands(&system).await;
    assert_eq!(
        system.rows("contacts").await,
        0,
        "nothing projected while away"
    );
    system.start_projection().await;
    system.wait_until_projected(Duration::from_secs(120)).await;
    assert_eq!(system.rows("contacts").await, 200);
    let diffs = system.verify().await;
    assert!(diffs.is_empty(), "live differs from a rebuild: {diffs:?}");
    system.stop().await;
}

/// The broker away for 30 s while four clients keep sending commands (the scenario 3):
/// commands keep being accepted into the outbox, the relay retries with backoff, and after the
/// broker is back everything is published once and applied once.
#[tokio::test]
async fn a_30_second_broker_outage_under_load_loses_nothing_and_delivers_once() {
    // A broker that checks logins and TLS, as `deploy/` runs it.
    let security = e2e::BrokerSecurity::new();
    let mut nats = NatsServer::start_secured(security.clone()).await;
    let system = TestSystem::start_with(Options {
        nats_url: Some(nats.url()),
        nats_security: Some(security),
        ..Options::default()
    })
    .await;
    let mut traffic = Traffic::start(vec![system.command_url.clone()], system.tenant.clone(), 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.kill();
    let during = traffic.acknowledged_commands();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let accepted_during = traffic.acknowledged_commands() - during;
    assert!(
        accepted_during > 0,
        "commands were accepted while the broker was down"
    );
    assert!(
        system.rows("outbox_events where status = 'pending'").await > 0,
        "the outbox holds them"
    );
    nats.resume().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    traffic.stop().await;

    wait_converged(&system.db.pool, Duration::from_secs(120)).await;
    let counts = assert_end_state(&system.db.pool, &system.keys(), &traffic).await;
    assert_eq!(
        stream_messages(
            &nats.url(),
            &system.stream.auth(Login::Admin),
            &system.stream.name
        )
        .await as usize,
        counts.stored,
        "each event is in the stream exactly once"
    );
    let failures: f64 = platform::health::metrics_handle()
        .render()
        .lines()
        .filter(|l| l.starts_with("outbox_publish_failures_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        failures >= 1.0,
        "the outage shows in outbox_publish_failures_total"
    );
    println!("30 s broker outage: {counts}; {accepted_during} commands accepted while the broker was down");
    system.stop().await;
}

/// A redelivery storm under load: while four clients send commands, a window of the messages
/// already in the stream is published again, raw, with the same payloads: once with the same
/// `Nats-Msg-Id` (the broker drops it), twice with a fresh one (delivered again), and in reverse
/// order, so the consumers also see a partition's events out of order; for part of the storm the
/// projections are away, so republished later events arrive before earlier ones were applied
/// (the gap fill). Nothing is applied twice and the read tables equal a rebuild.
#[tokio::test]
async fn a_redelivery_storm_under_load_applies_nothing_twice() {
    let mut system = TestSystem::start_secured(Options::default()).await;
    let mut traffic = Traffic::start(vec![system.command_url.clone()], system.tenant.clone(), 4);
    let js = async_nats::jetstream::new(system.stream.admin_client().await);
    let stream = js.get_stream(&system.stream.name).await.unwrap();
    let (mut dropped, mut republished) = (0usize, 0usize);
    for round in 0..12 {
        if round == 4 {
            system.stop_projection().await;
        }
        if round == 8 {
            system.start_projection().await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let last = js
            .get_stream(&system.stream.name)
            .await
            .unwrap()
            .get_info()
            .await
            .unwrap()
            .state
            .last_sequence;
        // The latest 40 messages, newest first.
        for sequence in (last.saturating_sub(40).max(1)..=last).rev() {
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue;
            };
            let id = message
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_owned());
            let Some(id) = id else { continue };
            let event_id = Uuid::parse_str(&id);
            if event_id.is_err() {
                continue; // a message this storm republished under a fresh id
            }
            let same = PublishMessage::build()
                .payload(message.payload.clone())
                .message_id(id.as_str());
            let ack = js
                .send_publish(message.subject.clone(), same)
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(
                ack.duplicate,
                "the broker de-duplicates the same Nats-Msg-Id"
            );
            dropped += 1;
            for copy in 0..2 {
                let fresh = PublishMessage::build()
                    .payload(message.payload.clone())
                    .message_id(format!("storm-{round}-{copy}-{id}"));
                js.send_publish(message.subject.clone(), fresh)
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                republished += 1;
            }
        }
    }
    traffic.stop().await;

    wait_converged(&system.db.pool, Duration::from_secs(120)).await;
    system.wait_until_consumed(Duration::from_secs(60)).await;
    let counts = assert_end_state(&system.db.pool, &system.keys(), &traffic).await;
    assert_eq!(
        stream_messages(
            &system.stream.url,
            &system.stream.auth(Login::Admin),
            &system.stream.name
        )
        .await as usize,
        counts.stored + republished,
        "the stream holds each event once plus the storm's fresh-id copies"
    );
    assert!(republished > 500, "a storm: {republished} republished");
    println!(
        "redelivery storm: {counts}; {republished} messages republished with a fresh Nats-Msg-Id (delivered again), {dropped} with the same one (dropped by the broker)"
    );
    system.stop().await;
}

/// The relay's batch query is planned once, not on every execution, and stays on the indexes
/// while the event store grows from empty. A plan cached while the tables were tiny (a nested
/// loop over a sequential scan of the event store, once per pending row) made each batch take
/// seconds on a fresh system, until the next ANALYZE: the relay's plans are renewed every few
/// seconds (`GenericPlans`).
#[tokio::test]
async fn the_relays_batch_query_is_planned_once_and_follows_the_tables_as_they_grow() {
    let db = e2e::TestDb::new().await;
    // A connection as the relay gets one: from the cross-tenant pool (`Settings::system_pool`),
    // its plans kept as the relay keeps them (renewed every 200 ms here).
    let pool = e2e::settings_for(&db.url).system_pool("test", 1).unwrap();
    let mut conn = pool.acquire().await.unwrap().detach();
    let mut plans = platform::db::GenericPlans::new(Duration::from_millis(200));
    plans.refresh(&mut conn).await.unwrap();
    sqlx::raw_sql(command_service::relay::RELAY_PLANNER)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!(
        "prepare batch(int8) as {}",
        command_service::relay::batch_query(500)
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    // Events published long ago, and the last 10 still pending.
    let store = |n: i64| {
        sqlx::query(
            "with e as ( \
               insert into contact_event_store \
                   (aggregate_id, event_type, sequence_number, event_data, occurred_at, tenant_id) \
               select gen_random_uuid(), 'contact.created', 1, '{\"name\": \"Ada\"}', now(), 'tenant-a' \
                 from generate_series(1, $1) \
               returning id, aggregate_id, event_data) \
             insert into outbox_events (event_id, aggregate_id, aggregate_type, event_type, event_data, tenant_id, status) \
             select id, aggregate_id, 'contact', 'contact.created', event_data, 'tenant-a', 'processed' from e",
        )
        .bind(n)
    };
    let pending =
        "update outbox_events set status = 'pending' where seq > (select max(seq) - 10 from outbox_events)";
    store(20).execute(&db.pool).await.unwrap();
    sqlx::query(pending).execute(&db.pool).await.unwrap();
    for _ in 0..10 {
        plans.refresh(&mut conn).await.unwrap();
        let rows = sqlx::query("execute batch(0)")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(rows.len(), 10);
    }
    let (generic, custom): (i64, i64) = sqlx::query_as(
        "select generic_plans, custom_plans from pg_prepared_statements where name = 'batch'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(
        generic >= 1 && custom == 0,
        "the batch query is planned on every execution ({generic} generic plans, {custom} custom)"
    );
    // The queue emptied and analyzed so (autovacuum between bursts), then a backlog arrives:
    // the statistics promise a few rows where 30,000 wait.
    sqlx::query("delete from outbox_events")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("vacuum analyze outbox_events")
        .execute(&db.pool)
        .await
        .unwrap();
    store(30_000).execute(&db.pool).await.unwrap();
    sqlx::query("update outbox_events set status = 'pending'")
        .execute(&db.pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    plans.refresh(&mut conn).await.unwrap();

    let plan: Value = sqlx::query_scalar("explain (format json) execute batch(0)")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    fn scans(node: &Value, found: &mut Vec<String>) {
        if let Some(relation) = node["Relation Name"].as_str() {
            found.push(format!(
                "{} on {relation}",
                node["Node Type"].as_str().unwrap_or("?")
            ));
        }
        for child in node["Plans"].as_array().into_iter().flatten() {
            scans(child, found);
        }
    }
    let mut found = Vec::new();
    scans(&plan[0]["Plan"], &mut found);
    assert!(
        found.contains(&"Index Scan on contact_event_store".to_owned()),
        "the batch query does not look its events up by id: {found:?}"
    );
    assert!(
        !found.contains(&"Seq Scan on contact_event_store".to_owned()),
        "the batch query scans the whole event store: {found:?}"
    );
    assert!(
        found.contains(&"Index Scan on outbox_events".to_owned()),
        "the batch query does not walk the pending rows in order: {found:?}"
    );
    assert!(
        !plan.to_string().contains("\"Sort\""),
        "the batch query sorts the whole backlog for each batch: {plan}"
    );
}

/// The relay sleeps between bursts and wakes on the outbox trigger's `NOTIFY`, which commits
/// send only while it sleeps (migration 0020: a NOTIFY serializes commits). With its fallback
/// poll an hour away, every burst of concurrent commands, each after the relay has gone idle, is
/// published and applied: no wake-up is lost between the relay's last look and its sleep.
#[tokio::test]
async fn with_its_fallback_poll_an_hour_away_the_relay_wakes_for_every_burst() {
    let system = TestSystem::start_with(Options {
        relay_poll_ms: 3_600_000,
        ..Options::default()
    })
    .await;
    let mut stored_before = 0;
    for round in 0..8u64 {
        let mut traffic =
            Traffic::start(vec![system.command_url.clone()], system.tenant.clone(), 4);
        tokio::time::sleep(Duration::from_millis(40 * (round % 4 + 1))).await;
        traffic.stop().await;
        assert!(
            traffic.acknowledged_commands() > 0,
            "round {round}: commands were accepted"
        );
        wait_converged(&system.db.pool, Duration::from_secs(30)).await;
        let stored = system.rows("contact_event_store").await;
        assert!(stored > stored_before, "round {round} stored events");
        stored_before = stored;
        // Idle long enough for the relay to take its idle lock and sleep.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And one lone command into the silence.
    system.create_contact(json!({"name": "Lone"})).await;
    wait_converged(&system.db.pool, Duration::from_secs(30)).await;
    assert_eq!(
        stream_messages(
            &system.stream.url,
            &system.stream.auth(Login::Admin),
            &system.stream.name
        )
        .await as i64,
        system.rows("contact_event_store").await,
        "each event is in the stream exactly once"
    );
    system.stop().await;
}
