//! The check every fault scenario ends with, and what it waits for first.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{applied_per_projection, count, rows, stored_event_ids, Carried, OUTBOX_WAITING};
use crate::APPLIED_PAIRS;

use super::{Counts, Traffic};

/// Waits until no outbox row is pending and every stored event is in `processed_events` once
/// per projection.
pub async fn wait_converged(pool: &PgPool, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let carried = Carried::read(pool).await;
        if carried.converged() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence within {within:?}: {carried:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The messages a stream holds.
pub async fn stream_messages(nats_url: &str, auth: &platform::nats::NatsAuth, stream: &str) -> u64 {
    let js =
        async_nats::jetstream::new(platform::nats::connect(nats_url, auth).await.expect("nats"));
    js.get_stream(stream)
        .await
        .expect("stream")
        .get_info()
        .await
        .expect("stream info")
        .state
        .messages
}

/// The end check of every fault scenario, after [`wait_converged`]. Returns the counts.
pub async fn assert_end_state(
    pool: &PgPool,
    keys: &platform::personal::DataKeys,
    traffic: &Traffic,
) -> Counts {
    let acked = traffic.acknowledged_events();
    let stored = stored_event_ids(pool).await;
    let stored_set: HashSet<Uuid> = stored.iter().copied().collect();
    let lost: Vec<&Uuid> = acked.iter().filter(|id| !stored_set.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged events missing from the store: {lost:?}"
    );
    assert!(
        acked.len() > 20,
        "enough traffic got through: {} events acknowledged, {} commands sent",
        acked.len(),
        traffic.sent()
    );
    // Exactly once: an event id is the store's primary key, so a command that took effect twice
    // shows as two contacts of one client's name (each name is sent once; a forgotten contact
    // has none).
    let duplicates = count(
        pool,
        "select count(*) from (select name from contacts where name is not null group by name having count(*) > 1) d",
    )
    .await as usize;
    assert_eq!(duplicates, 0, "a command took effect twice");
    let answered_twice = acked.len() - acked.iter().collect::<HashSet<_>>().len();
    assert_eq!(answered_twice, 0, "an event id was answered twice");
    // Applied exactly once: no (event, projection) in two processed_events rows.
    assert_eq!(
        count(
            pool,
            &format!("select count(*) from (select 1 from {APPLIED_PAIRS} a group by event_id, name having count(*) > 1) d")
        )
        .await,
        0,
        "an event was applied twice"
    );
    let applied = applied_per_projection(pool).await;
    let each = |n: i64| {
        ["contacts", "domain_event_logs", "messages", "sessions"]
            .map(|consumer| (consumer.to_owned(), n))
            .to_vec()
    };
    assert_eq!(
        applied,
        each(stored.len() as i64),
        "every event applied once by each projection"
    );
    // Read-row versions: each row is at its aggregate's last stored event.
    for (table, kind) in [("contacts", "contact"), ("sessions", "session")] {
        let behind = count(
            pool,
            &format!(
                "select count(*) from (select aggregate_id, max(sequence_number) as last \
                   from contact_event_store where aggregate_type = '{kind}' group by 1) s \
                   left join {table} r on r.id = s.aggregate_id \
                  where r.version is distinct from s.last"
            ),
        )
        .await;
        assert_eq!(behind, 0, "{table} rows not at their last stored version");
    }
    assert_eq!(
        rows(pool, OUTBOX_WAITING).await,
        0,
        "an outbox row is stuck"
    );
    assert_eq!(
        rows(pool, "outbox_events").await,
        0,
        "a published outbox row was kept (the relay deletes what it published)"
    );
    let diffs = replay_tool::verify(pool, keys, None, 500, &|_, _| {})
        .await
        .expect("verify");
    assert!(
        diffs.is_empty(),
        "read tables differ from a rebuild: {diffs:?}"
    );
    Counts {
        sent: traffic.sent(),
        acknowledged: traffic.acknowledged_commands(),
        acknowledged_events: acked.len(),
        stored: stored.len(),
        applied: stored.len(),
        lost: lost.len(),
        duplicates,
    }
}
