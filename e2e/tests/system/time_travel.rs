//! Issue 17, time travel: `?as_of_version=` and `?as_of=` on a contact and a session give the
//! read row as it stood then, folded from the store (snapshots included), never from the read
//! tables.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use e2e::{Options, TestSystem};
use proptest::collection::vec;
use proptest::prelude::{any, prop_oneof, Just, Strategy};
use proptest::test_runner::{Config, TestRunner};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

const AGENT: &str = "0190f1f0-0000-7000-8000-0000000000c1";

/// A row as a reader saw it, without the field only time-travel reads carry.
fn row(body: &Value) -> Value {
    let mut row = body.clone();
    row.as_object_mut().unwrap().remove("as_of_version");
    row
}

/// One command of a history: on the contact, or on its current session (most change the
/// contact's own stream).
#[derive(Debug, Clone)]
enum Step {
    Tag(u8),
    Untag(u8),
    Rename,
    Inbound { channel: i64, from_contact: bool },
    Reply,
    Summarize,
    Assign,
}

impl Step {
    /// A step drawn from `rng`, with the weights [`steps`] gives a property test.
    fn random(rng: &mut StdRng) -> Self {
        match rng.random_range(0..10) {
            0..=2 => Self::Tag(rng.random_range(0..60)),
            3 | 4 => Self::Rename,
            5 => Self::Untag(rng.random_range(0..60)),
            6 => Self::Inbound {
                channel: rng.random_range(1..=2),
                from_contact: rng.random_bool(0.5),
            },
            7 => Self::Reply,
            8 => Self::Summarize,
            _ => Self::Assign,
        }
    }

    /// Runs the step; one on the session while there is none goes to the contact instead.
    async fn run(
        &self,
        system: &TestSystem,
        contact: Uuid,
        session: &mut Option<Uuid>,
        turn: usize,
    ) -> e2e::Reply {
        let inbound = || {
            (
                Method::POST,
                format!("/contacts/{contact}/messages"),
                Some(json!({"channel_type_id": 1, "from_contact": true,
                            "text": format!("message {turn}")})),
            )
        };
        let (method, path, body) = match (self, *session) {
            (Self::Tag(t), _) => (
                Method::POST,
                format!("/contacts/{contact}/tags"),
                Some(json!({"tag": format!("t{t}")})),
            ),
            (Self::Untag(t), _) => (
                Method::DELETE,
                format!("/contacts/{contact}/tags/t{t}"),
                None,
            ),
            (Self::Rename, _) => (
                Method::PATCH,
                format!("/contacts/{contact}"),
                Some(json!({"name": format!("Name {turn}"), "timezone": "Europe/Lisbon"})),
            ),
            (
                Self::Inbound {
                    channel,
                    from_contact,
                },
                _,
            ) => (
                Method::POST,
                format!("/contacts/{contact}/messages"),
                Some(
                    json!({"channel_type_id": channel, "from_contact": from_contact,
                            "text": format!("message {turn}")}),
                ),
            ),
            (Self::Reply, Some(s)) => (
                Method::POST,
                format!("/sessions/{s}/messages"),
                Some(json!({"from_contact": false, "agent_id": AGENT,
                            "text": format!("reply {turn}")})),
            ),
            (Self::Summarize, Some(s)) => (
                Method::PUT,
                format!("/sessions/{s}/summary"),
                Some(json!({"summary": format!("summary {turn}"), "sentiment_score": 0.1})),
            ),
            (Self::Assign, Some(s)) => (
                Method::POST,
                format!("/sessions/{s}/agents"),
                Some(json!({"agent_id": Uuid::now_v7()})),
            ),
            (Self::Reply | Self::Summarize | Self::Assign, None) => inbound(),
        };
        let reply = system.command(method, &path, body).await;
        if let Some(s) = reply.body["session_id"].as_str() {
            *session = Some(s.parse().unwrap());
        }
        reply
    }
}

/// `n` steps drawn from the seed.
fn seeded(seed: u64, n: usize) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| Step::random(&mut rng)).collect()
}

