//! Scale-out: several instances of each service (the real binaries, as processes) sharing one
//! database, on a single NATS server or a 3-node JetStream cluster; instances and broker nodes
//! killed under load. Every test ends with the fault suite's end check (`e2e::checks`).

use std::time::Duration;

use e2e::checks::{self, Traffic};
use e2e::process::ServiceProcess;
use e2e::{TestDb, TestStream, TestSystem};
use tokio::time::Instant;

fn env(
    db: &TestDb,
    stream: &TestStream,
    nats_url: &str,
    replicas: usize,
) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", db.url.clone()),
        ("NATS_URL", nats_url.to_owned()),
        ("NATS_STREAM", stream.name.clone()),
        ("NATS_SUBJECT_PREFIX", stream.prefix.clone()),
        ("NATS_STREAM_REPLICAS", replicas.to_string()),
        ("EVENT_PARTITIONS", stream.partitions.to_string()),
        ("RELAY_POLL_MS", "100".to_owned()),
        ("PROJECTION_ACK_WAIT_SECS", "3".to_owned()),
    ]
}

/// `projection_owned_partitions` of an instance's `/metrics` (None while it does not answer).
async fn owned(service: &ServiceProcess) -> Option<u32> {
    let text = reqwest::get(format!("{}/metrics", service.url()))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("projection_owned_partitions "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u32)
}

/// Polls until `check` holds; returns how long it took.
async fn until<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The holders of each partition's lock: exactly one per partition is what ownership promises.
async fn lock_holders(db: &TestDb, stream: &TestStream) -> Vec<(i64, i64)> {
    sqlx::query_as(
        "select objid::int8, count(*) from pg_locks \
          where locktype = 'advisory' and granted and objsubid = 2 \
            and database = (select oid from pg_database where datname = current_database()) \
            and classid = $1::int8::oid and objid < $2 \
          group by objid order by objid",
    )
    .bind(i64::from(projection_service::ownership::namespace(
        &stream.name,
    )))
    .bind(i64::from(stream.partitions))
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn projection_instances_share_the_partitions_and_hand_them_over() {
    let db = TestDb::new().await;
    let stream = TestStream::new(None, 4);
    let tenant = TestSystem::bootstrap_tenant(&db.pool, "tenant-a").await;
    let env = env(&db, &stream, &stream.url, 1);
    let command = ServiceProcess::start("command-service", "COMMAND_ADDR", &env).await;
    let mut a = ServiceProcess::start("projection-service", "QUERY_ADDR", &env).await;
    let b = ServiceProcess::start("projection-service", "QUERY_ADDR", &env).await;
    let traffic = Traffic::start(vec![command.url()], tenant, 3);

    let shared = |a: Option<u32>, b: Option<u32>| a == Some(2) && b == Some(2);
    let took = until(
        Duration::from_secs(30),
        "the partitions shared 2 + 2",
        || async { shared(owned(&a).await, owned(&b).await) },
    )
    .await;
    println!("two instances: shared 2 + 2 after {took:.1?}");
    assert_eq!(
        lock_holders(&db, &stream).await,
        [(0, 1), (1, 1), (2, 1), (3, 1)]
    );

    // A lost lease (the server ends the sessions holding the partition locks) stops its
    // worker; the partitions are claimed again.
    let ended: i64 = sqlx::query_scalar(
        "select count(*) from (select pg_terminate_backend(pid) from pg_locks \
          where locktype = 'advisory' and granted and objsubid = 2 \
            and database = (select oid from pg_database where datname = current_database()) \
            and classid = $1::int8::oid and objid < $2) t",
    )
    .bind(i64::from(projection_service::ownership::namespace(
        &stream.name,
    )))
    .bind(4_i64)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(ended, 4);
    let took = until(
        Duration::from_secs(30),
        "every partition claimed again",
        || async {
            lock_holders(&db, &stream).await.len() == 4
                && owned(&a).await.unwrap_or(0) + owned(&b).await.unwrap_or(0) == 4
        },
    )
    .await;
    println!("leases ended by the server: all 4 partitions owned again after {took:.1?}");

    // Death: the survivor takes everything over; a restarted instance gets its share back.
    a.kill();
    let took = until(
        Duration::from_secs(30),
        "the survivor owns all 4",
        || async { owned(&b).await == Some(4) },
    )
    .await;
    println!("instance killed: the survivor owns all 4 partitions after {took:.1?}");
    a.restart().await;
    let took = until(Duration::from_secs(30), "shared 2 + 2 again", || async {
        shared(owned(&a).await, owned(&b).await)
    })
    .await;
    println!("instance restarted: shared 2 + 2 again after {took:.1?}");

    let (sent, acked) = traffic.stop().await;
    checks::wait_converged(&db.pool, Duration::from_secs(90)).await;
    let counts = checks::end_check(&db.pool, &stream.url, &stream.name, sent, &acked).await;
    println!("{counts}");
}
