//! Scale-out: several instances of each service (the real binaries, as processes) sharing one
//! database, on a single NATS server or a 3-node JetStream cluster; instances and broker nodes
//! killed under load. Every test ends with the fault suite's end check (`e2e::traffic`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::cluster::NatsCluster;
use e2e::process::ServiceProcess;
use e2e::traffic::{
    assert_end_state, stream_messages, wait_converged, Counts, LagMonitor, Traffic, LAGGING_SECS,
};
use e2e::{BrokerSecurity, Login, TestDb, TestStream, TestSystem};
use platform::nats::{partition_for, StreamSettings};
use serde_json::{json, Value};
use tokio::time::Instant;
use uuid::Uuid;

fn env(db: &TestDb, stream: &TestStream, replicas: usize) -> Vec<(&'static str, String)> {
    let mut env = stream.service_env(&db.url);
    env.push(("NATS_STREAM_REPLICAS", replicas.to_string()));
    env.push(("RELAY_POLL_MS", "100".to_owned()));
    env
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
    let env = env(&db, &stream, 1);
    let command = ServiceProcess::start("command-service", "COMMAND_ADDR", &env).await;
    let mut a = ServiceProcess::start("projection-service", "QUERY_ADDR", &env).await;
    let b = ServiceProcess::start("projection-service", "QUERY_ADDR", &env).await;
    let mut traffic = Traffic::start(vec![command.url()], tenant, 3);

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

    traffic.stop().await;
    wait_converged(&db.pool, Duration::from_secs(90)).await;
    end_check(&db.pool, &stream, &stream.url, &traffic).await;
}

/// The fault suite's end check, and each event in the stream exactly once; prints the counts.
async fn end_check(
    db: &sqlx::PgPool,
    test_stream: &TestStream,
    nats_url: &str,
    traffic: &Traffic,
) -> Counts {
    let stream = test_stream.name.as_str();
    let counts = assert_end_state(db, &test_stream.keys(), traffic).await;
    assert_eq!(
        stream_messages(nats_url, &test_stream.auth(Login::Admin), stream).await as usize,
        counts.stored,
        "each event in the stream exactly once"
    );
    println!("{counts}");
    counts
}

/// The index of the node named `name` (`nats-N`).
fn node_index(name: &str) -> usize {
    name.trim_start_matches("nats-").parse::<usize>().unwrap() - 1
}

/// When asked, and the leader's name of the stream, then of each consumer.
type LeadersSample = (Instant, Vec<Option<String>>);

/// Who leads the stream and each partition's consumer, sampled every 100 ms: a broker node's
/// death costs a Raft election for each group it led (4 to 9 s in nats-server, hard-coded), and
/// the lag can only recover once those are over.
struct Leaders {
    samples: Arc<std::sync::Mutex<Vec<LeadersSample>>>,
    handle: tokio::task::JoinHandle<()>,
}

