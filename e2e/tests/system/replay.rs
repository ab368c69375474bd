//! The replay tool: a rebuild (of everything, of one projection, of one tenant) gives the live
//! rows, and the live consumers carry on after it without applying anything twice.

use std::time::Duration;

use e2e::TestSystem;
use projection_service::projections::Projection;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

async fn traffic(system: &TestSystem, tenant: &e2e::Tenant, n: usize) {
    for i in 0..n {
        let created = system
            .command_as(
                tenant,
                Method::POST,
                "/contacts",
                Some(json!({"name": format!("r{i}")})),
                &[],
            )
            .await;
        let contact = created.id("id");
        let inbound = system
            .command_as(
                tenant,
                Method::POST,
                &format!("/contacts/{contact}/messages"),
                Some(json!({"channel_type_id": 1, "from_contact": true,
                            "text": format!("hello {i}"), "channel_message_id": format!("m-{}", Uuid::now_v7())})),
                &[],
            )
            .await;
        let session = inbound.id("session_id");
        system
            .command_as(
                tenant,
                Method::POST,
                &format!("/sessions/{session}/agents"),
                Some(json!({"agent_id": Uuid::from_u128(7)})),
                &[],
            )
            .await;
    }
}

/// A rebuild of every projection for every tenant, in batches of `batch_size`.
async fn rebuild_everything(system: &TestSystem, batch_size: i64) -> replay_tool::RebuildReport {
    replay_tool::rebuild(
        &system.db.pool,
        &system.keys(),
        &Projection::ALL,
        None,
        batch_size,
        &|_, _| {},
    )
    .await
    .unwrap()
}

