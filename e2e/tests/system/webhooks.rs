//! Outbound webhooks against a real HTTP receiver: every matching event delivered, signed, in
//! order per contact, through a receiver that fails and then is down; another tenant's
//! subscription hears none of it; a private address is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as HttpStatus};
use axum::routing::post;
use axum::Router;
use e2e::{Options, Tenant, TestSystem};
use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One request the receiver took.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    event_id: String,
    signature: String,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Inbox {
    received: Arc<Mutex<Vec<Received>>>,
    failing: Arc<AtomicBool>,
}

async fn take(
    State(inbox): State<Inbox>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> HttpStatus {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    inbox.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        event_id: header("ventros-event-id"),
        signature: header("ventros-signature"),
        body,
    });
    if inbox.failing.load(Ordering::SeqCst) {
        HttpStatus::INTERNAL_SERVER_ERROR
    } else {
        HttpStatus::NO_CONTENT
    }
}

/// The receiver, listening on `addr` (port 0: a free one) until `stop`.
async fn listen(inbox: Inbox, addr: SocketAddr, stop: CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let bound = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/{*path}", post(take))
        .with_state(inbox);
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap();
    });
    bound
}

/// Checks `Ventros-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
fn verifies(secret: &str, signature: &str, body: &[u8]) -> bool {
    let Some((t, _)) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(','))
    else {
        return false;
    };
    let Ok(t) = t.parse::<i64>() else {
        return false;
    };
    platform::webhooks::signature(secret, t, body) == signature
}