impl Leaders {
    fn watch(js: async_nats::jetstream::Context, stream: &TestStream) -> Self {
        let samples: Arc<std::sync::Mutex<Vec<LeadersSample>>> = Arc::default();
        let handle = tokio::spawn({
            let (samples, name, partitions) =
                (samples.clone(), stream.name.clone(), stream.partitions);
            async move {
                loop {
                    let asked = Instant::now();
                    let ask = async {
                        let events = js.get_stream(&name).await.ok()?;
                        let info = events.get_info().await.ok()?;
                        let mut leaders = vec![info.cluster?.leader];
                        for partition in 0..partitions {
                            let info = events
                                .consumer_info(projection_service::worker::durable_name(partition))
                                .await
                                .ok()?;
                            leaders.push(info.cluster?.leader);
                        }
                        Some(leaders)
                    };
                    let leaders = tokio::time::timeout(Duration::from_millis(500), ask)
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| vec![None]);
                    samples.lock().unwrap().push((asked, leaders));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Self { samples, handle }
    }

    /// The groups `node` leads now (stream first, then consumers; empty if it leads none).
    fn led_by(&self, node: &str) -> Vec<usize> {
        let samples = self.samples.lock().unwrap();
        let Some((_, leaders)) = samples.last() else {
            return Vec::new();
        };
        (0..leaders.len())
            .filter(|&i| leaders[i].as_deref() == Some(node))
            .collect()
    }

    /// How long after `since` every group had a leader other than `killed` again.
    fn elected_after(&self, since: Instant, killed: &str) -> Option<Duration> {
        let samples = self.samples.lock().unwrap();
        samples
            .iter()
            .filter(|(t, _)| *t >= since)
            .find(|(_, leaders)| {
                leaders.len() > 1
                    && leaders
                        .iter()
                        .all(|l| l.as_deref().is_some_and(|l| l != killed))
            })
            .map(|(t, _)| *t - since)
    }
}

impl Drop for Leaders {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

#[tokio::test]
async fn on_a_nats_cluster_losing_a_node_and_an_instance_of_each_service_loses_nothing() {
    // The cluster as deploy/ runs it: TLS, the logins of deploy/nats/auth.conf, no anonymous
    // client; each service logs in as its own user.
    let security = BrokerSecurity::new();
    let mut nats = NatsCluster::start_secured(security.clone()).await;
    let db = TestDb::new().await;
    let stream = TestStream::secured(nats.urls(), 4, security);
    let settings = StreamSettings {
        name: stream.name.clone(),
        subject_prefix: stream.prefix.clone(),
        partitions: stream.partitions,
        replicas: 3,
        max_age: Duration::from_secs(3600),
    };
    nats.create_stream(&settings).await;
    let tenant = TestSystem::bootstrap_tenant(&db.pool, "tenant-a").await;
    let env = env(&db, &stream, 3);
    let command_env = [env.clone(), stream.login_env(Login::Command)].concat();
    let projection_env = [env, stream.login_env(Login::Projection)].concat();
    let mut commands = [
        ServiceProcess::start("command-service", "COMMAND_ADDR", &command_env).await,
        ServiceProcess::start("command-service", "COMMAND_ADDR", &command_env).await,
    ];
    let mut projections = [
        ServiceProcess::start("projection-service", "QUERY_ADDR", &projection_env).await,
        ServiceProcess::start("projection-service", "QUERY_ADDR", &projection_env).await,
    ];
    let mut traffic = Traffic::start(
        commands.iter().map(ServiceProcess::url).collect(),
        tenant,
        3,
    );
    let lag = LagMonitor::start(db.pool.clone());
    until(Duration::from_secs(30), "the partitions shared", || async {
        owned(&projections[0]).await == Some(2) && owned(&projections[1]).await == Some(2)
    })
    .await;
    let steady_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "steady state: worst lag {:.2}s over 3 s; {} commands sent, {} events acknowledged",
        lag.worst(steady_from, Instant::now()),
        traffic.sent(),
        traffic.acknowledged_events().len()
    );
    // Each kill is watched for a window, and the lag must be back under LAGGING_SECS within 5 s.
    // For a service instance that counts from the kill. A broker node's death first costs a Raft
    // election for each group (stream, consumer) the node led, 4 to 9 s each in nats-server and
    // not configurable, during which nothing can be published or delivered; for those the 5 s
    // count from the moment every group has a leader again, and the elections are printed.
    const WINDOW: Duration = Duration::from_secs(20);
    const TARGET: Duration = Duration::from_secs(5);
    const ELECTIONS_LIMIT: Duration = Duration::from_secs(60);
    struct Recovery {
        what: &'static str,
        lag_recovered: Option<Duration>,
        elections: Duration,
    }
    let mut recoveries: Vec<Recovery> = Vec::new();
    let mut observe = |what: &'static str,
                       since: Instant,
                       elections: Duration,
                       lag: &LagMonitor| {
        let recovered = lag.recovered_after(since, Instant::now());
        println!(
            "{what}: lag back under {}s {} after the kill, {} after the elections ({elections:.1?}); worst {:.2}s; per second: {}",
            LAGGING_SECS,
            recovered.map_or("NOT within the window".to_owned(), |d| format!("{d:.1?}")),
            recovered.map_or("-".to_owned(), |d| format!("{:.1?}", d.saturating_sub(elections))),
            lag.worst(since, Instant::now()),
            lag.timeline(since, Instant::now())
        );
        recoveries.push(Recovery {
            what,
            lag_recovered: recovered,
            elections,
        });
    };
    let js = async_nats::jetstream::new(
        platform::nats::connect(&nats.urls(), &nats.admin_auth())
            .await
            .unwrap(),
    );
    let leaders = Leaders::watch(js.clone(), &stream);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Kills `node` and watches the window; returns how long the elections took.
    let kill_node = |nats: &mut NatsCluster, node: usize| {
        let name = format!("nats-{}", node + 1);
        let led = leaders.led_by(&name);
        nats.kill(node);
        (name, led, Instant::now())
    };
    let stream_leader = || async {
        let info = js
            .get_stream(&stream.name)
            .await
            .ok()?
            .get_info()
            .await
            .ok()?;
        info.cluster.and_then(|c| c.leader).map(|l| node_index(&l))
    };
    let all_replicas_current = || async {
        let Ok(Ok(st)) =
            tokio::time::timeout(Duration::from_secs(2), js.get_stream(&stream.name)).await
        else {
            return false;
        };
        let Ok(info) = st.get_info().await else {
            return false;
        };
        info.cluster.is_some_and(|c| {
            c.leader.is_some() && c.replicas.len() == 2 && c.replicas.iter().all(|r| r.current)
        })
    };

    // 1a. A NATS node that follows the stream (it may lead consumers, or the meta group).
    let leader = stream_leader().await.expect("a stream leader");
    let follower = (leader + 1) % 3;
    for (step, node) in [("stream follower", follower), ("stream leader", usize::MAX)] {
        // 1b. The node leading the stream (after the follower's restart).
        let node = if node == usize::MAX {
            stream_leader().await.expect("a stream leader")
        } else {
            node
        };
        let (name, led, killed) = kill_node(&mut nats, node);
        tokio::time::sleep(WINDOW).await;
        let elections = if led.is_empty() {
            Duration::ZERO
        } else {
            // The elections are the broker's (4 to 9 s in nats-server, longer on a loaded
            // machine: a CI run once saw a node that led every group take over 20 s); what is
            // under test is the lag once they are over, so they get longer to finish, and the
            // lag is watched for the target's length after them.
            e2e::wait_until(ELECTIONS_LIMIT.saturating_sub(WINDOW), || async {
                leaders.elected_after(killed, &name).is_some()
            })
            .await;
            let elections = leaders.elected_after(killed, &name).unwrap_or_else(|| {
                panic!("{name}'s groups {led:?} got no new leaders within {ELECTIONS_LIMIT:?}")
            });
            let watched = elections + TARGET + Duration::from_secs(1);
            tokio::time::sleep(watched.saturating_sub(killed.elapsed())).await;
            elections
        };
        println!("NATS node {name} ({step}) killed: it led groups {led:?} (0 = the stream, 1.. = consumers p0..); new leaders after {elections:.1?}");
        observe(
            if step == "stream leader" {
                "NATS node (stream leader) killed"
            } else {
                "NATS node (stream follower) killed"
            },
            killed,
            elections,
            &lag,
        );
        if step == "stream follower" {
            nats.restart(node).await;
            let took = until(
                Duration::from_secs(60),
                "the restarted node current again",
                all_replicas_current,
            )
            .await;
            println!("NATS node restarted: every replica current after {took:.1?}");
        }
    }

    // 2. The command-service instance that relays.
    let relaying = commands
        .iter()
        .position(|c| c.log().contains("outbox relay elected"))
        .expect("one instance relays");
    let other = 1 - relaying;
    assert!(
        !commands[other].log().contains("outbox relay elected"),
        "exactly one instance relays"
    );
    commands[relaying].kill();
    let killed = Instant::now();
    let took = until(
        Duration::from_secs(30),
        "the other instance relays",
        || async { commands[other].log().contains("outbox relay elected") },
    )
    .await;
    println!("command-service relay killed: the other instance relays after {took:.1?}");
    tokio::time::sleep(WINDOW.saturating_sub(killed.elapsed())).await;
    observe(
        "command-service (relay) killed",
        killed,
        Duration::ZERO,
        &lag,
    );

    // 3. A projection-service instance.
    projections[0].kill();
    let killed = Instant::now();
    let took = until(
        Duration::from_secs(30),
        "the survivor owns all 4",
        || async { owned(&projections[1]).await == Some(4) },
    )
    .await;
    println!("projection-service killed: the survivor owns all 4 partitions after {took:.1?}");
    tokio::time::sleep(WINDOW.saturating_sub(killed.elapsed())).await;
    observe("projection-service killed", killed, Duration::ZERO, &lag);

    traffic.stop().await;
    wait_converged(&db.pool, Duration::from_secs(120)).await;
    end_check(&db.pool, &stream, &nats.urls(), &traffic).await;
    for Recovery {
        what,
        lag_recovered,
        elections,
    } in recoveries
    {
        let recovered = lag_recovered
            .unwrap_or_else(|| panic!("{what}: the lag did not recover within {WINDOW:?}"));
        assert!(
            recovered.saturating_sub(elections) <= TARGET,
            "{what}: the lag recovered {recovered:?} after the kill, {elections:?} of it elections (target {TARGET:?} after them)"
        );
    }
}

/// `EVENT_PARTITIONS` 2 → 4 on a live system, by the README's procedure: projections first, then
/// the relay paused, the consumers drained, and the relay resumed with the new count.
#[tokio::test]
async fn raising_event_partitions_on_a_live_system_keeps_per_contact_order() {
    let db = TestDb::new().await;
    let stream = TestStream::new(None, 2);
    let tenant = TestSystem::bootstrap_tenant(&db.pool, "tenant-a").await;
    let env = env(&db, &stream, 1);
    let mut command = ServiceProcess::start("command-service", "COMMAND_ADDR", &env).await;
    let mut projections = [
        ServiceProcess::start("projection-service", "QUERY_ADDR", &env).await,
        ServiceProcess::start("projection-service", "QUERY_ADDR", &env).await,
    ];
    let mut traffic = Traffic::start(vec![command.url()], tenant.clone(), 3);
    // Beside it, a client that keeps tagging the same contacts, so that their histories span the
    // switch (and half of them move partition).
    let updating = Arc::new(AtomicBool::new(true));
    let updater = tokio::spawn({
        let (url, tenant, updating) = (command.url(), tenant.clone(), updating.clone());
        async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .unwrap();
            let base = format!("{url}/v1/projects/{}/contacts", tenant.project_id);
            let mut contacts: Vec<Uuid> = Vec::new();
            while contacts.len() < 16 {
                let name = format!("long-lived-{}", contacts.len());
                let Ok(r) = http
                    .post(&base)
                    .bearer_auth(&tenant.api_key)
                    .json(&json!({ "name": name }))
                    .send()
                    .await
                else {
                    continue;
                };
                let body: Value = r.json().await.unwrap_or(Value::Null);
                if let Some(id) = body["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()) {
                    contacts.push(id);
                }
            }
            let mut i = 0;
            while updating.load(Ordering::SeqCst) {
                let contact = contacts[i % contacts.len()];
                i += 1;
                let _ = http
                    .post(format!("{base}/{contact}/tags"))
                    .bearer_auth(&tenant.api_key)
                    .json(&json!({ "tag": format!("t{i}") }))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 1. Roll projection-service to the new count (it consumes old and new partitions).
    for p in &mut projections {
        p.terminate();
        assert!(p.exited(Duration::from_secs(30)).await.is_some());
        p.set_env("EVENT_PARTITIONS", "4");
        p.restart().await;
    }
    // 2. Roll command-service with the relay off: commands are still accepted.
    command.terminate();
    assert!(command.exited(Duration::from_secs(30)).await.is_some());
    command.set_env("RELAY_ENABLED", "false");
    command.restart().await;
    // 3. Wait until every consumer has applied (and acked) everything published.
    let js = async_nats::jetstream::new(stream.admin_client().await);
    let events = js.get_stream(&stream.name).await.unwrap();
    let took = until(Duration::from_secs(60), "every consumer drained", || {
        e2e::nats::consumers_drained(&events, 4)
    })
    .await;
    let published_before = events.get_info().await.unwrap().state.last_sequence;
    let waiting = e2e::db::rows(&db.pool, e2e::db::OUTBOX_WAITING).await;
    println!("relay paused: drained after {took:.1?}; {published_before} events published with 2 partitions, {waiting} waiting in the outbox");
    // 4. Roll command-service to the new count with the relay on again.
    command.terminate();
    assert!(command.exited(Duration::from_secs(30)).await.is_some());
    command.set_env("EVENT_PARTITIONS", "4");
    command.set_env("RELAY_ENABLED", "true");
    command.restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    traffic.stop().await;
    updating.store(false, Ordering::SeqCst);
    updater.await.unwrap();
    wait_converged(&db.pool, Duration::from_secs(90)).await;
    end_check(&db.pool, &stream, &stream.url, &traffic).await;

    // The stream has a clean cut: every event up to it on its 2-partition subject, every later
    // one on its 4-partition subject; and every event before the cut was applied before the
    // first one after it was published.
    let last = events.get_info().await.unwrap().state.last_sequence;
    assert!(
        last > published_before,
        "events were published after the switch"
    );
    let mut before_cut = Vec::new();
    let mut first_after: Option<i128> = None;
    let mut contacts_across = std::collections::HashSet::new();
    let mut contacts_before = std::collections::HashSet::new();
    for seq in 1..=last {
        let message = events.get_raw_message(seq).await.unwrap();
        let envelope: event_model::EventEnvelope =
            serde_json::from_slice(&message.payload).unwrap();
        let partition: u32 = message.subject.split('.').nth(2).unwrap().parse().unwrap();
        let contact = envelope.contact_id;
        if seq <= published_before {
            assert_eq!(
                partition,
                partition_for(contact, 2),
                "seq {seq}: before the cut"
            );
            before_cut.push(envelope.event_id);
            contacts_before.insert(contact);
        } else {
            assert_eq!(
                partition,
                partition_for(contact, 4),
                "seq {seq}: after the cut"
            );
            first_after.get_or_insert(message.time.unix_timestamp_nanos());
            if contacts_before.contains(&contact) && partition_for(contact, 2) != partition {
                contacts_across.insert(contact);
            }
        }
    }
    let applied_last: f64 = sqlx::query_scalar(
        "select extract(epoch from max(processed_at))::float8 from processed_events where event_id = any($1)",
    )
    .bind(&before_cut)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let first_after = first_after.unwrap() as f64 / 1e9;
    assert!(
        applied_last <= first_after,
        "an event of the old partitioning was applied at {applied_last}, after the first of the new was published at {first_after}"
    );
    println!(
        "{} events before the cut (all applied {:.2}s before the first after it was published); {} after; {} contacts moved partition with events on both sides",
        before_cut.len(),
        first_after - applied_last,
        last - published_before,
        contacts_across.len()
    );
}

/// `QUERY_DATABASE_URL` (a read replica in production; here the same database under another
/// `application_name`, so its connections can be told apart): the queries read there, and a
/// `min_version` read still returns the caller's write.
#[tokio::test]
async fn queries_read_the_query_database_and_min_version_still_reads_your_writes() {
    let db = TestDb::new().await;
    let stream = TestStream::new(None, 2);
    let tenant = TestSystem::bootstrap_tenant(&db.pool, "tenant-a").await;
    let mut env = env(&db, &stream, 1);
    env.push((
        "QUERY_DATABASE_URL",
        format!(
            "{}?application_name=ventros_query_replica",
            e2e::login_url(&db.url, "ventros_app")
        ),
    ));
    let command = ServiceProcess::start("command-service", "COMMAND_ADDR", &env).await;
    let query = ServiceProcess::start("projection-service", "QUERY_ADDR", &env).await;
    e2e::process::contact_round_trip(&command.url(), &query.url(), &tenant).await;
    let on_replica: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_activity where datname = current_database() \
            and application_name = 'ventros_query_replica'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        on_replica > 0,
        "the query ran on the query database's connections"
    );
}