async fn rows(system: &TestSystem) -> Vec<Value> {
    sqlx::query_scalar(
        "select r from (select to_jsonb(c) r from contacts c union all select to_jsonb(s) from sessions s \
         union all select to_jsonb(m) from messages m \
         union all select to_jsonb(l) from domain_event_logs l) t order by r->>'id', r::text",
    )
    .fetch_all(&system.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_rebuild_gives_the_live_rows_and_the_consumers_carry_on_without_double_applying() {
    let system = TestSystem::start().await;
    let b = TestSystem::bootstrap_tenant(&system.db.pool, "tenant-b").await;
    traffic(&system, &system.tenant.clone(), 10).await;
    traffic(&system, &b, 5).await;
    system.wait_until_projected(Duration::from_secs(30)).await;
    let live = rows(&system).await;
    // Rows of other tables that reference the read rows (ON DELETE CASCADE / SET NULL) must
    // survive a rebuild: it never deletes a row the history still produces.
    sqlx::query(
        "insert into trackings (contact_id, session_id, tenant_id, project_id, source, platform) \
         select s.contact_id, s.id, s.tenant_id, $1, 'meta_ads', 'instagram' from sessions s limit 1",
    )
    .bind(system.tenant.project_id)
    .execute(&system.db.pool)
    .await
    .unwrap();

    let quiet = |_, _| {};
    let replayed_before = replayed_metric();
    for projections in [
        Projection::ALL.to_vec(),
        vec![Projection::Contacts],
        vec![Projection::Sessions],
        vec![Projection::Messages],
    ] {
        let report = replay_tool::rebuild(
            &system.db.pool,
            &system.keys(),
            &projections,
            None,
            7,
            &quiet,
        )
        .await
        .unwrap();
        assert_eq!(
            report.events as i64,
            system.rows("contact_event_store").await
        );
        assert_eq!(
            rows(&system).await,
            live,
            "rebuilding {projections:?} gives the live rows"
        );
    }
    assert!(
        replayed_metric() > replayed_before,
        "replay progress is exported (replay_events_total)"
    );
    let report = replay_tool::rebuild(
        &system.db.pool,
        &system.keys(),
        &Projection::ALL,
        Some("tenant-b"),
        100,
        &quiet,
    )
    .await
    .unwrap();
    assert_eq!(
        report.events as i64,
        system
            .rows("contact_event_store where tenant_id = 'tenant-b'")
            .await,
        "a tenant's rebuild reads only that tenant's events"
    );
    assert_eq!(rows(&system).await, live);
    assert_eq!(
        system
            .rows("trackings where contact_id is not null and session_id is not null")
            .await,
        1,
        "a tracking row that references a rebuilt contact and session is untouched"
    );

    // A row the history does not produce is removed; one it lacks is put back.
    let orphan: Uuid = sqlx::query_scalar(
        "insert into contacts (id, project_id, tenant_id, name, version) values (gen_random_uuid(), $1, 'tenant-a', 'ghost', 1) returning id",
    )
    .bind(system.tenant.project_id)
    .fetch_one(&system.db.pool)
    .await
    .unwrap();
    sqlx::query("delete from domain_event_logs where id = (select id from domain_event_logs order by id limit 1)")
        .execute(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(
        system.verify().await.len(),
        2,
        "verify sees both differences"
    );
    rebuild_everything(&system, 50).await;
    assert_eq!(rows(&system).await, live);
    assert_eq!(
        system
            .count(&format!(
                "select count(*) from contacts where id = '{orphan}'"
            ))
            .await,
        0
    );

    // The live path carries on: new traffic lands once, old events are not applied again.
    traffic(&system, &system.tenant.clone(), 3).await;
    system.wait_until_projected(Duration::from_secs(30)).await;
    assert_eq!(
        system.carried().await.applied_once,
        Projection::ALL.len() as i64 * system.rows("contact_event_store").await,
        "every event applied to each projection"
    );
    assert_eq!(
        system.carried().await.applied,
        system.carried().await.applied_once,
        "no (event, projection) recorded twice"
    );
    let diffs = system.verify().await;
    assert!(diffs.is_empty(), "{diffs:?}");
    system.stop().await;
}

#[tokio::test]
async fn verify_names_a_row_that_differs_from_the_history() {
    let system = TestSystem::start().await;
    traffic(&system, &system.tenant.clone(), 2).await;
    system.wait_until_projected(Duration::from_secs(30)).await;
    assert!(system.verify().await.is_empty());
    let victim: Uuid = sqlx::query_scalar("update contacts set name = 'tampered' where id = (select id from contacts order by id limit 1) returning id")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    let diffs = system.verify().await;
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert_eq!(diffs[0].table, "contacts");
    assert_eq!((diffs[0].only_live, diffs[0].only_rebuilt), (1, 1));
    assert_eq!(diffs[0].sample_ids, vec![victim.to_string()]);
    assert_eq!(
        system
            .count(&format!(
                "select count(*) from contacts where id = '{victim}' and name = 'tampered'"
            ))
            .await,
        1,
        "verify changes nothing"
    );
    system.stop().await;
}

/// `replay_events_total` as this process's Prometheus exporter renders it.
fn replayed_metric() -> f64 {
    platform::health::metrics_handle()
        .render()
        .lines()
        .find(|l| l.starts_with("replay_events_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// A rebuild leaves `processed_events` to the live consumers: events it applied before their
/// delivery are delivered afterwards, recorded once each, and change nothing.
#[tokio::test]
async fn events_a_rebuild_applied_before_their_delivery_change_nothing_when_delivered() {
    let mut system = TestSystem::start().await;
    traffic(&system, &system.tenant.clone(), 2).await;
    system.wait_until_projected(Duration::from_secs(30)).await;
    system.stop_projection().await;
    // Stored and published, not delivered yet.
    traffic(&system, &system.tenant.clone(), 3).await;
    let processed = "select count(*) from processed_events";
    let recorded = system.count(processed).await;
    rebuild_everything(&system, 4).await;
    assert_eq!(
        system.count(processed).await,
        recorded,
        "a rebuild writes no processed_events row"
    );
    let rebuilt = rows(&system).await;
    assert_eq!(
        system
            .rows("sessions where message_count = 1 and jsonb_array_length(agent_ids) = 1")
            .await,
        5,
        "the rebuild applied every session's message and agent"
    );

    system.start_projection().await;
    system.wait_until_projected(Duration::from_secs(30)).await;
    assert_eq!(
        rows(&system).await,
        rebuilt,
        "delivering what the rebuild applied changed no row"
    );
    let events = system.rows("contact_event_store").await;
    let pairs = system.carried().await.applied;
    let distinct = system.carried().await.applied_once;
    assert_eq!(
        (pairs, distinct),
        (
            Projection::ALL.len() as i64 * events,
            Projection::ALL.len() as i64 * events
        ),
        "every event recorded once for each projection"
    );
    let diffs = system.verify().await;
    assert!(diffs.is_empty(), "{diffs:?}");
    system.stop().await;
}

/// A rebuild of everything under live traffic and queries: commands go on landing in the read
/// model within the `min_version` wait (2 s), every query is answered, and no query sees a table
/// with rows missing; the swap happened (new tables), and a forgotten contact stays forgotten.
#[tokio::test]
async fn a_rebuild_under_live_traffic_keeps_the_lag_low_and_every_query_answered_in_full() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    let system = Arc::new(TestSystem::start().await);
    const CONTACTS: usize = 40;
    let mut contacts = Vec::new();
    for i in 0..CONTACTS {
        let contact = system
            .create_contact(json!({"name": format!("live{i}")}))
            .await;
        system.open_session(contact).await;
        contacts.push(contact);
    }
    let forgotten = system
        .create_contact(json!({"name": "Forgotten Fennimore"}))
        .await;
    let reply = system
        .command(Method::POST, &format!("/contacts/{forgotten}/forget"), None)
        .await;
    assert!(reply.status.is_success(), "{}", reply.body);
    system.wait_until_projected(Duration::from_secs(30)).await;
    let table_oid = "select 'public.contacts'::regclass::oid::bigint";
    let old_oid = system.count(table_oid).await;

    let stop = Arc::new(AtomicBool::new(false));
    // Writers: tag a contact, then read it back at the version the command answered.
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (system, stop, contacts) = (system.clone(), stop.clone(), contacts.clone());
            tokio::spawn(async move {
                let mut lags = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let contact = contacts[(n * 2 + w) % contacts.len()];
                    n += 1;
                    let reply = system
                        .command(
                            Method::POST,
                            &format!("/contacts/{contact}/tags"),
                            Some(json!({"tag": format!("w{w}n{n}")})),
                        )
                        .await;
                    assert!(reply.status.is_success(), "{}", reply.body);
                    let acknowledged = Instant::now();
                    let version = &reply.body["version"];
                    let read = system
                        .query(&format!("/contacts/{contact}?min_version={version}"))
                        .await;
                    assert_eq!(
                        read.status,
                        reqwest::StatusCode::OK,
                        "version {version} of a tagged contact not readable within 2 s: {}",
                        read.body
                    );
                    lags.push((acknowledged, acknowledged.elapsed()));
                }
                lags
            })
        })
        .collect();
    // Readers: every page holds every contact and session, every time.
    let readers: Vec<_> = ["/contacts?limit=500", "/sessions?limit=500"]
        .into_iter()
        .map(|path| {
            let (system, stop) = (system.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answered = 0;
                while !stop.load(Ordering::Relaxed) {
                    let page = system.query(path).await;
                    assert_eq!(
                        page.status,
                        reqwest::StatusCode::OK,
                        "{path}: {}",
                        page.body
                    );
                    let items = page.body["items"].as_array().map_or(0, Vec::len);
                    assert_eq!(items, CONTACTS, "{path} answered a partial table");
                    answered += 1;
                }
                answered
            })
        })
        .collect();

    // The console's pipeline page: it shows the rebuild running, and how far it is.
    let watcher = {
        let (system, stop) = (system.clone(), stop.clone());
        tokio::spawn(async move {
            let mut said = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let pipeline = system.query("/ops/pipeline").await;
                assert_eq!(
                    pipeline.status,
                    reqwest::StatusCode::OK,
                    "{}",
                    pipeline.body
                );
                if let Some(held_by) = pipeline.body["rebuild"]["held_by"].as_str() {
                    said.push(held_by.to_owned());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            said
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let report = rebuild_everything(&system, 5).await;
    let rebuilt = (started, Instant::now());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lags = Vec::new();
    for writer in writers {
        lags.extend(writer.await.expect("a writer failed"));
    }
    for reader in readers {
        assert!(reader.await.expect("a reader failed") > 0);
    }
    let said = watcher.await.expect("the pipeline watcher failed");
    assert!(
        said.iter()
            .any(|s| s.starts_with("replay-tool rebuild: ") && s.ends_with(" events")),
        "the pipeline showed the rebuild's progress: {said:?}"
    );
    let after = system.query("/ops/pipeline").await;
    assert!(
        after.body["rebuild"].is_null(),
        "no rebuild runs now: {}",
        after.body
    );

    assert!(report.events > 0);
    assert_ne!(
        system.count(table_oid).await,
        old_oid,
        "the rebuilt contacts table took the live one's place"
    );
    let during = lags
        .iter()
        .filter(|(at, _)| *at >= rebuilt.0 && *at <= rebuilt.1)
        .count();
    assert!(
        during > 0,
        "commands were acknowledged while the rebuild ran ({} in all)",
        lags.len()
    );
    let worst = lags.iter().map(|(_, lag)| *lag).max().unwrap_or_default();
    assert!(
        worst < Duration::from_secs(2),
        "a command took {worst:?} to be readable"
    );
    system.wait_until_projected(Duration::from_secs(30)).await;
    assert_eq!(
        system.rows("contacts where name like '%Fennimore%'").await,
        0,
        "the forgotten contact's name did not come back"
    );
    assert_eq!(
        system.query(&format!("/contacts/{forgotten}")).await.status,
        reqwest::StatusCode::NOT_FOUND
    );
    let diffs = system.verify().await;
    assert!(diffs.is_empty(), "{diffs:?}");
    let Ok(system) = Arc::try_unwrap(system) else {
        panic!("the traffic tasks are done with the system")
    };
    system.stop().await;
}
