//! The replay tool: a rebuild (of everything, of one projection, of one tenant) gives the live
//! rows, and the live consumers carry on after it without applying anything twice.

use std::time::Duration;

use e2e::{TestSystem, APPLIED_PAIRS};
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
                Some(json!({"channel_type_id": 1, "from_contact": true})),
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

async fn rows(system: &TestSystem) -> Vec<Value> {
    sqlx::query_scalar(
        "select r from (select to_jsonb(c) r from contacts c union all select to_jsonb(s) from sessions s \
         union all select to_jsonb(l) from domain_event_logs l) t order by r->>'id'",
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
            system
                .count("select count(*) from contact_event_store")
                .await
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
            .count("select count(*) from contact_event_store where tenant_id = 'tenant-b'")
            .await,
        "a tenant's rebuild reads only that tenant's events"
    );
    assert_eq!(rows(&system).await, live);
    assert_eq!(
        system.count("select count(*) from trackings where contact_id is not null and session_id is not null").await,
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
    replay_tool::rebuild(
        &system.db.pool,
        &system.keys(),
        &Projection::ALL,
        None,
        50,
        &quiet,
    )
    .await
    .unwrap();
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
        system
            .count(&format!(
                "select count(distinct (event_id, name)) from {APPLIED_PAIRS} a"
            ))
            .await,
        3 * system
            .count("select count(*) from contact_event_store")
            .await,
        "every event applied to each projection"
    );
    assert_eq!(
        system
            .count(&format!("select count(*) from {APPLIED_PAIRS} a"))
            .await,
        system
            .count(&format!(
                "select count(distinct (event_id, name)) from {APPLIED_PAIRS} a"
            ))
            .await,
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

/// `processed_events` after a rebuild: an event with no row gets one naming the rebuilt
/// projections, one whose rows cover some of them gets a row naming the others, and no
/// (event, projection) is recorded twice.
#[tokio::test]
async fn a_rebuild_records_each_event_once_for_each_projection_it_rebuilt() {
    let mut system = TestSystem::start().await;
    traffic(&system, &system.tenant.clone(), 3).await;
    system.wait_until_projected(Duration::from_secs(30)).await;
    system.stop_projection().await;
    let events = system
        .count("select count(*) from contact_event_store")
        .await;
    // Two events lose their rows; two others keep only a row for sessions (as if an older
    // version had written one row per projection and some were lost).
    let (gone, partial): (Vec<Uuid>, Vec<Uuid>) = {
        let ids: Vec<Uuid> =
            sqlx::query_scalar("select id from contact_event_store order by position limit 4")
                .fetch_all(&system.db.pool)
                .await
                .unwrap();
        (ids[..2].to_vec(), ids[2..].to_vec())
    };
    sqlx::query("delete from processed_events where event_id = any($1)")
        .bind(ids_of(&gone, &partial))
        .execute(&system.db.pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into processed_events (event_id, consumer_name) select unnest($1::uuid[]), 'sessions'",
    )
    .bind(&partial)
    .execute(&system.db.pool)
    .await
    .unwrap();

    replay_tool::rebuild(
        &system.db.pool,
        &system.keys(),
        &[Projection::Contacts],
        None,
        5,
        &|_, _| {},
    )
    .await
    .unwrap();
    let names = |ids: &[Uuid]| {
        let ids = ids.to_vec();
        let pool = system.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "select string_agg(consumer_name, ',' order by consumer_name) from processed_events \
                  where event_id = any($1) group by event_id order by event_id",
            )
            .bind(&ids)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(names(&gone).await, ["contacts", "contacts"]);
    assert_eq!(
        names(&partial).await,
        ["contacts,sessions", "contacts,sessions"]
    );

    replay_tool::rebuild(
        &system.db.pool,
        &system.keys(),
        &Projection::ALL,
        None,
        5,
        &|_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(
        names(&gone).await,
        [
            "contacts,sessions+domain_event_logs",
            "contacts,sessions+domain_event_logs"
        ]
    );
    assert_eq!(
        names(&partial).await,
        [
            "contacts,domain_event_logs,sessions",
            "contacts,domain_event_logs,sessions"
        ]
    );
    let pairs = system
        .count(&format!("select count(*) from {APPLIED_PAIRS} a"))
        .await;
    let distinct = system
        .count(&format!(
            "select count(distinct (event_id, name)) from {APPLIED_PAIRS} a"
        ))
        .await;
    assert_eq!((pairs, distinct), (3 * events, 3 * events));
    system.stop().await;
}

fn ids_of(a: &[Uuid], b: &[Uuid]) -> Vec<Uuid> {
    a.iter().chain(b).copied().collect()
}
