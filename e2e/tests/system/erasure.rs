//! Forgetting a contact (crypto-shredding): after `POST /contacts/{id}/forget` none of its
//! personal data can be read anywhere: not in a dump of the database, not in the broker's
//! messages or its files on disk, not in the services' logs, not after a rebuild. Its history
//! still folds, its metrics stay, and another contact of the tenant is untouched.
//!
//! The services run as processes (their logs are what a operator would collect) on a private
//! nats-server (its store directory is what the broker keeps on disk).

use std::path::Path;
use std::time::Duration;

use e2e::process::ServiceProcess;
use e2e::{NatsServer, Tenant, TestDb, TestStream, TestSystem};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

struct Api {
    http: reqwest::Client,
    command: String,
    query: String,
    tenant: Tenant,
}

impl Api {
    async fn send(
        &self,
        key: &str,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, url).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.command_as(&self.tenant.api_key, method, path, body)
            .await
    }

    async fn command_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!(
            "{}/v1/projects/{}{path}",
            self.command, self.tenant.project_id
        );
        self.send(key, method, url, body).await
    }

    async fn query(&self, path: &str) -> (StatusCode, Value) {
        let url = format!(
            "{}/v1/projects/{}{path}",
            self.query, self.tenant.project_id
        );
        self.send(&self.tenant.api_key, reqwest::Method::GET, url, None)
            .await
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let (status, reply) = self.command(method, path, Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {reply}");
        reply
    }
}

/// A person with strings no other test uses.
struct Person {
    name: String,
    renamed: String,
    email: String,
    phone: String,
    external_id: String,
    summary: String,
    picture: String,
    /// What the person wrote, the photo they sent, and the channel's id of that message.
    said: String,
    photo: String,
    channel_message_id: String,
}

impl Person {
    fn new() -> Self {
        let n = Uuid::new_v4().as_u128();
        let digits = format!("{:012}", n % 1_000_000_000_000);
        Self {
            name: format!("Zelda Quux{}", n % 1_000_000_007),
            renamed: format!("Zelda Renamed{}", n % 1_000_000_009),
            email: format!("zelda.{}@forget.example", n % 1_000_000_021),
            phone: format!("+55{digits}"),
            external_id: format!("crm-{}", n % 1_000_000_033),
            summary: format!("Call Zelda Quux{} back about the refund", n % 1_000_000_007),
            picture: format!("https://cdn.example/zelda-{}.png", n % 1_000_000_087),
            said: format!("My account number is Quux{}", n % 1_000_000_093),
            photo: format!("https://media.example/zelda-id-{}.jpg", n % 1_000_000_097),
            channel_message_id: format!("wamid.Zelda{}", n % 1_000_000_103),
        }
    }

    /// What must be unreadable once forgotten (the summary names the person too).
    fn strings(&self) -> Vec<&str> {
        vec![
            &self.name,
            &self.renamed,
            &self.email,
            &self.phone,
            &self.external_id,
            &self.summary,
            &self.picture,
            &self.said,
            &self.photo,
            &self.channel_message_id,
        ]
    }
}

