//! Retention: published outbox rows left by earlier releases (the relay now deletes what it
//! publishes), idempotency keys and `processed_events` rows past their retention are deleted by
//! the services' sweepers, in bounded statements, one instance at a
//! time; everything younger, and every outbox row not yet published, stays; `replay-tool status`
//! reports what each table holds.
//!
//! Rows are made old by moving their timestamps back (an hour-long retention cannot be waited
//! out), the same way for the rows that must go and for the ones that must stay.

use std::time::Duration;

use chrono::{DateTime, Utc};
use command_service::retention::RetentionSweep;
use e2e::{Options, TestDb, TestSystem, APPLIED_PAIRS};
use platform::retention::{Elected, RetentionPeriods, Sweep, Swept};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::cli::replay_tool_with;

const HOUR: Duration = Duration::from_secs(3600);

/// Creates a contact under an idempotency key and records a message for it (which opens a
/// session); returns the events the two commands appended.
async fn contact_with_a_session(system: &TestSystem, name: &str, key: &str) -> Vec<Uuid> {
    let created = system
        .command_as(
            &system.tenant,
            Method::POST,
            "/contacts",
            Some(json!({ "name": name })),
            &[("idempotency-key", key)],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let message = system
        .command(
            Method::POST,
            &format!("/contacts/{}/messages", created.id("id")),
            Some(json!({"channel_type_id": 1, "from_contact": true})),
        )
        .await;
    assert_eq!(message.status, StatusCode::OK, "{}", message.body);
    [&created.body, &message.body]
        .iter()
        .flat_map(|b| b["event_ids"].as_array().expect("event_ids").clone())
        .map(|id| id.as_str().unwrap().parse().unwrap())
        .collect()
}

/// Moves the rows of `events` and `keys` back in time: outbox rows (created and published) and
/// idempotency keys by `hours`, `processed_events` rows by `days`.
async fn age(system: &TestSystem, events: &[Uuid], keys: &[&str], hours: i32, days: i32) {
    let pool = &system.db.pool;
    sqlx::query(
        "update outbox_events set created_at = created_at - make_interval(hours => $2), \
                processed_at = processed_at - make_interval(hours => $2) where event_id = any($1)",
    )
    .bind(events)
    .bind(hours)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "update idempotency_keys set created_at = created_at - make_interval(hours => $2) \
          where idempotency_key = any($1)",
    )
    .bind(keys)
    .bind(hours)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "update processed_events set processed_at = processed_at - make_interval(days => $2) \
          where event_id = any($1)",
    )
    .bind(events)
    .bind(days)
    .execute(pool)
    .await
    .unwrap();
}

/// Waits until every stored event is published and applied by every projection (the outbox rows
/// `unpublished` aside: they never will be).
async fn projected(system: &TestSystem, unpublished: &[Uuid]) {
    system
        .eventually(Duration::from_secs(30), "every event published and projected", || async {
            let projections = projection_service::projections::Projection::ALL.len();
            let (waiting, unapplied): (i64, i64) = sqlx::query_as(&format!(
                "select (select count(*) from outbox_events where status <> 'processed' and id <> all($1)), \
                        (select count(*) * {projections} from contact_event_store) - (select count(*) from {APPLIED_PAIRS} a)",
            ))
            .bind(unpublished)
            .fetch_one(&system.db.pool)
            .await
            .unwrap();
            (waiting, unapplied) == (0, 0)
        })
        .await;
}

/// How many outbox rows `events` have.
async fn outbox_rows_of(system: &TestSystem, events: &[Uuid]) -> i64 {
    sqlx::query_scalar("select count(*) from outbox_events where event_id = any($1)")
        .bind(events)
        .fetch_one(&system.db.pool)
        .await
        .unwrap()
}

/// How many rows of `events` each table holds: (published outbox rows, processed_events rows).
async fn held(system: &TestSystem, events: &[Uuid]) -> (i64, i64) {
    sqlx::query_as(
        "select (select count(*) from outbox_events where event_id = any($1) and status = 'processed'), \
                (select count(*) from processed_events where event_id = any($1))",
    )
    .bind(events)
    .fetch_one(&system.db.pool)
    .await
    .unwrap()
}