async fn subscribe(
    system: &TestSystem,
    tenant: &Tenant,
    url: &str,
    events: Value,
) -> (Uuid, String) {
    let made = system
        .command_as(
            tenant,
            Method::POST,
            "/webhooks",
            Some(json!({"url": url, "events": events, "description": "test receiver"})),
            &[],
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    (
        made.id("id"),
        made.body["secret"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn every_matching_event_is_delivered_signed_and_in_order_through_failures_and_downtime() {
    let system = TestSystem::start_with(Options {
        webhook_backoff_base: Duration::from_millis(200),
        webhook_max_backoff: Duration::from_secs(3),
        webhook_max_attempts: 30,
        ..Options::default()
    })
    .await;
    let a = system.tenant.clone();
    let b = TestSystem::bootstrap_tenant(&system.db.pool, "tenant-b").await;
    let inbox = Inbox::default();
    let stop = CancellationToken::new();
    let addr = listen(inbox.clone(), "127.0.0.1:0".parse().unwrap(), stop.clone()).await;
    let (a_hook, a_secret) = subscribe(
        &system,
        &a,
        &format!("http://{addr}/a"),
        json!(["contact.*", "session.ended"]),
    )
    .await;
    let (_, b_secret) = subscribe(&system, &b, &format!("http://{addr}/b"), json!(["*"])).await;

    // 2,000 commands of A on 50 contacts (8 at a time), and a few of B.
    let contacts: Vec<Uuid> =
        join_all((0..50).map(|i| system.create_contact(json!({"name": format!("Contact {i}")}))))
            .await;
    let b_contact = system
        .command_as(
            &b,
            Method::POST,
            "/contacts",
            Some(json!({"name": "B"})),
            &[],
        )
        .await
        .id("id");
    let system_ref = &system;
    let commands = async {
        for round in 0..39 {
            for chunk in contacts.chunks(8) {
                join_all(chunk.iter().map(|c| async move {
                    system_ref
                        .command(
                            Method::POST,
                            &format!("/contacts/{c}/tags"),
                            Some(json!({"tag": format!("t{round}")})),
                        )
                        .await
                }))
                .await
                .iter()
                .for_each(|r| assert_eq!(r.status, StatusCode::OK, "{}", r.body));
            }
        }
    };
    // Meanwhile the receiver answers 500 for a while, then is down for 30 s.
    let outage = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        inbox.failing.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.cancel();
        tokio::time::sleep(Duration::from_secs(30)).await;
        inbox.failing.store(false, Ordering::SeqCst);
        listen(inbox.clone(), addr, CancellationToken::new()).await;
    };
    tokio::join!(commands, outage);
    system
        .command_as(
            &b,
            Method::POST,
            &format!("/contacts/{b_contact}/tags"),
            Some(json!({"tag": "b"})),
            &[],
        )
        .await;

    // What A's subscription must get: every contact.* event of A (no session ended here).
    let expected: BTreeSet<String> = sqlx::query_scalar::<_, Uuid>(
        "select id from contact_event_store where tenant_id = $1 and event_type like 'contact.%'",
    )
    .bind(&a.tenant_id)
    .fetch_all(&system.db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|id| id.to_string())
    .collect();
    assert_eq!(expected.len(), 2_000, "50 contacts made, 1,950 tags added");
    system
        .eventually(Duration::from_secs(120), "every delivery delivered", || async {
            let done: i64 = sqlx::query_scalar(
                "select count(*) from webhook_deliveries where subscription_id = $1 and status = 'delivered'",
            )
            .bind(a_hook)
            .fetch_one(&system.db.pool)
            .await
            .unwrap();
            done == 2_000
        })
        .await;

    let received = inbox.received.lock().unwrap().clone();
    let to_a: Vec<&Received> = received.iter().filter(|r| r.path == "/a").collect();
    let ids: BTreeSet<String> = to_a.iter().map(|r| r.event_id.clone()).collect();
    assert_eq!(
        ids, expected,
        "exactly the matching events, at least once each"
    );
    let mut first_seen: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for r in &to_a {
        assert!(
            verifies(&a_secret, &r.signature, &r.body),
            "a signature does not verify"
        );
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["id"], r.event_id, "Ventros-Event-Id is the event's id");
        assert_eq!(body["project_id"], a.project_id.to_string());
        assert!(body["data"].is_object(), "{body}");
        if seen.insert(r.event_id.clone()) {
            first_seen
                .entry(body["aggregate_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(body["version"].as_i64().unwrap());
        }
    }
    for (contact, versions) in &first_seen {
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "{contact}: delivered out of order: {versions:?}"
        );
    }
    let duplicates = to_a.len() - ids.len();
    let failed_answers = to_a.len() - 2_000 - duplicates + duplicates;
    println!(
        "{} requests to A for 2,000 events ({duplicates} repeated, {failed_answers} in all beyond one per event)",
        to_a.len()
    );
    // The attempts are in the delivery log.
    let log = system
        .query(&format!("/webhooks/{a_hook}/deliveries?limit=500"))
        .await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.body);
    let retried = sqlx::query_scalar::<_, i64>(
        "select count(*) from webhook_deliveries where subscription_id = $1 and attempts > 1",
    )
    .bind(a_hook)
    .fetch_one(&system.db.pool)
    .await
    .unwrap();
    assert!(
        retried > 0,
        "the outage made some deliveries take several attempts"
    );
    assert!(
        log.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "delivered"),
        "{}",
        log.body
    );

    // B's subscription heard B's events only, signed with B's secret.
    system
        .eventually(Duration::from_secs(30), "B's events delivered", || async {
            inbox
                .received
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.path == "/b")
                .count()
                >= 2
        })
        .await;
    let received = inbox.received.lock().unwrap().clone();
    for r in received.iter().filter(|r| r.path == "/b") {
        assert!(
            !expected.contains(&r.event_id),
            "B's subscription got an event of A"
        );
        assert!(verifies(&b_secret, &r.signature, &r.body));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["project_id"], b.project_id.to_string());
    }
    system.stop().await;
}

#[tokio::test]
async fn a_subscription_to_a_private_address_is_refused_and_subscriptions_are_managed() {
    let system = TestSystem::start_with(Options {
        webhook_allow_private: false,
        ..Options::default()
    })
    .await;
    let before: i64 = system.rows("webhook_subscriptions").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/x",
        "http://[::1]/x",
        "ftp://example.com/x",
    ] {
        let refused = system
            .command(
                Method::POST,
                "/webhooks",
                Some(json!({"url": url, "events": ["*"]})),
            )
            .await;
        refused.assert_problem(422);
        assert_eq!(
            refused.body["errors"][0]["field"], "url",
            "{url}: {}",
            refused.body
        );
    }
    for events in [json!([]), json!(["contact.creatd"]), json!(["con*"])] {
        system
            .command(
                Method::POST,
                "/webhooks",
                Some(json!({"url": "https://example.com/x", "events": events})),
            )
            .await
            .assert_problem(422);
    }
    assert_eq!(
        system.rows("webhook_subscriptions").await,
        before,
        "nothing made"
    );
    system.stop().await;
}

