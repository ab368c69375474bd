//! The live change feed: the history from a position, then live, resumable with no gap and no
//! duplicate, filtered, and only the caller's tenant.

use std::time::Duration;

use e2e::{Tenant, TestSystem};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
struct Sent {
    id: String,
    event: String,
    data: Value,
}

/// An open feed, read as a client reads it.
struct Feed {
    response: reqwest::Response,
    buffer: String,
}

impl Feed {
    async fn open(system: &TestSystem, tenant: &Tenant, query: &str, last: Option<&str>) -> Self {
        let mut request = system
            .http
            .get(format!(
                "{}/v1/projects/{}/changes{query}",
                system.query_url, tenant.project_id
            ))
            .bearer_auth(&tenant.api_key);
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (comments skipped), or none within `within`.
    async fn next(&mut self, within: Duration) -> Option<Sent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let Some(event) = event {
                    return Some(Sent {
                        id: id.unwrap_or_default(),
                        event,
                        data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
                    });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .unwrap()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    async fn take(&mut self, n: usize) -> Vec<Sent> {
        let mut got = Vec::new();
        while got.len() < n {
            match self.next(Duration::from_secs(10)).await {
                Some(sent) => got.push(sent),
                None => panic!("only {} of {n} events: {got:?}", got.len()),
            }
        }
        got
    }
}

#[tokio::test]
async fn the_feed_replays_then_goes_live_and_resumes_without_gap_or_duplicate() {
    let system = TestSystem::start().await;
    let a = system.tenant.clone();
    let b = TestSystem::bootstrap_tenant(&system.db.pool, "tenant-b").await;
    system
        .command_as(
            &b,
            Method::POST,
            "/contacts",
            Some(json!({"name": "B's"})),
            &[],
        )
        .await;
    for name in ["Ada", "Grace", "Edsger"] {
        let contact = system.create_contact(json!({"name": name})).await;
        for tag in ["x", "y"] {
            let tagged = system
                .command(
                    Method::POST,
                    &format!("/contacts/{contact}/tags"),
                    Some(json!({"tag": tag})),
                )
                .await;
            assert_eq!(tagged.status, StatusCode::OK);
        }
    }
    // The history from the start: A's nine events, in store order, B's none.
    let mut feed = Feed::open(&system, &a, "?after=0", None).await;
    let history = feed.take(9).await;
    let types: Vec<&str> = history.iter().map(|s| s.event.as_str()).collect();
    assert_eq!(
        types.iter().filter(|t| **t == "contact.created").count(),
        3,
        "{types:?}"
    );
    for sent in &history {
        assert_eq!(sent.data["project_id"], a.project_id.to_string());
        assert_eq!(sent.data["type"], sent.event);
        assert!(sent.id.parse::<i64>().unwrap() > 0);
    }
    let names: Vec<&str> = history
        .iter()
        .filter(|s| s.event == "contact.created")
        .map(|s| s.data["data"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Ada", "Grace", "Edsger"],
        "personal fields opened, in order"
    );

    // Then live.
    let live = system.create_contact(json!({"name": "Barbara"})).await;
    let next = feed
        .next(Duration::from_secs(10))
        .await
        .expect("the live event");
    assert_eq!(next.data["aggregate_id"], live.to_string());
    drop(feed);

    // Resumed after the fourth: the rest, none twice, none missing.
    let mut resumed = Feed::open(&system, &a, "", Some(&history[3].id)).await;
    let rest = resumed.take(6).await;
    let expected: Vec<String> = history[4..]
        .iter()
        .chain(std::iter::once(&next))
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(
        rest.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(
        resumed.next(Duration::from_millis(700)).await.is_none(),
        "nothing more"
    );
    drop(resumed);

    // Filtered.
    let mut tags = Feed::open(&system, &a, "?after=0&event_type=contact.tag_*", None).await;
    let tagged = tags.take(6).await;
    assert!(tagged.iter().all(|s| s.event == "contact.tag_added"));
    assert!(tags.next(Duration::from_millis(700)).await.is_none());
    let one = history[0].data["aggregate_id"].as_str().unwrap().to_owned();
    let mut of_one = Feed::open(&system, &a, &format!("?after=0&aggregate_id={one}"), None).await;
    assert_eq!(of_one.take(3).await.len(), 3);
    assert!(of_one.next(Duration::from_millis(700)).await.is_none());

    // Without a position: from now on.
    let mut now = Feed::open(&system, &a, "", None).await;
    assert!(now.next(Duration::from_millis(700)).await.is_none());
    let newest = system.create_contact(json!({"name": "Frances"})).await;
    let sent = now
        .next(Duration::from_secs(10))
        .await
        .expect("the new event");
    assert_eq!(sent.data["aggregate_id"], newest.to_string());

    // Another tenant's position, or none at all, is refused.
    let b_position: i64 =
        sqlx::query_scalar("select position from contact_event_store where tenant_id = $1 limit 1")
            .bind(&b.tenant_id)
            .fetch_one(&system.db.pool)
            .await
            .unwrap();
    system
        .query(&format!("/changes?after={b_position}"))
        .await
        .assert_problem(404);
    let bad = system
        .send(
            Method::GET,
            &format!("{}/v1/projects/{}/changes", system.query_url, a.project_id),
            Some(&a.api_key),
            None,
            &[("last-event-id", "yesterday")],
        )
        .await;
    bad.assert_problem(400);
    system.stop().await;
}

#[tokio::test]
async fn a_client_that_falls_behind_is_cut_off_with_a_final_event() {
    let system = TestSystem::start().await;
    let a = system.tenant.clone();
    let contact = system.create_contact(json!({"name": "Many tags"})).await;
    // 20,000 events at once, straight into the store: more than the feed's buffer and the
    // sockets between it and a client that does not read.
    sqlx::query(
        "insert into contact_event_store
                (aggregate_id, aggregate_type, event_type, event_version, sequence_number,
                 event_data, metadata, occurred_at, tenant_id, project_id)
         select $1, 'contact', 'contact.tag_added', 'v2', 1 + n,
                jsonb_build_object('tag', 'tag-' || n, 'padding', repeat('x', 200)),
                jsonb_build_object('contact_id', $1::text, 'user_id', null),
                now() at time zone 'utc', $2, $3
           from generate_series(1, 20000) as n",
    )
    .bind(contact)
    .bind(&a.tenant_id)
    .bind(a.project_id)
    .execute(&system.db.pool)
    .await
    .unwrap();
    let mut feed = Feed::open(&system, &a, "?after=0", None).await;
    // The client does not read for a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut read = 0;
    let last = loop {
        match feed.next(Duration::from_secs(10)).await {
            Some(sent) if sent.event == "cut-off" => break sent,
            Some(_) => read += 1,
            None => panic!("the feed neither ended with cut-off nor went on ({read} read)"),
        }
    };
    assert!(read < 20_001, "cut off before the end ({read} read)");
    assert!(last.id.is_empty());
    assert!(
        feed.next(Duration::from_secs(2)).await.is_none(),
        "nothing after the cut-off"
    );
    system.stop().await;
}

/// The feed waits for this database's transactions that are still running (one may yet add
/// events below the ones already committed), and for no other database's: a long transaction of
/// another application on the same server holds nothing back.
#[tokio::test]
async fn only_a_transaction_of_this_database_holds_the_feed_back() {
    let system = TestSystem::start().await;
    let a = system.tenant.clone();
    let elsewhere_db = e2e::TestDb::new().await;
    // Each holds a transaction id until it ends, as a write does.
    let mut elsewhere = elsewhere_db.pool.begin().await.unwrap();
    sqlx::query("select txid_current()")
        .execute(&mut *elsewhere)
        .await
        .unwrap();
    let mut here = system.db.pool.begin().await.unwrap();
    sqlx::query("select txid_current()")
        .execute(&mut *here)
        .await
        .unwrap();

    let mut feed = Feed::open(&system, &a, "", None).await;
    let held = system.create_contact(json!({"name": "Held"})).await;
    assert!(
        feed.next(Duration::from_millis(1500)).await.is_none(),
        "an event committed after a transaction of this database that is still running waits for it"
    );
    here.commit().await.unwrap();
    let sent = feed
        .next(Duration::from_secs(10))
        .await
        .expect("the held event, once the transaction ended");
    assert_eq!(sent.data["aggregate_id"], held.to_string());

    // The other database's transaction is still open.
    let free = system.create_contact(json!({"name": "Free"})).await;
    let sent = feed
        .next(Duration::from_secs(5))
        .await
        .expect("an event while another database's transaction runs");
    assert_eq!(sent.data["aggregate_id"], free.to_string());
    elsewhere.rollback().await.unwrap();
}