/// Creates the person, tags them, opens a session with messages, summarizes it, renames them and
/// changes e-mail and phone (so `previous` values exist), sets a picture. Returns (contact,
/// session).
async fn live_a_little(api: &Api, person: &Person, tag: &str) -> (Uuid, Uuid) {
    let created = api
        .ok(
            reqwest::Method::POST,
            "/contacts",
            json!({"name": person.name, "email": "first@forget.example", "phone": "+5511900000000",
                   "external_id": person.external_id, "tags": [tag, "vip"]}),
        )
        .await;
    let contact: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let inbound = api
        .ok(
            reqwest::Method::POST,
            &format!("/contacts/{contact}/messages"),
            json!({"channel_type_id": 1, "from_contact": true, "text": person.said}),
        )
        .await;
    let session: Uuid = inbound["session_id"].as_str().unwrap().parse().unwrap();
    api.ok(
        reqwest::Method::POST,
        &format!("/sessions/{session}/messages"),
        json!({"from_contact": true, "content_type": "image", "media_url": person.photo,
               "media_mimetype": "image/jpeg", "channel_message_id": person.channel_message_id}),
    )
    .await;
    api.ok(
        reqwest::Method::POST,
        &format!("/sessions/{session}/messages"),
        json!({"from_contact": false, "agent_id": Uuid::now_v7()}),
    )
    .await;
    api.ok(
        reqwest::Method::PUT,
        &format!("/sessions/{session}/summary"),
        json!({"summary": person.summary, "sentiment": "positive", "sentiment_score": 0.5,
               "topics": [person.name.clone()], "next_steps": [format!("email {}", person.email)],
               "key_entities": {"person": person.name}}),
    )
    .await;
    api.ok(
        reqwest::Method::PATCH,
        &format!("/contacts/{contact}"),
        json!({"name": person.renamed, "email": person.email, "phone": person.phone}),
    )
    .await;
    api.ok(
        reqwest::Method::PUT,
        &format!("/contacts/{contact}/profile-picture"),
        json!({"url": person.picture}),
    )
    .await;
    (contact, session)
}

/// Both services as processes on this database and stream, and a client of the tenant.
async fn start_services(
    db: &TestDb,
    stream: &TestStream,
    tenant: &Tenant,
    log_level: &str,
) -> (ServiceProcess, ServiceProcess, Api) {
    let env = [
        stream.service_env(&db.url),
        vec![
            ("RELAY_POLL_MS", "100".to_owned()),
            ("RUST_LOG", log_level.to_owned()),
        ],
    ]
    .concat();
    let command = ServiceProcess::start("command-service", "COMMAND_ADDR", &env).await;
    let query = ServiceProcess::start("projection-service", "QUERY_ADDR", &env).await;
    let api = Api {
        http: reqwest::Client::new(),
        command: command.url(),
        query: query.url(),
        tenant: tenant.clone(),
    };
    (command, query, api)
}