/// Runs the steps; after each, once everything is projected, records the contact's row and
/// its current session's row by version. The last row recorded at a version is the row as it
/// stood right before the next version.
async fn live(
    system: &TestSystem,
    contact: Uuid,
    steps: &[Step],
) -> (BTreeMap<i64, Value>, BTreeMap<Uuid, BTreeMap<i64, Value>>) {
    let mut contacts = BTreeMap::new();
    let mut sessions: BTreeMap<Uuid, BTreeMap<i64, Value>> = BTreeMap::new();
    let mut session = None;
    for (turn, step) in steps.iter().enumerate() {
        let reply = step.run(system, contact, &mut session, turn).await;
        assert!(
            reply.status.is_success(),
            "turn {turn} ({step:?}): {} {}",
            reply.status,
            reply.body
        );
        system
            .wait_until_projected(std::time::Duration::from_secs(30))
            .await;
        let read = system.query(&format!("/contacts/{contact}")).await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.body);
        contacts.insert(read.body["version"].as_i64().unwrap(), row(&read.body));
        if let Some(s) = session {
            let read = system.query(&format!("/sessions/{s}")).await;
            assert_eq!(read.status, StatusCode::OK, "{}", read.body);
            let version = read.body["version"].as_i64().unwrap();
            sessions
                .entry(s)
                .or_default()
                .insert(version, row(&read.body));
        }
    }
    (contacts, sessions)
}

async fn as_of(system: &TestSystem, path: &str) -> e2e::Reply {
    system.query(path).await
}

