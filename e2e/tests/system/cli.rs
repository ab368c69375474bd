//! The operator CLI (`replay-tool`), run as a process against a running system: its output, its
//! `--json`, its exit codes.

use std::process::Command;
use std::time::Duration;

use e2e::{Options, TestSystem};
use reqwest::Method;
use serde_json::{json, Value};

pub(crate) fn replay_tool(system: &TestSystem, args: &[&str]) -> (i32, Value, String) {
    replay_tool_with(system, args, &[])
}

/// [`replay_tool`] with more environment variables.
pub(crate) fn replay_tool_with(
    system: &TestSystem,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, Value, String) {
    let output = Command::new(e2e::process::binary("replay-tool"))
        .args(args)
        .envs(env.iter().copied())
        .env("DATABASE_URL", &system.db.url)
        .env("NATS_URL", &system.stream.url)
        .env("NATS_STREAM", &system.stream.name)
        .env("NATS_SUBJECT_PREFIX", &system.stream.prefix)
        .env("EVENT_PARTITIONS", system.options.partitions.to_string())
        .env("DATA_KEK", &system.stream.kek)
        .output()
        .expect("replay-tool");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (
        output.status.code().unwrap_or(-1),
        json,
        format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)),
    )
}

#[tokio::test]
async fn status_verify_rebuild_and_dead_letters_from_the_command_line() {
    let system = TestSystem::start_with(Options {
        partitions: 2,
        ..Options::default()
    })
    .await;
    let contact = system
        .create_contact(json!({"name": "Operated", "tags": ["x"]}))
        .await;
    system
        .command(
            Method::POST,
            &format!("/contacts/{contact}/messages"),
            Some(json!({"channel_type_id": 1, "from_contact": true})),
        )
        .await;
    system.wait_until_projected(Duration::from_secs(20)).await;
    system.wait_until_consumed(Duration::from_secs(20)).await;
    let events = system.rows("contact_event_store").await;

    let (code, status, out) = replay_tool(&system, &["status", "--json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(status["events_in_store"], events);
    assert_eq!(status["outbox_pending"], 0);
    assert_eq!(status["consumers"].as_array().map(Vec::len), Some(2));
    let acked: u64 = status["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["acked_through"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(acked, events as u64, "every message acknowledged: {status}");
    for p in status["projections"].as_array().unwrap() {
        assert_eq!(
            (p["processed"].as_i64(), p["behind"].as_i64()),
            (Some(events), Some(0)),
            "{p}"
        );
    }
    let (code, _, text) = replay_tool(&system, &["status"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("projections-p0") && text.contains("domain_event_logs"),
        "{text}"
    );

    let (code, diffs, out) = replay_tool(&system, &["verify", "--json"]);
    assert_eq!((code, diffs), (0, json!([])), "{out}");
    sqlx::query("update contacts set name = 'tampered'")
        .execute(&system.db.pool)
        .await
        .unwrap();
    let (code, diffs, out) = replay_tool(&system, &["verify", "--json"]);
    assert_eq!(code, 1, "a difference exits 1: {out}");
    assert_eq!(diffs[0]["table"], "contacts");
    let (code, report, out) =
        replay_tool(&system, &["rebuild", "--projection", "contacts", "--json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(report["events"], events);
    let (code, _, _) = replay_tool(&system, &["verify"]);
    assert_eq!(code, 0, "the rebuild repaired it");

    let (code, parked, _) = replay_tool(&system, &["dead-letters", "list", "--json"]);
    assert_eq!((code, parked), (0, json!([])));
    let (code, report, _) = replay_tool(&system, &["dead-letters", "retry", "--json"]);
    assert_eq!(
        (code, report),
        (0, json!({"resolved": 0, "still_failing": 0}))
    );

    let (code, _, out) = replay_tool(&system, &["rebuild", "--projection", "nonsense"]);
    assert_eq!(code, 2, "bad usage exits 2: {out}");
    let output = Command::new(e2e::process::binary("replay-tool"))
        .args(["verify"])
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(3),
        "an unreachable database exits 3"
    );
    system.stop().await;
}