async fn pg_dump(url: &str) -> String {
    let output = tokio::process::Command::new("pg_dump")
        .args(["--data-only", "--no-owner", url])
        .output()
        .await
        .expect("pg_dump runs");
    assert!(
        output.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("a UTF-8 dump")
}

/// Every message of the stream, read back with the client, as one text.
async fn stream_text(nats_url: &str, stream: &str) -> String {
    let client = platform::nats::connect(nats_url, &Default::default())
        .await
        .expect("nats");
    let js = async_nats::jetstream::new(client);
    let mut jet = js.get_stream(stream).await.expect("stream");
    let last = jet.info().await.expect("info").state.last_sequence;
    let mut text = String::new();
    for seq in 1..=last {
        if let Ok(message) = jet.get_raw_message(seq).await {
            text.push_str(&String::from_utf8_lossy(&message.payload));
            text.push('\n');
        }
    }
    text
}

/// Every file under `dir`, concatenated (as lossy text: the strings are searched as bytes).
fn files_text(dir: &Path) -> String {
    let mut text = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    text
}

fn assert_none_in(what: &str, text: &str, strings: &[&str]) {
    for s in strings {
        assert!(!text.contains(s), "{what} still holds {s:?}");
    }
}

fn assert_all_in(what: &str, text: &str, strings: &[&str]) {
    for s in strings {
        assert!(
            text.contains(s),
            "{what} should hold {s:?} (the search must see what is there)"
        );
    }
}

async fn wait_projected(pool: &sqlx::PgPool) {
    e2e::traffic::wait_converged(pool, Duration::from_secs(60)).await;
}

async fn replay_tool(db: &TestDb, stream: &TestStream, args: &[&str]) -> (i32, String) {
    let output = tokio::process::Command::new(e2e::process::binary("replay-tool"))
        .args(args)
        .envs(stream.service_env(&db.url))
        .env("RUST_LOG", "debug")
        .output()
        .await
        .expect("replay-tool");
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test]
async fn a_forgotten_contact_is_unreadable_everywhere_and_survives_a_rebuild() {
    let nats = NatsServer::start().await;
    let db = TestDb::new().await;
    let stream = TestStream::new(Some(nats.url()), 2);
    let tenant = TestSystem::bootstrap_tenant(&db.pool, "tenant-a").await;
    // As verbose as an operator would ever turn the logs: still nothing personal.
    let (command, query, api) = start_services(&db, &stream, &tenant, "debug").await;

    let forgotten = Person::new();
    let kept = Person::new();
    let tag = format!("segment-{}", Uuid::new_v4().simple());
    let (contact, session) = live_a_little(&api, &forgotten, &tag).await;
    let (other, _) = live_a_little(&api, &kept, "kept").await;
    wait_projected(&db.pool).await;

    // Before: the read tables hold the plaintext (the search sees it); the store, the outbox and
    // the broker never did: the personal fields were sealed before they left command-service.
    let before = pg_dump(&db.url).await;
    assert_all_in("the dump before the forget", &before, &forgotten.strings());
    let on_the_wire = stream_text(&nats.url(), &stream.name).await;
    assert_all_in("the stream", &on_the_wire, &[&tag]);
    assert_none_in(
        "the stream, even before the forget",
        &on_the_wire,
        &forgotten.strings(),
    );
    let events_before: i64 = sqlx::query_scalar(
        "select count(*) from contact_event_store where aggregate_id = $1 or metadata->>'contact_id' = $1::text",
    )
    .bind(contact)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    // Searched for by its personal data (the read tables serve that); the logs must not keep
    // the query either.
    for filter in [
        format!("email={}", forgotten.email),
        format!("q={}", forgotten.renamed.replace(' ', "%20")),
        format!("phone={}", forgotten.phone.replace('+', "%2B")),
    ] {
        let (status, found) = api.query(&format!("/contacts?{filter}")).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert_eq!(
            found["items"][0]["id"],
            contact.to_string(),
            "{filter}: {found}"
        );
    }
    let (_, session_before) = api.query(&format!("/sessions/{session}")).await;
    assert_eq!(session_before["summary"], forgotten.summary.as_str());

    // Who may forget: owners and admins; others are refused and nothing changes.
    for role in ["agent", "viewer", "supervisor"] {
        let member = TestSystem::bootstrap_member(&db.pool, &tenant, role).await;
        let (status, body) = api
            .command_as(
                &member.api_key,
                reqwest::Method::POST,
                &format!("/contacts/{contact}/forget"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role}: {body}");
    }
    let (status, _) = api
        .command(
            reqwest::Method::POST,
            &format!("/contacts/{}/forget", Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, reply) = api
        .command(
            reqwest::Method::POST,
            &format!("/contacts/{contact}/forget"),
            Some(json!({"reason": "erasure request 118"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["id"], contact.to_string());
    assert_eq!(
        reply["event_ids"].as_array().unwrap().len(),
        4,
        "session ended and closed, contact deleted and forgotten: {reply}"
    );
    let (status, again) = api
        .command(
            reqwest::Method::POST,
            &format!("/contacts/{contact}/forget"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        again["event_ids"],
        json!([]),
        "forgetting twice adds nothing"
    );
    assert_eq!(again["version"], reply["version"]);
    wait_projected(&db.pool).await;

    let (tag, session_before) = (&tag, &session_before);
    let check_everywhere = |when: &'static str| {
        let (db, nats, stream, api, forgotten, kept) =
            (&db, &nats, &stream, &api, &forgotten, &kept);
        async move {
            let dump = pg_dump(&db.url).await;
            assert_none_in(&format!("the dump {when}"), &dump, &forgotten.strings());
            assert_all_in(&format!("the dump {when}"), &dump, &kept.strings());
            assert_none_in(
                &format!("the stream {when}"),
                &stream_text(&nats.url(), &stream.name).await,
                &forgotten.strings(),
            );
            let files = files_text(nats.store_dir());
            assert_all_in("the broker's files", &files, &[tag]);
            assert_none_in(
                &format!("the broker's files {when}"),
                &files,
                &forgotten.strings(),
            );

            let (status, _) = api.query(&format!("/contacts/{contact}")).await;
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "a forgotten contact is not found {when}"
            );
            let (_, listed) = api.query("/contacts?include_deleted=true&limit=500").await;
            let row = listed["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == contact.to_string())
                .unwrap_or_else(|| panic!("listed with include_deleted {when}: {listed}"))
                .clone();
            assert_eq!(row["forgotten"], true, "{row}");
            for field in [
                "name",
                "email",
                "phone",
                "external_id",
                "profile_picture_url",
            ] {
                assert_eq!(row[field], Value::Null, "{field} {when}: {row}");
            }
            assert!(
                row["deleted_at"].is_string() && row["first_interaction_at"].is_string(),
                "{row}"
            );
            let tags: Vec<&str> = row["tags"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(tags.contains(&"vip"), "tags are not personal: {row}");

            let (status, history) = api
                .query(&format!("/contacts/{contact}/events?limit=500"))
                .await;
            assert_eq!(status, StatusCode::OK, "{history}");
            let items = history["items"].as_array().unwrap();
            assert_eq!(
                items.len() as i64,
                events_before + 4,
                "every event still listed {when}"
            );
            let created = items
                .iter()
                .find(|e| e["event_type"] == "contact.created")
                .unwrap();
            assert_eq!(created["redacted"], true, "{created}");
            assert_eq!(created["data"]["name"], Value::Null, "{created}");
            assert_eq!(created["data"]["tags"], json!([tag, "vip"]), "{created}");
            let renamed = items
                .iter()
                .find(|e| e["event_type"] == "contact.name_changed")
                .unwrap();
            assert_eq!(
                (
                    renamed["data"]["name"].clone(),
                    renamed["data"]["previous"].clone()
                ),
                (Value::Null, Value::Null)
            );
            let messages: Vec<&Value> = items
                .iter()
                .filter(|e| e["event_type"] == "session.message_recorded")
                .collect();
            assert_eq!(messages.len(), 3, "{items:?}");
            // What the person wrote and sent is gone; what kind of message it was stays.
            let (said, photo, reply) = (messages[0], messages[1], messages[2]);
            assert_eq!(said["redacted"], true, "{said}");
            assert_eq!(said["data"]["text"], Value::Null, "{said}");
            assert_eq!(photo["redacted"], true, "{photo}");
            assert_eq!(photo["data"]["media_url"], Value::Null, "{photo}");
            assert_eq!(photo["data"]["channel_message_id"], Value::Null, "{photo}");
            assert_eq!(photo["data"]["content_type"], "image", "{photo}");
            assert_eq!(photo["data"]["media_mimetype"], "image/jpeg", "{photo}");
            assert_eq!(
                reply["redacted"], false,
                "the agent's bare reply had nothing personal to redact: {reply}"
            );
            let erased = items.last().unwrap();
            assert_eq!(erased["event_type"], "contact.forgotten");
            assert_eq!(
                erased["data"]["reason"], "erasure request 118",
                "the erasure stays accountable"
            );
            assert_none_in(
                &format!("the history {when}"),
                &history.to_string(),
                &forgotten.strings(),
            );

            let (_, log) = api
                .query(&format!("/event-log?aggregate_id={session}&limit=500"))
                .await;
            let summarized = log["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["event_type"] == "session.summarized")
                .unwrap_or_else(|| panic!("{log}"))
                .clone();
            assert_eq!(summarized["redacted"], true, "{summarized}");
            assert_eq!(summarized["payload"]["summary"], Value::Null);
            assert_eq!(
                summarized["payload"]["sentiment"], "positive",
                "not personal"
            );

            // The history folds: the session keeps every metric it had, without its summary.
            let (_, after) = api.query(&format!("/sessions/{session}")).await;
            for metric in [
                "message_count",
                "messages_from_contact",
                "messages_from_agent",
                "first_contact_message_at",
                "first_agent_response_at",
                "agent_response_time_seconds",
                "agent_ids",
                "sentiment",
                "sentiment_score",
                "started_at",
            ] {
                assert_eq!(after[metric], session_before[metric], "{metric} {when}");
            }
            for personal in ["summary", "topics", "next_steps", "key_entities"] {
                assert_eq!(after[personal], Value::Null, "{personal} {when}: {after}");
            }
            assert_eq!(after["status"], "ended");

            // Another contact of the same tenant: untouched.
            let (status, kept_row) = api.query(&format!("/contacts/{other}")).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(kept_row["name"], kept.renamed.as_str());
            assert_eq!(kept_row["email"], kept.email.as_str());
        }
    };
    check_everywhere("after the forget").await;

    // A rebuild from the history never brings anything back, and verify finds nothing to fix.
    let (code, out) = replay_tool(&db, &stream, &["rebuild"]).await;
    assert_eq!(code, 0, "{out}");
    assert_none_in("replay-tool's output", &out, &forgotten.strings());
    let (code, out) = replay_tool(&db, &stream, &["verify"]).await;
    assert_eq!(code, 0, "verify is clean: {out}");
    check_everywhere("after a rebuild").await;

    let logs = format!("{}\n{}", command.log(), query.log());
    assert!(
        logs.contains(&contact.to_string()),
        "the logs are read (debug level names ids)"
    );
    assert_none_in("the services' logs", &logs, &forgotten.strings());
    assert_none_in("the services' logs", &logs, &kept.strings());
}

/// Turns what the current release wrote into what the previous one wrote: every event, outbox
/// row, audit row and snapshot in the clear (`v1`, each payload `DomainEvent::data()`'s shape),
/// and no data keys. The previous release wrote exactly this shape; only the sealing is new
/// (and the deletion of published outbox rows: it kept them, marked `processed`).
async fn as_the_previous_release_wrote_it(system: &TestSystem) {
    let pool = &system.db.pool;
    let mut conn = pool.acquire().await.unwrap();
    let rows: Vec<(Uuid, Uuid, String, String, String, Value, Value)> = sqlx::query_as(
        "select id, aggregate_id, aggregate_type, event_type, event_version, event_data, metadata from contact_event_store",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let contacts: Vec<Uuid> = rows
        .iter()
        .map(|r| {
            r.6["contact_id"]
                .as_str()
                .map(|c| c.parse().unwrap())
                .unwrap_or(r.1)
        })
        .collect();
    let keys = system.keys().load(&mut conn, &contacts).await.unwrap();
    let events: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    e2e::outbox_as_an_earlier_release_left_it(pool, &events).await;
    for (row, contact) in rows.iter().zip(&contacts) {
        let payload = event_model::Payload::from_stored(&row.3, &row.4, row.5.clone()).unwrap();
        let plain = keys
            .open_payload(row.0, Some(*contact), payload)
            .unwrap()
            .joined()
            .unwrap();
        sqlx::query(
            "with e as (update contact_event_store set event_data = $2, event_version = 'v1' where id = $1) \
             , o as (update outbox_events set event_data = $2, event_version = 'v1' where event_id = $1) \
             update domain_event_logs set payload = $2 where id = $1",
        )
        .bind(row.0)
        .bind(&plain)
        .execute(&mut *conn)
        .await
        .unwrap();
    }
    let snapshots: Vec<(Uuid, Uuid, i64, Value)> = sqlx::query_as(
        "select id, aggregate_id, last_sequence_number, snapshot_data from contact_snapshots",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for (id, aggregate, version, data) in snapshots {
        let sealed = platform::personal::StoredSnapshot::parse(data).unwrap();
        let platform::personal::StoredSnapshot::Sealed { contact_id, .. } = &sealed else {
            continue;
        };
        let key = keys.get(*contact_id).unwrap().clone();
        let plain = sealed.open(&key, aggregate, version).unwrap().unwrap();
        platform::event_store::EventStore::replace_snapshot(&mut *conn, id, plain)
            .await
            .unwrap();
    }
    sqlx::query("delete from contact_data_keys")
        .execute(&mut *conn)
        .await
        .unwrap();
}

/// The tables that keep history (not the read tables, which hold plaintext for queries).
async fn history_dump(url: &str) -> String {
    let output = tokio::process::Command::new("pg_dump")
        .args([
            "--data-only",
            "-t",
            "contact_event_store",
            "-t",
            "outbox_events",
            "-t",
            "domain_event_logs",
            "-t",
            "contact_snapshots",
            "-t",
            "dead_letter_events",
            url,
        ])
        .output()
        .await
        .expect("pg_dump runs");
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn a_store_written_in_the_clear_is_sealed_by_encrypt_history_and_still_forgets() {
    let system = TestSystem::start_with(e2e::Options {
        snapshot_every: 3,
        ..e2e::Options::default()
    })
    .await;
    let (sealed_later, forgotten_first) = (Person::new(), Person::new());
    let mut ids = Vec::new();
    for person in [&sealed_later, &forgotten_first] {
        let id = system
            .create_contact(
                json!({"name": person.name, "email": person.email, "phone": person.phone}),
            )
            .await;
        let session = system.open_session(id).await;
        for body in [
            json!({"name": person.renamed}),
            json!({"external_id": person.external_id}),
            json!({"tags": ["a", "b"]}),
        ] {
            let reply = system
                .command(
                    reqwest::Method::PATCH,
                    &format!("/contacts/{id}"),
                    Some(body),
                )
                .await;
            assert!(reply.status.is_success(), "{}", reply.body);
        }
        let reply = system
            .command(
                reqwest::Method::PUT,
                &format!("/sessions/{session}/summary"),
                Some(json!({"summary": person.summary})),
            )
            .await;
        assert!(reply.status.is_success(), "{}", reply.body);
        ids.push(id);
    }
    system.wait_until_projected(Duration::from_secs(30)).await;
    // The services stop while the store is taken back to the previous release's form (as an
    // upgrade finds it), and start again on it.
    let mut system = system;
    system.stop_command().await;
    system.stop_projection().await;
    as_the_previous_release_wrote_it(&system).await;
    let dump = history_dump(&system.db.url).await;
    assert_all_in(
        "the previous release's history",
        &dump,
        &sealed_later.strings()[..5],
    );
    system.start_command().await;
    system.start_projection().await;

    // The reader takes both forms: commands fold the plain history (and seal what they add).
    let reply = system
        .command(
            reqwest::Method::POST,
            &format!("/contacts/{}/tags", ids[0]),
            Some(json!({"tag": "after-upgrade"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let (_, read) = (
        (),
        system
            .query(&format!(
                "/contacts/{}?min_version={}",
                ids[0], reply.body["version"]
            ))
            .await,
    );
    assert_eq!(
        read.body["name"],
        sealed_later.renamed.as_str(),
        "{}",
        read.body
    );

    // Forgetting a contact whose history is still in the clear drops it there too.
    let forget = system
        .command(
            reqwest::Method::POST,
            &format!("/contacts/{}/forget", ids[1]),
            None,
        )
        .await;
    assert_eq!(forget.status, StatusCode::OK, "{}", forget.body);
    system.wait_until_projected(Duration::from_secs(30)).await;
    let dump = history_dump(&system.db.url).await;
    assert_none_in(
        "the history of a forgotten legacy contact",
        &dump,
        &forgotten_first.strings(),
    );
    assert_all_in(
        "the not yet sealed history",
        &dump,
        &[sealed_later.email.as_str()],
    );

    let tool = |args: &'static [&'static str]| {
        let system = &system;
        async move {
            let output = tokio::process::Command::new(e2e::process::binary("replay-tool"))
                .args(args)
                .envs(system.stream.service_env(&system.db.url))
                .output()
                .await
                .expect("replay-tool");
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            assert_eq!(
                output.status.code(),
                Some(0),
                "{stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            serde_json::from_str::<Value>(stdout.trim()).unwrap()
        }
    };
    let plain = || system.rows("contact_event_store where event_version = 'v1'");
    let before = plain().await;
    assert!(before > 10, "{before} events in the clear");
    // The forgotten contact's events with nothing personal in them are still `v1`: they are
    // rewritten as its others were (redacted), the rest sealed.
    let rewritten = |report: &Value| {
        report["events_sealed"].as_i64().unwrap() + report["events_redacted"].as_i64().unwrap()
    };
    let dry = tool(&["encrypt-history", "--dry-run", "--json"]).await;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(rewritten(&dry), before, "{dry}");
    assert_eq!(plain().await, before, "a dry run writes nothing");
    let done = tool(&["encrypt-history", "--json", "--batch-size", "4"]).await;
    assert_eq!(rewritten(&done), before, "{done}");
    assert_eq!(done["events_sealed"], dry["events_sealed"], "{done}");
    assert!(
        done["outbox_rows"].as_i64() == Some(before) && done["log_rows"].as_i64() == Some(before),
        "{done}"
    );
    assert!(done["snapshots_sealed"].as_i64().unwrap() >= 1, "{done}");
    assert_eq!(
        done["keys_created"], 1,
        "the contact of the previous release got its key: {done}"
    );
    assert_eq!(plain().await, 0);
    let again = tool(&["encrypt-history", "--json"]).await;
    assert_eq!(rewritten(&again), 0, "idempotent: {again}");

    let dump = history_dump(&system.db.url).await;
    assert_none_in("the sealed history", &dump, &sealed_later.strings());
    assert!(
        system.verify().await.is_empty(),
        "the read tables still equal a rebuild"
    );
    let history = system.query(&format!("/contacts/{}/events", ids[0])).await;
    let created = &history.body["items"][0];
    assert_eq!(
        (
            created["data"]["name"].as_str(),
            created["redacted"].as_bool()
        ),
        (Some(sealed_later.name.as_str()), Some(false)),
        "{created}"
    );
    // The sealed history still forgets.
    let forget = system
        .command(
            reqwest::Method::POST,
            &format!("/contacts/{}/forget", ids[0]),
            None,
        )
        .await;
    assert_eq!(forget.status, StatusCode::OK);
    system.wait_until_projected(Duration::from_secs(30)).await;
    assert_none_in(
        "the whole dump",
        &pg_dump(&system.db.url).await,
        &sealed_later.strings(),
    );
    assert!(system.verify().await.is_empty());
}

/// `replay-tool` with these KEKs: its exit code, stdout and stderr.
fn tool_with_keks(
    system: &TestSystem,
    kek: &str,
    previous: &str,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(e2e::process::binary("replay-tool"))
        .args(args)
        .envs(system.stream.service_env(&system.db.url))
        .env("DATA_KEK", kek)
        .env("DATA_KEK_PREVIOUS", previous)
        .output()
        .expect("replay-tool");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_kek_rotation_rewraps_every_key_and_the_old_kek_is_needed_no_more() {
    let mut system = TestSystem::start().await;
    let person = Person::new();
    let id = system
        .create_contact(json!({"name": person.name, "email": person.email}))
        .await;
    for _ in 0..3 {
        system.create_contact(json!({"name": "Someone"})).await;
    }
    system.wait_until_projected(Duration::from_secs(30)).await;
    // A webhook's signing secret is sealed with the KEK too.
    let hook = system
        .command(
            reqwest::Method::POST,
            "/webhooks",
            Some(json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]})),
        )
        .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{}", hook.body);
    let hook_id = Uuid::parse_str(hook.body["id"].as_str().unwrap()).unwrap();
    let hook_secret = hook.body["secret"].as_str().unwrap().to_owned();
    let stored_secret = || {
        let pool = system.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "select secret from webhook_subscriptions where id = $1",
            )
            .bind(hook_id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let old = system.stream.kek.clone();
    let old_id = platform::crypto::Kek::from_base64(&old)
        .unwrap()
        .id()
        .to_owned();
    let sealed = stored_secret().await;
    assert!(
        sealed.starts_with(&format!("sealed:v1:{old_id}:")) && !sealed.contains(&hook_secret),
        "{sealed}"
    );
    let new = platform::crypto::Kek::generate_base64().to_string();
    let new_id = platform::crypto::Kek::from_base64(&new)
        .unwrap()
        .id()
        .to_owned();

    let (code, out, err) = tool_with_keks(
        &system,
        &new,
        &old,
        &["kek", "rotate", "--json", "--batch-size", "2"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["rewrapped"], 4, "{report}");
    assert_eq!(report["kek"], new_id.as_str());
    assert_eq!(report["keys"], json!([[new_id, 4]]), "{report}");
    assert_eq!(report["webhook_secrets"], 1, "{report}");
    let resealed = stored_secret().await;
    assert!(
        resealed.starts_with(&format!("sealed:v1:{new_id}:")),
        "{resealed}"
    );
    let new_only = platform::crypto::Keyring::new(
        Some(platform::crypto::Kek::from_base64(&new).unwrap()),
        Vec::new(),
    );
    assert_eq!(
        platform::webhooks::open_secret(&new_only, hook_id, &resealed)
            .unwrap()
            .as_str(),
        hook_secret,
        "the new KEK alone opens the secret"
    );
    let (_, out, _) = tool_with_keks(&system, &new, "", &["kek", "status", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(out.trim()).unwrap()["keys"],
        json!([[new_id, 4]])
    );
    assert!(
        !err.contains(&old) && !out.contains(&new),
        "no KEK is ever printed"
    );

    // With the old KEK alone nothing opens any more; with the new one alone everything does.
    let (code, _, err) = tool_with_keks(&system, &old, "", &["verify"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("KEK"), "{err}");
    system.stop_command().await;
    system.stop_projection().await;
    system.stream.kek = new.clone();
    system.start_command().await;
    system.start_projection().await;
    let reply = system
        .command(
            reqwest::Method::PATCH,
            &format!("/contacts/{id}"),
            Some(json!({"name": person.renamed})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let history = system.query(&format!("/contacts/{id}/events")).await;
    assert_eq!(
        history.body["items"][1]["data"]["previous"],
        person.name.as_str()
    );
    system.wait_until_projected(Duration::from_secs(30)).await;
    assert!(system.verify().await.is_empty());
    let (code, out, err) = tool_with_keks(&system, &new, "", &["verify"]);
    assert_eq!(code, Some(0), "{out}{err}");
}

#[tokio::test]
async fn forgetting_under_load_with_a_crash_right_after_loses_nothing_and_leaves_nothing_readable()
{
    let db = TestDb::new().await;
    let stream = TestStream::new(None, 2);
    let tenant = TestSystem::bootstrap_tenant(&db.pool, "tenant-a").await;
    let (mut command, _query, api) = start_services(&db, &stream, &tenant, "info").await;
    let person = Person::new();
    let (contact, _) = live_a_little(&api, &person, "under-load").await;
    let mut traffic = e2e::traffic::Traffic::start(vec![command.url()], tenant.clone(), 4);
    tokio::time::sleep(Duration::from_millis(800)).await;

    let (status, reply) = api
        .command(
            reqwest::Method::POST,
            &format!("/contacts/{contact}/forget"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    // Killed just after the answer: the relay may not have published the erasure yet.
    command.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    command.restart().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    traffic.stop().await;

    e2e::traffic::wait_converged(&db.pool, Duration::from_secs(90)).await;
    let counts = e2e::traffic::assert_end_state(&db.pool, &stream.keys(), &traffic).await;
    println!("forget under load: {counts}");
    let stored: Vec<Uuid> = reply["event_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().parse().unwrap())
        .collect();
    let found: i64 =
        sqlx::query_scalar("select count(*) from contact_event_store where id = any($1)")
            .bind(&stored)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        found,
        stored.len() as i64,
        "the acknowledged erasure is stored"
    );
    assert_none_in("the dump", &pg_dump(&db.url).await, &person.strings());
    assert_none_in(
        "the stream",
        &stream_text(&stream.url, &stream.name).await,
        &person.strings(),
    );
    let (status, _) = api.query(&format!("/contacts/{contact}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
