//! The wire is not the truth: whoever can publish on the events' subjects cannot change a read
//! row. A projection worker applies each message's event as the store holds it; a message the
//! store does not back is counted, parked for an operator, and never applied.

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use e2e::TestSystem;
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn forged_and_mutated_messages_on_the_subject_change_no_row_and_are_counted() {
    let system = TestSystem::start().await;
    let other = TestSystem::bootstrap_tenant(&system.db.pool, "tenant-b").await;
    let contact = system
        .create_contact(json!({"name": "Target", "tags": ["real"]}))
        .await;
    system.wait_until_projected(Duration::from_secs(20)).await;
    let created = system.contact_events(contact).await.remove(0);

    let js = async_nats::jetstream::new(system.stream.admin_client().await);
    let settings = system.stream_settings();
    let publish = |envelope: event_model::EventEnvelope| {
        let js = js.clone();
        let subject = settings.subject(
            envelope.contact_id,
            envelope.aggregate_type.as_str(),
            &envelope.event_type,
        );
        async move {
            let message = PublishMessage::build()
                .payload(serde_json::to_vec(&envelope).unwrap().into())
                .message_id(Uuid::new_v4().to_string());
            js.send_publish(subject, message)
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    // A forgery of the right shape: the contact's next version, another tenant's id.
    let mut forged = created.clone();
    forged.event_id = Uuid::now_v7();
    forged.event_type = "contact.tag_added".into();
    forged.sequence_number = 2;
    forged.position += 1_000;
    forged.tenant_id = other.tenant_id.clone();
    forged.data = json!({"tag": "forged"});
    publish(forged).await;
    // A contact that does not exist, made up whole.
    let mut invented = created.clone();
    invented.event_id = Uuid::now_v7();
    invented.aggregate_id = Uuid::now_v7();
    invented.contact_id = invented.aggregate_id;
    invented.tenant_id = other.tenant_id.clone();
    publish(invented.clone()).await;
    // A mutated copy of the real event: its id, another tenant (and so a forged duplicate).
    let mut mutated = created.clone();
    mutated.tenant_id = other.tenant_id.clone();
    mutated.data["tags"] = json!(["mutated"]);
    publish(mutated).await;

    // The partition flows on: a real command after them is applied.
    let reply = system
        .command(
            Method::POST,
            &format!("/contacts/{contact}/tags"),
            Some(json!({"tag": "after"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let read = system
        .query(&format!("/contacts/{contact}?min_version=2"))
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["tags"], json!(["after", "real"]), "{}", read.body);
    system.wait_until_consumed(Duration::from_secs(20)).await;
    let tenants: Vec<String> = sqlx::query_scalar("select distinct tenant_id from contacts")
        .fetch_all(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(
        tenants,
        vec![system.tenant.tenant_id.as_str()],
        "nobody moved a row"
    );
    assert_eq!(
        system
            .count(&format!(
                "select count(*) from contacts where id = '{}'",
                invented.contact_id
            ))
            .await,
        0,
        "an invented contact has no row"
    );
    let b_sees = system
        .query_as(&other, &format!("/contacts/{contact}"))
        .await;
    assert_eq!(b_sees.status, StatusCode::NOT_FOUND);

    system
        .eventually(
            Duration::from_secs(10),
            "the rejections counted",
            || async {
                system
                    .sample(
                        &system.query_url,
                        "projection_rejected_messages_total",
                        &["not_in_store"],
                    )
                    .await
                    >= 2.0
                    && system
                        .sample(
                            &system.query_url,
                            "projection_rejected_messages_total",
                            &["differs"],
                        )
                        .await
                        >= 1.0
            },
        )
        .await;
    let parked = projection_service::dead_letters::list(&system.db.pool, None)
        .await
        .unwrap();
    assert_eq!(parked.len(), 3, "each rejected message parked: {parked:?}");
    assert!(
        parked.iter().all(|d| d.error.starts_with("rejected")),
        "{parked:?}"
    );
    // A retry applies stored events only: the forgeries stay parked, the mutated copy's event
    // (already applied) is resolved.
    let report = projection_service::dead_letters::retry(&system.db.pool, &system.keys(), None)
        .await
        .unwrap();
    assert_eq!((report.resolved, report.still_failing), (1, 2));
    assert_eq!(
        system.query(&format!("/contacts/{contact}")).await.body["tags"],
        json!(["after", "real"])
    );
    assert!(system.verify().await.is_empty());
}

/// The series of a metric family in a service's `/metrics`.
async fn series(system: &TestSystem, base: &str, family: &str) -> usize {
    system
        .metrics(base)
        .await
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .count()
}

#[tokio::test]
async fn a_thousand_invented_methods_add_a_handful_of_metric_series_at_most() {
    let system = TestSystem::start().await;
    for base in [&system.command_url, &system.query_url] {
        let before = series(&system, base, "http_requests_total").await;
        for chunk in (0..1_000).collect::<Vec<_>>().chunks(50) {
            futures::future::join_all(chunk.iter().map(|i| {
                let method = Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
                system
                    .http
                    .request(
                        method,
                        format!("{base}/v1/projects/{}/contacts", Uuid::nil()),
                    )
                    .send()
            }))
            .await;
        }
        let after = series(&system, base, "http_requests_total").await;
        assert!(
            after <= before + 3,
            "{base}: {before} series before 1,000 invented methods, {after} after"
        );
    }
}

/// The names of every index a plan reads, and whether it sorts.
fn plan_of(plan: &serde_json::Value, indexes: &mut Vec<String>, sorts: &mut bool) {
    if plan["Node Type"] == "Sort" || plan["Node Type"] == "Incremental Sort" {
        *sorts = true;
    }
    if let Some(index) = plan["Index Name"].as_str() {
        indexes.push(index.to_owned());
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        plan_of(child, indexes, sorts);
    }
}

#[tokio::test]
async fn a_page_of_sessions_or_audit_rows_reads_the_tenants_index_and_sorts_nothing() {
    let db = e2e::TestDb::new().await;
    for (sql, index) in [
        (
            "select s.id from sessions s where s.tenant_id = $1 and s.id > $2 and s.deleted_at is null order by s.id limit 51",
            "sessions_tenant_id_id_idx",
        ),
        (
            "select id from domain_event_logs where deleted_at is null and tenant_id = $1 and id > $2 order by id limit 51",
            "domain_event_logs_tenant_id_id_idx",
        ),
    ] {
        let mut tx = db.pool.begin().await.unwrap();
        // As on a table large enough that reading it whole is out of the question.
        sqlx::query("set local enable_seqscan = off")
            .execute(&mut *tx)
            .await
            .unwrap();
        let explained: serde_json::Value =
            sqlx::query_scalar(&format!("explain (format json) {sql}"))
                .bind("tenant-a")
                .bind(Uuid::nil())
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        let (mut indexes, mut sorts) = (Vec::new(), false);
        plan_of(&explained[0]["Plan"], &mut indexes, &mut sorts);
        assert!(
            indexes == [index] && !sorts,
            "{sql}: reads {indexes:?}, sorts: {sorts}\n{explained}"
        );
    }
}

#[tokio::test]
async fn a_request_paths_statement_is_cancelled_at_its_timeout_and_answered_503() {
    let db = e2e::TestDb::new().await;
    let settings = platform::Settings {
        request_statement_timeout_ms: 200,
        ..e2e::settings_for(&db.url)
    };
    let app = settings.app_pool("test").unwrap();
    let started = std::time::Instant::now();
    let error = sqlx::query("select pg_sleep(5)")
        .execute(&app)
        .await
        .expect_err("cancelled");
    assert!(started.elapsed() < Duration::from_secs(4), "{error}");
    let answer = axum::response::IntoResponse::into_response(platform::ApiError::internal(error));
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers().contains_key("retry-after"));
    // The cross-tenant pool (relay, workers, sweeps) has no such limit: a rebuild's merge may run long.
    let system = settings.system_pool("test", 1).unwrap();
    sqlx::query("select pg_sleep(0.3)")
        .execute(&system)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_burst_beyond_a_keys_limit_gets_429_and_the_next_window_works() {
    let system = TestSystem::start_with(e2e::Options {
        rate_limit: (5, 10),
        ..e2e::Options::default()
    })
    .await;
    let other = system.add_member(&system.tenant, "viewer").await;
    let replies = futures::future::join_all((0..30).map(|_| system.query("/contacts"))).await;
    let limited: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(
        limited.len() >= 15,
        "30 at once against a burst of 10: {} limited",
        limited.len()
    );
    let first = limited[0];
    first.assert_problem(429);
    let retry: u64 = first.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // The scheme in another case names the same key, and so the same bucket (authentication
    // accepts it; the limit must too).
    let url = format!(
        "{}/v1/projects/{}/contacts",
        system.query_url, system.tenant.project_id
    );
    let lower_case = futures::future::join_all((0..20).map(|_| {
        system
            .http
            .get(&url)
            .header("authorization", format!("bearer {}", system.tenant.api_key))
            .send()
    }))
    .await;
    let limited = lower_case
        .iter()
        .filter(|r| r.as_ref().unwrap().status() == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(limited >= 10, "20 more with `bearer`: {limited} limited");
    // Another key has its own bucket.
    assert_eq!(
        system.query_as(&other, "/contacts").await.status,
        StatusCode::OK
    );
    // The next window.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(system.query("/contacts").await.status, StatusCode::OK);
    let reply = system
        .command(
            Method::POST,
            "/contacts",
            Some(json!({"name": "After the wait"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

#[tokio::test]
async fn a_flood_of_requests_with_an_unknown_key_costs_one_lookup() {
    let system = TestSystem::start().await;
    // Both services run in this test's process and share its metrics: one scrape sees both.
    let lookups = |result: &'static str| {
        let system = &system;
        async move {
            system
                .sample(&system.query_url, "auth_key_lookups_total", &[result])
                .await
        }
    };
    let before = lookups("result=\"unknown\"").await;
    let made_up = format!("vk_{}", Uuid::new_v4().simple());
    let url = format!(
        "{}/v1/projects/{}/contacts",
        system.query_url, system.tenant.project_id
    );
    for _ in 0..50 {
        let reply = TestSystem::read(
            system
                .http
                .get(&url)
                .bearer_auth(&made_up)
                .send()
                .await
                .unwrap(),
        )
        .await;
        reply.assert_problem(401);
    }
    let after = lookups("result=\"unknown\"").await;
    assert_eq!(after - before, 1.0, "50 requests, one database lookup");
    assert!(lookups("refused_from_cache").await >= 49.0);
    // A real key is not affected.
    assert_eq!(system.query("/contacts").await.status, StatusCode::OK);
}

/// The limits of the HTTP servers in a test: small enough to watch them work.
fn http_limits(limits: platform::HttpLimits) -> e2e::Options {
    e2e::Options {
        http: limits,
        ..e2e::Options::default()
    }
}

/// A plain TCP connection to the service at `base` (`http://host:port`).
async fn connect(base: &str) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// How long until the server closes `stream` (end of stream, or reset), reading nothing from it;
/// `None` if it is still open after `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt as _;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Err(_) => None,
        Ok(Ok(0)) | Ok(Err(_)) => Some(started.elapsed()),
        Ok(Ok(n)) => panic!(
            "the server answered instead of closing: {}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}

/// Sends `GET path` on a kept-alive connection and reads the answer's status line and body;
/// `None` when the server closed the connection without answering.
async fn get_on(stream: &mut tokio::net::TcpStream, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return None;
    }
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a content-length");
            if received.len() >= end + 4 + length {
                let status = text[9..12].parse().unwrap();
                return Some((status, text[end + 4..].to_owned()));
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_connection_that_sends_half_a_header_is_closed_at_the_header_timeout() {
    use tokio::io::AsyncWriteExt as _;
    let system = TestSystem::start_with(http_limits(platform::HttpLimits {
        header_read_timeout_ms: 500,
        ..platform::HttpLimits::default()
    }))
    .await;
    for base in [&system.command_url, &system.query_url] {
        // Half a header, then nothing.
        let mut half = connect(base).await;
        half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        assert_eq!(
            closed_within(&mut half, Duration::from_millis(400)).await,
            None,
            "{base}: closed before the header timeout"
        );
        let closed = closed_within(&mut half, Duration::from_millis(1_600)).await;
        assert!(
            closed.is_some(),
            "{base}: still open 2 s after half a header"
        );

        // A header trickled a byte at a time: each byte does not start the clock again.
        let mut trickle = connect(base).await;
        let started = std::time::Instant::now();
        let mut closed_after = None;
        for byte in b"GET /healthz HTTP/1.1\r\nHost: trickling-slowly.example\r\n".iter() {
            if trickle.write_all(&[*byte]).await.is_err() {
                closed_after = Some(started.elapsed());
                break;
            }
            if closed_within(&mut trickle, Duration::from_millis(100))
                .await
                .is_some()
            {
                closed_after = Some(started.elapsed());
                break;
            }
        }
        let closed_after = closed_after.expect("a trickled header is closed");
        assert!(
            closed_after < Duration::from_millis(1_500),
            "{base}: a trickled header held the connection {closed_after:?}"
        );

        // A whole request is served as before.
        let mut whole = connect(base).await;
        assert_eq!(get_on(&mut whole, "/healthz").await.map(|a| a.0), Some(200));
    }
    assert!(
        system
            .sample(
                &system.query_url,
                "http_connections_closed_total",
                &["header_read_timeout"]
            )
            .await
            >= 4.0
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let system = TestSystem::start_with(http_limits(platform::HttpLimits {
        idle_timeout_ms: 500,
        ..platform::HttpLimits::default()
    }))
    .await;
    for base in [&system.command_url, &system.query_url] {
        // Requests 300 ms apart keep a connection open past the idle timeout.
        let mut busy = connect(base).await;
        for _ in 0..5 {
            assert_eq!(
                get_on(&mut busy, "/healthz").await.map(|a| a.0),
                Some(200),
                "{base}: a connection in use was closed"
            );
            assert_eq!(
                closed_within(&mut busy, Duration::from_millis(300)).await,
                None
            );
        }
        // Then idle: closed at the idle timeout (the header timeout, 10 s, plays no part).
        let closed = closed_within(&mut busy, Duration::from_millis(1_700)).await;
        assert!(closed.is_some(), "{base}: idle for 2 s and still open");
        // A connection that never sends anything is idle too.
        let mut silent = connect(base).await;
        assert_eq!(
            closed_within(&mut silent, Duration::from_millis(400)).await,
            None
        );
        assert!(
            closed_within(&mut silent, Duration::from_millis(1_600))
                .await
                .is_some(),
            "{base}: a silent connection still open after 2 s"
        );
    }
    assert!(
        system
            .sample(
                &system.query_url,
                "http_connections_closed_total",
                &["idle_timeout"]
            )
            .await
            >= 4.0
    );
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_are_shed_with_503_and_retry_after() {
    let system = TestSystem::start_with(http_limits(platform::HttpLimits {
        max_in_flight: 4,
        ..platform::HttpLimits::default()
    }))
    .await;
    let contact = system.create_contact(json!({"name": "Waited for"})).await;
    let read = system
        .query(&format!("/contacts/{contact}?min_version=1"))
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let shed_before = system
        .sample(&system.query_url, "http_shed_requests_total", &[""])
        .await;

    // Four reads waiting (up to 3 s) for a version no command makes: the limit is taken.
    let slow = futures::future::join_all((0..4).map(|_| async {
        system
            .query(&format!("/contacts/{contact}?min_version=2&wait_ms=3000"))
            .await
    }));
    let over_the_limit = async {
        let deadline = std::time::Instant::now() + Duration::from_millis(2_500);
        loop {
            let reply = system.query("/contacts").await;
            if reply.status == StatusCode::SERVICE_UNAVAILABLE {
                let started = std::time::Instant::now();
                let again = system.query("/contacts").await;
                // Shed at once: not queued behind the slow ones.
                assert!(started.elapsed() < Duration::from_millis(500));
                assert_eq!(again.status, StatusCode::SERVICE_UNAVAILABLE);
                // Probes have their own allowance: an orchestrator still sees the service.
                let health = system
                    .http
                    .get(format!("{}/healthz", system.query_url))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(health.status(), StatusCode::OK);
                return reply;
            }
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            assert!(
                std::time::Instant::now() < deadline,
                "four slow reads in flight, yet nothing is shed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (slow, shed) = tokio::join!(slow, over_the_limit);
    shed.assert_problem(503);
    assert_eq!(shed.header("retry-after"), Some("1"));
    for reply in slow {
        reply.assert_problem(404);
    }
    assert!(
        system
            .sample(&system.query_url, "http_shed_requests_total", &[""])
            .await
            >= shed_before + 2.0
    );
    // The slow ones done, requests are served again.
    assert_eq!(system.query("/contacts").await.status, StatusCode::OK);
}

#[tokio::test]
async fn past_the_connection_cap_a_connection_is_closed_unserved_until_one_frees() {
    let system = TestSystem::start_with(http_limits(platform::HttpLimits {
        max_connections: 3,
        ..platform::HttpLimits::default()
    }))
    .await;
    // The metrics are scraped from command-service (the same process, the same registry): the
    // query service's connections are the ones counted.
    let refused = || system.sample(&system.command_url, "http_connections_refused_total", &[""]);
    let before = refused().await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut connection = connect(&system.query_url).await;
        assert_eq!(
            get_on(&mut connection, "/healthz").await.map(|a| a.0),
            Some(200)
        );
        open.push(connection);
    }
    let mut fourth = connect(&system.query_url).await;
    assert_eq!(
        get_on(&mut fourth, "/healthz").await,
        None,
        "served past the cap"
    );
    assert!(refused().await >= before + 1.0);
    // The three still work.
    for connection in &mut open {
        assert_eq!(get_on(connection, "/healthz").await.map(|a| a.0), Some(200));
    }
    // One closes: a new connection is served (once the server has seen it close).
    drop(open.pop());
    system
        .eventually(
            Duration::from_secs(5),
            "a connection served again",
            || async {
                let mut again = connect(&system.query_url).await;
                get_on(&mut again, "/healthz").await.map(|a| a.0) == Some(200)
            },
        )
        .await;
}

#[tokio::test]
async fn waiting_min_version_reads_wake_on_the_projection_and_leave_the_pool_alone() {
    let system = TestSystem::start_with(e2e::Options {
        database_max_connections: 4,
        ..e2e::Options::default()
    })
    .await;
    let contact = system.create_contact(json!({"name": "Awaited"})).await;
    let read = system
        .query(&format!("/contacts/{contact}?min_version=1"))
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let commits = || async {
        sqlx::query_scalar::<_, i64>(
            "select xact_commit from pg_stat_database where datname = current_database()",
        )
        .fetch_one(&system.db.pool)
        .await
        .unwrap()
    };

    // Thirty reads wait for version 2 on a pool of four connections.
    let waiting = futures::future::join_all((0..30).map(|_| async {
        let reply = system
            .query(&format!("/contacts/{contact}?min_version=2&wait_ms=20000"))
            .await;
        (reply, std::time::Instant::now())
    }));
    let meanwhile = async {
        // Let them start waiting.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = commits().await;
        // Other queries are served at once meanwhile.
        for _ in 0..10 {
            let started = std::time::Instant::now();
            assert_eq!(system.query("/contacts").await.status, StatusCode::OK);
            assert!(
                started.elapsed() < Duration::from_millis(300),
                "a list took {:?} while reads waited",
                started.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Waiting reads re-read once a second, not every 50 ms: with the workers' and the
        // relay's, about 200 transactions in these 2 s, where polling made some 1,250.
        let during = commits().await - before;
        assert!(
            during < 300,
            "{during} transactions committed in 2 s of waiting"
        );

        let reply = system
            .command(
                Method::POST,
                &format!("/contacts/{contact}/tags"),
                Some(json!({"tag": "now"})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        // The moment the row has version 2, as the database sees it.
        loop {
            let version: i64 =
                sqlx::query_scalar("select version::bigint from contacts where id = $1")
                    .bind(contact)
                    .fetch_one(&system.db.pool)
                    .await
                    .unwrap();
            if version >= 2 {
                return std::time::Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (answers, projected_at) = tokio::join!(waiting, meanwhile);
    for (reply, at) in answers {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["version"], 2);
        // Woken by the batch's notification, not by the once-a-second re-check.
        let late = at.saturating_duration_since(projected_at);
        assert!(
            late < Duration::from_millis(300),
            "answered {late:?} after the projection"
        );
    }
}
