//! Baseline (a): what a command minimally must do, in raw SQL over a pool of as many connections
//! as there are clients: read the aggregate's rows by `aggregate_id`, then insert one event row
//! and its outbox row in one transaction. No HTTP, no auth, no domain, no snapshots, no relay.
//!
//! Each client appends to its own streams, 5–50 events long (a session's length in the HTTP
//! workload), with the payload and metadata of a real `session.message_recorded`.

use std::time::{Duration, Instant};

use chrono::Utc;
use platform::event_store::{EventRow, EVENT_COLUMNS};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

use crate::workload::{RunResult, Window};

const APPEND: &str = r#"
with inserted as (
    insert into contact_event_store
        (id, aggregate_id, aggregate_type, event_type, event_version, sequence_number, event_data,
         metadata, occurred_at, tenant_id, project_id, causation_id, correlation_id)
    values ($1, $2, 'session', 'session.message_recorded', 'v1', $3, $4, $5, $6, $7, $8, $9, $9)
    returning id, aggregate_id, aggregate_type, event_type, event_version, event_data, metadata,
              tenant_id, project_id, created_at
)
insert into outbox_events
    (event_id, aggregate_id, aggregate_type, event_type, event_version, event_data, metadata,
     tenant_id, project_id, created_at)
select id, aggregate_id, aggregate_type, event_type, event_version, event_data, metadata,
       tenant_id, project_id, created_at
  from inserted
"#;

/// A pool of exactly `connections` connections to `url`, all opened up front.
pub async fn pool(url: &str, connections: u32) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(connections)
        .min_connections(connections)
        .connect_with(platform::db::connect_options(url)?)
        .await?)
}

pub async fn run(
    pool: &PgPool,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    seed: u64,
) -> RunResult {
    let started = Instant::now();
    let measure_from = started + warmup;
    let deadline = measure_from + duration;
    let project_id = Uuid::new_v4();
    let user_id = Uuid::new_v4();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ c as u64);
            let mut window = Window::default();
            let (mut aggregate, mut contact, mut sequence, mut length) =
                (Uuid::now_v7(), Uuid::now_v7(), 0i64, 0i64);
            loop {
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                if sequence >= length {
                    (aggregate, contact, sequence, length) =
                        (Uuid::now_v7(), Uuid::now_v7(), 0, rng.random_range(5..=50));
                }
                let result = command(
                    &pool,
                    aggregate,
                    contact,
                    sequence + 1,
                    project_id,
                    user_id,
                    &mut rng,
                )
                .await;
                let done = Instant::now();
                match result {
                    Ok(()) => {
                        sequence += 1;
                        if sent >= measure_from {
                            window.latencies.push(done - sent);
                        }
                    }
                    Err(e) => {
                        window.errors += 1;
                        window.first_error.get_or_insert_with(|| e.to_string());
                        sequence = length;
                    }
                }
            }
            window
        }));
    }
    crate::workload::merge(futures::future::join_all(tasks).await, duration)
}

async fn command(
    pool: &PgPool,
    aggregate: Uuid,
    contact: Uuid,
    sequence: i64,
    project_id: Uuid,
    user_id: Uuid,
    rng: &mut StdRng,
) -> anyhow::Result<()> {
    let now = Utc::now();
    let from_contact = rng.random_bool(0.5);
    let data = json!({
        "message_id": null,
        "from_contact": from_contact,
        "agent_id": if from_contact { None } else { Some(Uuid::new_v4()) },
        "sent_at": now,
    });
    let correlation = Uuid::now_v7();
    let metadata =
        json!({"user_id": user_id, "contact_id": contact, "correlation_id": correlation});
    let mut tx = pool.begin().await?;
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "select {EVENT_COLUMNS} from contact_event_store e where e.aggregate_id = $1 order by e.sequence_number"
    ))
    .bind(aggregate)
    .fetch_all(&mut *tx)
    .await?;
    anyhow::ensure!(rows.len() as i64 == sequence - 1, "lost an event");
    sqlx::query(APPEND)
        .bind(Uuid::now_v7())
        .bind(aggregate)
        .bind(sequence)
        .bind(data)
        .bind(metadata)
        .bind(now.naive_utc())
        .bind("bench-tenant")
        .bind(project_id)
        .bind(correlation)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