async fn keys_held(system: &TestSystem, keys: &[&str]) -> i64 {
    sqlx::query_scalar("select count(*) from idempotency_keys where idempotency_key = any($1)")
        .bind(keys)
        .fetch_one(&system.db.pool)
        .await
        .unwrap()
}

/// Sweeps finished so far, by table (the histogram's sample count).
async fn sweeps(system: &TestSystem, base_url: &str, table: &str) -> f64 {
    e2e::sample(
        &system.metrics(base_url).await,
        "retention_sweep_seconds_count",
        &[&format!("table=\"{table}\"")],
    )
}

fn retained<'a>(status: &'a Value, table: &str) -> &'a Value {
    status["retention"]
        .as_array()
        .and_then(|tables| tables.iter().find(|t| t["table"] == table))
        .unwrap_or_else(|| panic!("no {table} in {status}"))
}

#[tokio::test]
async fn rows_past_their_retention_are_deleted_and_young_or_unpublished_rows_stay() {
    let mut system = TestSystem::start_with(Options {
        partitions: 2,
        retention: RetentionPeriods {
            outbox_retention: HOUR,
            idempotency_ttl: HOUR,
        },
        retention_interval: Duration::from_millis(200),
        ..Options::default()
    })
    .await;
    // Outbox rows that are not published, older than anything else: one put back to pending to
    // be published again (of an event the store does not hold, so the relay never takes it), one
    // that failed.
    let unpublished: Vec<Uuid> = sqlx::query_scalar(
        "insert into outbox_events (event_id, aggregate_id, aggregate_type, event_type, event_data, \
                                    tenant_id, created_at, processed_at, status, last_error) \
         select gen_random_uuid(), gen_random_uuid(), 'contact', 'contact.created', '{}', $1, \
                (now() at time zone 'utc') - interval '30 days', (now() at time zone 'utc') - interval '30 days', s, 'x' \
           from unnest(array['pending', 'failed']) s \
         returning id",
    )
    .bind(&system.tenant.tenant_id)
    .fetch_all(&system.db.pool)
    .await
    .unwrap();
    let old_keys = ["old-1", "old-2", "old-3"];
    let young_keys = ["young-1", "young-2", "young-3"];
    let mut old = Vec::new();
    for key in old_keys {
        old.extend(contact_with_a_session(&system, key, key).await);
    }
    let mut young = Vec::new();
    for key in young_keys {
        young.extend(contact_with_a_session(&system, key, key).await);
    }
    projected(&system, &unpublished).await;
    let mut all = old.clone();
    all.extend(&young);
    assert_eq!(
        outbox_rows_of(&system, &all).await,
        0,
        "the relay deletes what it published"
    );
    // Published rows as the releases before kept them (marked, not deleted): the sweep's work.
    e2e::outbox_as_an_earlier_release_left_it(&system.db.pool, &all).await;
    // Remembered: the key with another body is refused.
    system
        .command_as(
            &system.tenant,
            Method::POST,
            "/contacts",
            Some(json!({"name": "Another body"})),
            &[("idempotency-key", "old-1")],
        )
        .await
        .assert_problem(422);
    let before = system.metrics(&system.command_url).await;
    age(&system, &old, &old_keys, 2, 8).await;
    system
        .eventually(Duration::from_secs(30), "the aged rows deleted", || async {
            held(&system, &old).await == (0, 0) && keys_held(&system, &old_keys).await == 0
        })
        .await;
    // Two more sweeps of each table, with the young rows there all along.
    let (command, query) = (system.command_url.clone(), system.query_url.clone());
    let swept = (
        sweeps(&system, &command, "outbox_events").await,
        sweeps(&system, &query, "processed_events").await,
    );
    system
        .eventually(Duration::from_secs(30), "two more sweeps", || async {
            sweeps(&system, &command, "outbox_events").await >= swept.0 + 2.0
                && sweeps(&system, &query, "processed_events").await >= swept.1 + 2.0
        })
        .await;
    let young_events = young.len() as i64;
    assert_eq!(
        held(&system, &young).await,
        (young_events, young_events),
        "young rows kept"
    );
    assert_eq!(keys_held(&system, &young_keys).await, 3);
    let unpublished_held: i64 =
        sqlx::query_scalar("select count(*) from outbox_events where id = any($1)")
            .bind(&unpublished)
            .fetch_one(&system.db.pool)
            .await
            .unwrap();
    assert_eq!(unpublished_held, 2, "unpublished rows are never deleted");

    let metrics = system.metrics(&command).await;
    for (table, deleted) in [
        ("outbox_events", old.len()),
        ("idempotency_keys", old_keys.len()),
        ("processed_events", old.len()),
    ] {
        let label = format!("table=\"{table}\"");
        let moved = e2e::sample(&metrics, "retention_rows_deleted_total", &[&label])
            - e2e::sample(&before, "retention_rows_deleted_total", &[&label]);
        assert!(
            moved >= deleted as f64,
            "{table}: {moved} deleted:\n{metrics}"
        );
        let oldest = e2e::sample(&metrics, "retention_oldest_age_seconds", &[&label]);
        assert!(
            oldest > 0.0 && oldest < 600.0,
            "{table}: the oldest row left is young: {oldest}"
        );
    }
    assert_eq!(
        e2e::sample(&metrics, "retention_sweep_failures_total", &[]),
        0.0,
        "{metrics}"
    );

    // A young key still replays its first answer; an expired one is forgotten: the same request
    // runs again.
    let events = system.rows("contact_event_store").await;
    let replayed = system
        .command_as(
            &system.tenant,
            Method::POST,
            "/contacts",
            Some(json!({"name": "young-1"})),
            &[("idempotency-key", "young-1")],
        )
        .await;
    assert_eq!(replayed.status, StatusCode::CREATED);
    let again = system
        .command_as(
            &system.tenant,
            Method::POST,
            "/contacts",
            Some(json!({"name": "Another body"})),
            &[("idempotency-key", "old-1")],
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(
        system.rows("contact_event_store").await,
        events + 1,
        "only the expired key's request ran again"
    );
    let fresh: Uuid = again.id("id");
    let read = system
        .query(&format!("/contacts/{fresh}?min_version=1"))
        .await;
    assert_eq!(read.status, StatusCode::OK);

    // With the services stopped nothing is swept: `status` shows what the next sweep would take.
    system.stop_command().await;
    system.stop_projection().await;
    age(&system, &young, &young_keys, 2, 8).await;
    let hour = [("OUTBOX_RETENTION", "1h"), ("IDEMPOTENCY_TTL", "60m")];
    let (code, status, out) = replay_tool_with(&system, &["status", "--json"], &hour);
    assert_eq!(code, 0, "{out}");
    let outbox = retained(&status, "outbox_events");
    assert_eq!(
        (outbox["rows"].as_i64(), outbox["past_retention"].as_i64()),
        // The young rows and the two unpublished ones; the fresh event's row went at publication.
        (Some(young_events + 2), Some(young_events)),
        "{status}"
    );
    assert_eq!(outbox["retention_seconds"], 3600.0);
    let oldest = outbox["oldest_seconds"].as_f64().unwrap();
    assert!(
        (7200.0..7800.0).contains(&oldest),
        "published 2 h ago: {oldest}"
    );
    let keys = retained(&status, "idempotency_keys");
    assert_eq!(
        (keys["rows"].as_i64(), keys["past_retention"].as_i64()),
        (Some(4), Some(3)),
        "{status}"
    );
    let processed = retained(&status, "processed_events");
    assert_eq!(
        (
            processed["rows"].as_i64(),
            processed["past_retention"].as_i64()
        ),
        (Some(young_events + 1), Some(young_events)),
        "{status}"
    );
    assert_eq!(
        processed["retention_seconds"],
        7.0 * 86400.0,
        "the stream's max age"
    );
    assert!(processed["oldest_seconds"].as_f64().unwrap() > 8.0 * 86400.0);
    // A flag beats the environment, as for every setting.
    let (_, status, _) = replay_tool_with(
        &system,
        &["status", "--json", "--outbox-retention", "3h"],
        &hour,
    );
    assert_eq!(retained(&status, "outbox_events")["past_retention"], 0);
    let (code, _, text) = replay_tool_with(&system, &["status"], &hour);
    assert_eq!(code, 0);
    assert!(
        text.contains("past retention") && text.contains("idempotency_keys"),
        "{text}"
    );
    system.stop().await;
}

#[tokio::test]
async fn a_sweep_deletes_in_bounded_statements_until_one_comes_back_short() {
    let db = TestDb::new().await;
    let tenant = TestSystem::bootstrap_tenant(&db.pool, "tenant-a").await;
    let system_pool = e2e::settings_for(&db.url).system_pool("test", 2).unwrap();
    let mut conn = system_pool.acquire().await.unwrap();
    let sweep = RetentionSweep {
        outbox_retention: HOUR,
        idempotency_ttl: HOUR,
        chunk_rows: 3,
    };
    let processed = projection_service::retention::RetentionSweep {
        retention: 7 * 24 * HOUR,
        chunk_rows: 3,
    };
    let shutdown = CancellationToken::new();
    let mut sweep_all = async || {
        let mut swept = sweep.sweep(&mut conn, &shutdown).await.unwrap();
        swept.extend(processed.sweep(&mut conn, &shutdown).await.unwrap());
        swept
    };
    // Empty tables: one statement each, nothing deleted, no oldest row.
    assert_eq!(
        sweep_all()
            .await
            .iter()
            .map(|s| (s.table, s.deleted, s.statements, s.oldest_age_seconds))
            .collect::<Vec<_>>(),
        [
            ("outbox_events", 0, 1, 0.0),
            ("idempotency_keys", 0, 1, 0.0),
            ("processed_events", 0, 1, 0.0)
        ]
    );
    // 10 published rows 2 h old, then 2 published just now; a pending and a failed row, old.
    sqlx::query(
        "insert into outbox_events (event_id, aggregate_id, aggregate_type, event_type, event_data, tenant_id, \
                                    created_at, processed_at, status) \
         select gen_random_uuid(), gen_random_uuid(), 'contact', 'contact.created', '{}', 'tenant-a', \
                (now() at time zone 'utc') - make_interval(hours => h), (now() at time zone 'utc') - make_interval(hours => h), s \
           from (values (2, 'processed', 10), (0, 'processed', 2), (3, 'pending', 1), (3, 'failed', 1)) v(h, s, n), \
                generate_series(1, n) \
          order by h desc, s",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into idempotency_keys (project_id, tenant_id, idempotency_key, request_hash, response_status, \
                                       response_body, created_at) \
         select $1, 'tenant-a', 'k' || g, 'h', 201, '{}', \
                (now() at time zone 'utc') - case when g <= 7 then interval '2 hours' else interval '0' end \
           from generate_series(1, 8) g",
    )
    .bind(tenant.project_id)
    .execute(&db.pool)
    .await
    .unwrap();
    // 5 processed_events rows 8 days old, 1 of an hour ago.
    sqlx::query(
        "insert into processed_events (event_id, consumer_name, processed_at) \
         select gen_random_uuid(), 'contacts+sessions+domain_event_logs', \
                (now() at time zone 'utc') - case when g <= 5 then interval '8 days' else interval '1 hour' end \
           from generate_series(1, 6) g",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let swept = sweep_all().await;
    let [outbox, keys, processed_events] = [swept[0], swept[1], swept[2]];
    assert_eq!(
        (outbox.table, outbox.deleted, outbox.statements),
        ("outbox_events", 10, 4),
        "3 + 3 + 3 + 1"
    );
    assert_eq!(
        (keys.table, keys.deleted, keys.statements),
        ("idempotency_keys", 7, 3),
        "3 + 3 + 1"
    );
    assert_eq!(
        (processed_events.deleted, processed_events.statements),
        (5, 2),
        "3 + 2"
    );
    assert!(outbox.oldest_age_seconds < 600.0, "{outbox:?}");
    assert!(
        (3600.0..4200.0).contains(&processed_events.oldest_age_seconds),
        "{processed_events:?}"
    );
    let left: Vec<(String, i64)> =
        sqlx::query_as("select status::text, count(*) from outbox_events group by 1 order by 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        left,
        [
            ("failed".to_owned(), 1),
            ("pending".to_owned(), 1),
            ("processed".to_owned(), 2)
        ]
    );
    // Nothing is past its retention now: one statement each, deleting nothing.
    let swept = sweep
        .sweep(&mut conn, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        swept
            .iter()
            .map(|s| (s.deleted, s.statements))
            .collect::<Vec<_>>(),
        [(0, 1), (0, 1)]
    );
}

/// A stand-in sweep whose work is a span of time on the database, recorded there (a killed
/// statement records nothing: it did no work).
struct Probe {
    instance: i32,
}

impl Sweep for Probe {
    async fn sweep(
        &self,
        conn: &mut PgConnection,
        _shutdown: &CancellationToken,
    ) -> anyhow::Result<Vec<Swept>> {
        sqlx::query("select probe_sweep($1)")
            .bind(self.instance)
            .execute(conn)
            .await?;
        Ok(Vec::new())
    }
}

type Spans = Vec<(i32, DateTime<Utc>, DateTime<Utc>)>;

async fn spans(db: &TestDb) -> Spans {
    sqlx::query_as("select instance, started, ended from probe_spans order by started")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

fn sweeps_of(spans: &Spans, instance: i32) -> usize {
    spans.iter().filter(|s| s.0 == instance).count()
}

/// Polls the recorded sweeps until `check` holds.
async fn wait_for(db: &TestDb, what: &str, check: impl Fn(&Spans) -> bool) -> Spans {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let spans = spans(db).await;
        if check(&spans) {
            return spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}: {spans:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running sweeper and what stops it.
struct Running(CancellationToken, tokio::task::JoinHandle<()>);

impl Running {
    async fn stop(self) {
        self.0.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.1)
            .await
            .expect("a sweeper stops when told")
            .unwrap();
    }
}

#[tokio::test]
async fn two_sweepers_never_sweep_at_once_and_one_takes_over_when_the_other_goes() {
    let db = TestDb::new().await;
    sqlx::raw_sql(
        "create table probe_spans (instance int, started timestamptz, ended timestamptz); \
         create function probe_sweep(i int) returns void language plpgsql as $$ \
         declare t0 timestamptz := clock_timestamp(); \
         begin perform pg_sleep(0.03); insert into probe_spans values (i, t0, clock_timestamp()); end $$;",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    const LOCK: i64 = 0x7465_7374;
    let start = |instance: i32| {
        let token = CancellationToken::new();
        let sweeper = Elected {
            name: "probe",
            pool: db.pool.clone(),
            lock: LOCK,
            interval: Duration::from_millis(10),
            sweep: Probe { instance },
        };
        Some(Running(token.clone(), tokio::spawn(sweeper.run(token))))
    };
    let mut running = [start(1), start(2)];
    // One is elected and keeps sweeping; the other stands by.
    let so_far = wait_for(&db, "20 sweeps", |s| s.len() >= 20).await;
    let leader = so_far[0].0;
    let follower = 3 - leader;
    assert_eq!(
        sweeps_of(&so_far, leader),
        so_far.len(),
        "only the elected sweeper sweeps: {so_far:?}"
    );
    // The leader's connection dies (killed by the server, as on a crash or a network cut): the
    // lock goes with it and the other takes over.
    let killed: i64 = sqlx::query_scalar(
        "select count(pg_terminate_backend(pid)) from pg_locks \
          where locktype = 'advisory' and granted and classid::bigint = $1 and objid::bigint = $2 \
            and objsubid = 1",
    )
    .bind(LOCK >> 32)
    .bind(LOCK & 0xffff_ffff)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(killed, 1, "exactly one session holds the lock");
    let so_far = wait_for(&db, "the other sweeper took over", |s| {
        sweeps_of(s, follower) >= 10
    })
    .await;
    // Stopped, the new leader lets go; the first, standing for election again, takes over.
    let before = sweeps_of(&so_far, leader);
    running[(follower - 1) as usize]
        .take()
        .unwrap()
        .stop()
        .await;
    let so_far = wait_for(&db, "the first sweeper back", |s| {
        sweeps_of(s, leader) >= before + 10
    })
    .await;
    running[(leader - 1) as usize].take().unwrap().stop().await;
    // Never two at once, through all of it.
    for pair in so_far.windows(2) {
        assert!(
            pair[1].1 >= pair[0].2,
            "two sweeps overlapped: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
}