#[tokio::test]
async fn subscriptions_are_listed_without_secrets_changed_paused_and_deleted() {
    let system = TestSystem::start().await;
    let b = TestSystem::bootstrap_tenant(&system.db.pool, "tenant-b").await;
    let inbox = Inbox::default();
    let addr = listen(
        inbox.clone(),
        "127.0.0.1:0".parse().unwrap(),
        CancellationToken::new(),
    )
    .await;
    let given = "a-secret-of-my-own-1234";
    let made = system
        .command(
            Method::POST,
            "/webhooks",
            Some(json!({"url": format!("http://{addr}/hook"), "events": ["session.*"], "secret": given})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    assert_eq!(made.body["secret"], given);
    assert_eq!(made.header("cache-control"), Some("no-store"));
    let hook = made.id("id");

    let listed = system.query("/webhooks").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    assert!(
        !listed.body.to_string().contains(given),
        "a secret is listed"
    );
    let one = system.query(&format!("/webhooks/{hook}")).await;
    assert_eq!(one.body["events"], json!(["session.*"]));
    assert!(one.body.get("secret").is_none());
    // At rest the secret is sealed with the KEK, not kept as given.
    let stored: String =
        sqlx::query_scalar("select secret from webhook_subscriptions where id = $1")
            .bind(hook)
            .fetch_one(&system.db.pool)
            .await
            .unwrap();
    assert!(
        stored.starts_with("sealed:v1:") && !stored.contains(given),
        "{stored}"
    );
    // A secret that would read as sealed is refused.
    let lookalike = system
        .command(
            Method::POST,
            "/webhooks",
            Some(json!({"url": format!("http://{addr}/hook"), "events": ["*"], "secret": "sealed:v1:abc:def0123456"})),
        )
        .await;
    lookalike.assert_problem(422);
    assert_eq!(
        lookalike.body["errors"][0]["field"], "secret",
        "{}",
        lookalike.body
    );

    // Paused: deliveries wait; changed: it hears contact events.
    let paused = system
        .command(
            Method::PATCH,
            &format!("/webhooks/{hook}"),
            Some(json!({"active": false, "events": ["contact.*"]})),
        )
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.body);
    assert_eq!(paused.body["active"], false);
    let first = system.create_contact(json!({"name": "while paused"})).await;
    system
        .eventually(Duration::from_secs(10), "the delivery taken in", || async {
            system
                .count(&format!(
                    "select count(*) from webhook_deliveries where subscription_id = '{hook}'"
                ))
                .await
                == 1
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        inbox.received.lock().unwrap().len(),
        0,
        "nothing sent while paused"
    );
    let resumed = system
        .command(
            Method::PATCH,
            &format!("/webhooks/{hook}"),
            Some(json!({"active": true})),
        )
        .await;
    assert_eq!(resumed.status, StatusCode::OK);
    let second = system.create_contact(json!({"name": "after"})).await;
    system
        .eventually(
            Duration::from_secs(60),
            "both creations delivered",
            || async { inbox.received.lock().unwrap().len() == 2 },
        )
        .await;
    let bodies: Vec<Value> = inbox
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let heard: BTreeSet<String> = bodies
        .iter()
        .map(|b| b["aggregate_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        heard,
        BTreeSet::from([first.to_string(), second.to_string()])
    );
    let body = bodies
        .iter()
        .find(|b| b["aggregate_id"] == second.to_string())
        .unwrap();
    assert_eq!(body["type"], "contact.created");
    assert_eq!(
        body["data"]["name"], "after",
        "personal fields opened: {body}"
    );
    // An attempt is recorded once its answer is in: the log says delivered a moment after the
    // receiver has the body.
    system
        .eventually(
            Duration::from_secs(10),
            "both deliveries logged as delivered",
            || async {
                let items = system
                    .query(&format!("/webhooks/{hook}/deliveries"))
                    .await
                    .body["items"]
                    .as_array()
                    .unwrap()
                    .clone();
                items.len() == 2 && items.iter().all(|d| d["status"] == "delivered")
            },
        )
        .await;
    let deliveries = system.query(&format!("/webhooks/{hook}/deliveries")).await;
    let items = deliveries.body["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2, "{}", deliveries.body);
    assert!(items.iter().all(|d| d["status"] == "delivered"));

    // Sent again on request.
    let delivery = items[0]["id"].as_str().unwrap();
    let again = system
        .command(
            Method::POST,
            &format!("/webhooks/{hook}/deliveries/{delivery}/retry"),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    system
        .eventually(
            Duration::from_secs(20),
            "the delivery sent again",
            || async { inbox.received.lock().unwrap().len() == 3 },
        )
        .await;
    let thrice = inbox.received.lock().unwrap().clone();
    let again_id = thrice[2].event_id.clone();
    assert_eq!(
        thrice.iter().filter(|r| r.event_id == again_id).count(),
        2,
        "a repeat has the same Ventros-Event-Id"
    );

    // Another tenant sees none of it and can change none of it.
    let b_path = |p: &str| p.to_owned();
    system
        .query_as(&b, &b_path(&format!("/webhooks/{hook}")))
        .await
        .assert_problem(404);
    system
        .command_as(&b, Method::DELETE, &format!("/webhooks/{hook}"), None, &[])
        .await
        .assert_problem(404);
    system
        .command_as(
            &b,
            Method::POST,
            &format!("/webhooks/{hook}/deliveries/{delivery}/retry"),
            None,
            &[],
        )
        .await
        .assert_problem(404);
    let b_list = system.query_as(&b, "/webhooks").await;
    assert_eq!(b_list.body["items"], json!([]));

    // Deleted: gone from the lists, nothing more delivered.
    let deleted = system
        .command(Method::DELETE, &format!("/webhooks/{hook}"), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    system
        .query(&format!("/webhooks/{hook}"))
        .await
        .assert_problem(404);
    system
        .create_contact(json!({"name": "after the end"}))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        inbox.received.lock().unwrap().len(),
        3,
        "nothing after deletion"
    );
    system.stop().await;
}

/// The dispatching process killed with SIGKILL mid-stream and started again: nothing is lost.
#[tokio::test]
async fn a_sigkill_of_the_dispatching_process_mid_stream_loses_nothing() {
    let mut system = e2e::process::ProcessSystem::start(&[
        ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true".to_owned()),
        ("WEBHOOK_BACKOFF_BASE", "200ms".to_owned()),
        ("WEBHOOK_MAX_BACKOFF", "2s".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ])
    .await;
    let inbox = Inbox::default();
    let addr = listen(
        inbox.clone(),
        "127.0.0.1:0".parse().unwrap(),
        CancellationToken::new(),
    )
    .await;
    let http = reqwest::Client::new();
    let tenant = system.tenant.clone();
    let command_url = system.command.url();
    let command = |path: String, body: Value| {
        let request = http
            .post(format!(
                "{command_url}/v1/projects/{}{path}",
                tenant.project_id
            ))
            .bearer_auth(&tenant.api_key)
            .json(&body)
            .send();
        async move {
            let answer = request.await.expect("request");
            assert!(answer.status().is_success(), "{path}: {}", answer.status());
            answer.json::<Value>().await.expect("JSON")
        }
    };
    let made = command(
        "/webhooks".into(),
        json!({"url": format!("http://{addr}/k"), "events": ["contact.*"]}),
    )
    .await;
    let hook = Uuid::parse_str(made["id"].as_str().unwrap()).unwrap();
    let mut contacts = Vec::new();
    for i in 0..20 {
        let created = command("/contacts".into(), json!({"name": format!("K{i}")})).await;
        contacts.push(created["id"].as_str().unwrap().to_owned());
    }
    // Deliveries under way: kill the dispatcher while tags keep coming, then start it again.
    let tags = async {
        for round in 0..10 {
            join_all(contacts.iter().map(|c| {
                command(
                    format!("/contacts/{c}/tags"),
                    json!({"tag": format!("k{round}")}),
                )
            }))
            .await;
        }
    };
    let kill = async {
        e2e::wait_until(Duration::from_secs(30), || async {
            inbox.received.lock().unwrap().len() >= 20
        })
        .await;
        system.query.kill();
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    tokio::join!(tags, kill);
    system.query.restart().await;
    let expected: BTreeSet<String> = sqlx::query_scalar::<_, Uuid>(
        "select id from contact_event_store where event_type like 'contact.%'",
    )
    .fetch_all(&system.db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|id| id.to_string())
    .collect();
    assert_eq!(expected.len(), 220);
    let done = e2e::wait_until(Duration::from_secs(60), || async {
        let ids: BTreeSet<String> = inbox
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.event_id.clone())
            .collect();
        ids == expected
    })
    .await;
    assert!(done, "every event delivered after the kill");
    let recorded = e2e::wait_until(Duration::from_secs(10), || async {
        let delivered: i64 = sqlx::query_scalar(
            "select count(*) from webhook_deliveries where subscription_id = $1 and status = 'delivered'",
        )
        .bind(hook)
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
        delivered == 220
    })
    .await;
    assert!(recorded, "each delivery recorded as delivered, none failed");
}

/// Endpoints that refuse, hang or redirect: their deliveries are retried, and another
/// subscription's go on meanwhile; a redirect is not followed.
#[tokio::test]
async fn a_dead_slow_or_redirecting_endpoint_delays_no_other_subscription() {
    let system = TestSystem::start().await;
    let inbox = Inbox::default();
    let good = listen(
        inbox.clone(),
        "127.0.0.1:0".parse().unwrap(),
        CancellationToken::new(),
    )
    .await;
    // A slow endpoint (past the 2 s attempt timeout) and a redirecting one.
    let odd = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let odd_addr = odd.local_addr().unwrap();
    let redirect_to = format!("http://{good}/followed");
    let app = Router::new()
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                HttpStatus::NO_CONTENT
            }),
        )
        .route(
            "/redirect",
            post(move || {
                let to = redirect_to.clone();
                async move { (HttpStatus::TEMPORARY_REDIRECT, [("location", to)]) }
            }),
        );
    tokio::spawn(async move { axum::serve(odd, app).await.unwrap() });
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let a = system.tenant.clone();
    let (dead, _) = subscribe(&system, &a, &format!("http://{closed}/dead"), json!(["*"])).await;
    let (slow, _) = subscribe(
        &system,
        &a,
        &format!("http://{odd_addr}/slow"),
        json!(["*"]),
    )
    .await;
    let (redirecting, _) = subscribe(
        &system,
        &a,
        &format!("http://{odd_addr}/redirect"),
        json!(["*"]),
    )
    .await;
    subscribe(
        &system,
        &a,
        &format!("http://{good}/good"),
        json!(["contact.created"]),
    )
    .await;
    for i in 0..20 {
        system
            .create_contact(json!({"name": format!("C{i}")}))
            .await;
    }
    system
        .eventually(
            Duration::from_secs(15),
            "the good endpoint has all 20",
            || async {
                inbox
                    .received
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|r| r.path == "/good")
                    .count()
                    >= 20
            },
        )
        .await;
    let pending = |hook: Uuid| {
        let pool = system.db.pool.clone();
        async move {
            sqlx::query_as::<_, (i64, Option<i32>, Option<String>)>(
                "select count(*) filter (where status = 'pending'), max(last_status), max(last_error)
                   from webhook_deliveries where subscription_id = $1",
            )
            .bind(hook)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // Meanwhile the others are still being retried, each for its own reason.
    let (waiting, _, error) = pending(dead).await;
    assert!(
        waiting > 0,
        "the dead endpoint's deliveries wait for a retry"
    );
    assert!(error.is_some_and(|e| !e.is_empty()));
    system
        .eventually(
            Duration::from_secs(10),
            "the slow endpoint's attempt timed out",
            || async {
                let (waiting, _, error) = pending(slow).await;
                waiting > 0 && error.is_some()
            },
        )
        .await;
    let (waiting, status, _) = pending(redirecting).await;
    assert!(waiting > 0);
    assert_eq!(status, Some(307), "a redirect is an answer, not followed");
    assert!(
        !inbox
            .received
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.path == "/followed"),
        "the redirect was followed"
    );
    system.stop().await;
}