async fn check_every_version(
    system: &TestSystem,
    contact: Uuid,
    contacts: &BTreeMap<i64, Value>,
    sessions: &BTreeMap<Uuid, BTreeMap<i64, Value>>,
) {
    for (version, expected) in contacts {
        let reply = as_of(
            system,
            &format!("/contacts/{contact}?as_of_version={version}"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{version}: {}", reply.body);
        assert_eq!(
            reply.header("etag"),
            Some(format!("\"{version}\"").as_str())
        );
        assert_eq!(reply.body["as_of_version"], *version);
        assert_eq!(
            &row(&reply.body),
            expected,
            "contact as of version {version}"
        );
    }
    for (session, versions) in sessions {
        for (version, expected) in versions {
            let reply = as_of(
                system,
                &format!("/sessions/{session}?as_of_version={version}"),
            )
            .await;
            assert_eq!(reply.status, StatusCode::OK, "{version}: {}", reply.body);
            assert_eq!(reply.body["as_of_version"], *version);
            assert_eq!(
                &row(&reply.body),
                expected,
                "session {session} as of version {version}"
            );
        }
    }
}

/// The contact's own events' times, by version.
async fn times(system: &TestSystem, contact: Uuid) -> BTreeMap<i64, DateTime<Utc>> {
    sqlx::query_as::<_, (i64, chrono::NaiveDateTime)>(
        "select sequence_number, occurred_at from contact_event_store where aggregate_id = $1",
    )
    .bind(contact)
    .fetch_all(&system.db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(version, at)| (version, at.and_utc()))
    .collect()
}

#[tokio::test]
async fn every_version_of_a_contact_with_snapshots_and_of_its_sessions_reads_as_it_stood() {
    let system = TestSystem::start_with(Options {
        snapshot_every: 100,
        ..Options::default()
    })
    .await;
    let contact = system.create_contact(json!({"name": "Tess Travel"})).await;
    let (contacts, sessions) = live(&system, contact, &seeded(17, 850)).await;
    let last = *contacts.keys().last().unwrap();
    assert!(last >= 300, "a long history: {last} versions");
    assert!(
        contacts.len() as i64 >= last - 5,
        "a row recorded at almost every version: {} of {last}",
        contacts.len()
    );
    let snapshots = system
        .count(&format!(
            "select count(*) from contact_snapshots where aggregate_id = '{contact}'"
        ))
        .await;
    assert!(snapshots >= 2, "folded from snapshots: {snapshots}");
    check_every_version(&system, contact, &contacts, &sessions).await;

    // An instant between two of the contact's events reads as the earlier version.
    let times = times(&system, contact).await;
    let mut checked = 0;
    for (version, at) in &times {
        let Some(next) = times.get(&(version + 1)) else {
            continue;
        };
        if next <= at || !contacts.contains_key(version) {
            continue; // two events of one command share their time
        }
        // Just before the next event: every message recorded before it counts, as it does for
        // the version.
        let between = *next - Duration::microseconds(1);
        let reply = as_of(
            &system,
            &format!(
                "/contacts/{contact}?as_of={}",
                between.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["as_of_version"], *version);
        assert_eq!(
            &row(&reply.body),
            &contacts[version],
            "as of {between}, between versions {version} and {}",
            version + 1
        );
        checked += 1;
    }
    assert!(checked > 100, "{checked} instants checked");

    // The history as it stood then: the events up to an instant, and none after it.
    let then = times[&150];
    let stamp = then.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let history = as_of(
        &system,
        &format!("/contacts/{contact}/events?as_of={stamp}&limit=500"),
    )
    .await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    let listed = history.body["items"].as_array().unwrap();
    let expected = system
        .count(&format!(
            "select count(*) from contact_event_store \
              where (aggregate_id = '{contact}' or metadata->>'contact_id' = '{contact}') \
                and occurred_at <= '{}'",
            then.naive_utc()
        ))
        .await;
    assert_eq!(listed.len() as i64, expected);
    assert!(listed
        .iter()
        .any(|e| e["aggregate_id"] == contact.to_string() && e["sequence_number"] == 150));
    assert!(listed
        .iter()
        .all(|e| e["sequence_number"].as_i64().unwrap() <= 150
            || e["aggregate_id"] != contact.to_string()));

    // Before it existed, beyond its last version, or bad: 404 and 400.
    let created = times[&1];
    for path in [
        format!("/contacts/{contact}?as_of_version=0"),
        format!("/contacts/{contact}?as_of_version={}", last + 1),
        format!(
            "/contacts/{contact}?as_of={}",
            (created - Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ),
        format!("/contacts/{}?as_of_version=1", Uuid::now_v7()),
        format!("/sessions/{}?as_of_version=1", Uuid::now_v7()),
    ] {
        as_of(&system, &path).await.assert_problem(404);
    }
    for path in [
        format!("/contacts/{contact}?as_of_version=-1"),
        format!("/contacts/{contact}?as_of=yesterday"),
    ] {
        as_of(&system, &path).await.assert_problem(400);
    }
    for path in [
        format!("/contacts/{contact}?as_of_version=1&as_of=2026-01-01T00:00:00Z"),
        format!(
            "/sessions/{}?as_of_version=1&min_version=1",
            sessions.keys().next().unwrap()
        ),
    ] {
        as_of(&system, &path).await.assert_problem(422);
    }

    // A forgotten contact stays forgotten in the past too.
    let forgot = system
        .command(Method::POST, &format!("/contacts/{contact}/forget"), None)
        .await;
    assert_eq!(forgot.status, StatusCode::OK, "{}", forgot.body);
    as_of(&system, &format!("/contacts/{contact}?as_of_version=1"))
        .await
        .assert_problem(404);
    system.stop().await;
}

/// The property over random command sequences (proptest: on a failure it shrinks the sequence
/// to a smallest one that still fails): with a snapshot every 7 versions, so that reads start
/// from snapshots at every offset, every version recorded reads back as it stood.
#[test]
fn random_histories_read_back_at_every_version_from_any_snapshot() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let system = runtime.block_on(TestSystem::start_with(Options {
        snapshot_every: 7,
        ..Options::default()
    }));
    let mut runner = TestRunner::new(Config {
        cases: 5,
        failure_persistence: None,
        ..Config::default()
    });
    let steps = prop_oneof![
        3 => (0u8..60).prop_map(Step::Tag),
        1 => (0u8..60).prop_map(Step::Untag),
        2 => Just(Step::Rename),
        1 => (1i64..=2, any::<bool>())
            .prop_map(|(channel, from_contact)| Step::Inbound { channel, from_contact }),
        1 => Just(Step::Reply),
        1 => Just(Step::Summarize),
        1 => Just(Step::Assign),
    ];
    let result = runner.run(&vec(steps, 10..70), |steps| {
        runtime.block_on(async {
            let contact = system
                .create_contact(json!({"name": "Prop", "tags": ["start"]}))
                .await;
            let (contacts, sessions) = live(&system, contact, &steps).await;
            check_every_version(&system, contact, &contacts, &sessions).await;
        });
        Ok(())
    });
    runtime.block_on(system.stop());
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
