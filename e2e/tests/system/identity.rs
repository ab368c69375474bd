//! Identity: every route checked against the permission table for every role, API keys made,
//! listed, used, revoked and expired through the API, and members added, changed and removed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::{Reply, Tenant, TestSystem};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

const ROLES: [&str; 5] = ["viewer", "agent", "supervisor", "admin", "owner"];

/// The least role each operation needs, as the identity issue states it (viewer reads; agent
/// records messages, starts and ends sessions, sets summaries, tags, creates and edits
/// contacts; supervisor assigns agents and sets outcomes; admin deletes and forgets contacts and
/// manages keys and members). Written out here, apart from the services' own table, so that the
/// two are checked against each other; an operation missing here fails the test.
fn least_role(operation: &str) -> Option<&'static str> {
    Some(match operation {
        "list_contacts"
        | "get_contact"
        | "list_contact_sessions"
        | "list_contact_events"
        | "list_contact_messages"
        | "list_sessions"
        | "get_session"
        | "list_session_messages"
        | "search_messages"
        | "list_event_log"
        | "stream_changes"
        | "get_pipeline"
        | "list_parked_events"
        | "get_caller" => "viewer",
        "create_contact"
        | "update_contact"
        | "add_contact_tag"
        | "remove_contact_tag"
        | "set_contact_profile_picture"
        | "record_contact_message"
        | "start_contact_session"
        | "record_session_message"
        | "summarize_session"
        | "end_session" => "agent",
        "assign_session_agent" | "set_session_outcome" => "supervisor",
        "delete_contact"
        | "forget_contact"
        | "create_api_key"
        | "revoke_api_key"
        | "list_api_keys"
        | "set_member"
        | "remove_member"
        | "list_members"
        | "create_webhook"
        | "update_webhook"
        | "delete_webhook"
        | "retry_webhook_delivery"
        | "list_webhooks"
        | "get_webhook"
        | "list_webhook_deliveries"
        | "retry_parked_event" => "admin",
        _ => return None,
    })
}

fn rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).expect("a role")
}

/// An operation of a service's OpenAPI document under `/v1/projects/{project_id}`.
#[derive(Debug, Clone)]
struct Operation {
    service: &'static str,
    method: Method,
    /// Relative to `/v1/projects/{project_id}`.
    path: String,
    id: String,
    permission: Option<String>,
    roles: Vec<String>,
}

async fn operations(system: &TestSystem) -> Vec<Operation> {
    let mut found = Vec::new();
    for (service, base) in [
        ("command", &system.command_url),
        ("query", &system.query_url),
    ] {
        let doc: Value = system
            .http
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            let Some(relative) = path.strip_prefix("/v1/projects/{project_id}") else {
                continue;
            };
            for (method, op) in item.as_object().unwrap() {
                let Ok(method) = method.to_uppercase().parse::<Method>() else {
                    continue;
                };
                found.push(Operation {
                    service,
                    method,
                    path: relative.to_owned(),
                    id: op["operationId"].as_str().unwrap().to_owned(),
                    permission: op["x-permission"].as_str().map(str::to_owned),
                    roles: op["x-roles"]
                        .as_array()
                        .map(|a| a.iter().map(|r| r.as_str().unwrap().to_owned()).collect())
                        .unwrap_or_default(),
                });
            }
        }
    }
    found
}

/// What the database holds that a request could change: events, keys (not their use),
/// members and webhook subscriptions (not their delivery counts).
async fn written(system: &TestSystem) -> String {
    sqlx::query_scalar(
        "select concat_ws(' | ',
            (select count(*) from contact_event_store)::text,
            (select string_agg(id::text || ':' || coalesce(deleted_at::text, '-'), ',' order by id)
               from user_api_keys),
            (select string_agg(agent_id || ':' || role || ':' || coalesce(deleted_at::text, '-'), ','
                               order by project_id, agent_id)
               from project_members),
            (select string_agg(concat_ws(':', id, url, active, events::text, deleted_at, version),
                               ',' order by id)
               from webhook_subscriptions),
            (select string_agg(id::text || ':' || status || ':' || attempts, ',' order by id)
               from dead_letter_events))",
    )
    .fetch_one(&system.db.pool)
    .await
    .unwrap()
}

/// What the read routes read: a contact with a session and a message, in the read model.
struct Seen {
    contact: Uuid,
    session: Uuid,
}

/// A user who is no member of any project.
async fn new_user(system: &TestSystem) -> Uuid {
    sqlx::query_scalar(
        "insert into users (name, email, password_hash, status, created_at, updated_at)
         values ('Someone', $1, '!', 'active', now(), now()) returning id",
    )
    .bind(format!("{}@users.test", Uuid::new_v4().simple()))
    .fetch_one(&system.db.pool)
    .await
    .unwrap()
}

/// A subscription made by the owner (to a port nothing listens on), and when asked for, one of
/// its deliveries.
async fn webhook_with_delivery(system: &TestSystem, with_delivery: bool) -> (Uuid, Option<Uuid>) {
    let made = system
        .command(
            Method::POST,
            "/webhooks",
            Some(json!({"url": "http://127.0.0.1:9/hook", "events": ["contact.*"]})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let hook = made.id("id");
    if !with_delivery {
        return (hook, None);
    }
    system.create_contact(json!({"name": "heard"})).await;
    for _ in 0..100 {
        let delivery: Option<Uuid> =
            sqlx::query_scalar("select id from webhook_deliveries where subscription_id = $1")
                .bind(hook)
                .fetch_optional(&system.db.pool)
                .await
                .unwrap();
        if delivery.is_some() {
            return (hook, delivery);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the intake made no delivery within 10 s");
}

/// A request for the operation, on resources made for it by the owner.
async fn request_for(system: &TestSystem, seen: &Seen, op: &Operation) -> (String, Option<Value>) {
    let owner = &system.tenant;
    let fresh_contact = || system.create_contact(json!({"name": "P", "tags": ["vip"]}));
    let path_with = |name: &str, id: Uuid| op.path.replace(&format!("{{{name}}}"), &id.to_string());
    match op.id.as_str() {
        "list_contacts" | "list_sessions" | "list_event_log" | "list_api_keys" | "list_members"
        | "get_pipeline" | "list_parked_events" | "get_caller" => (op.path.clone(), None),
        "retry_parked_event" => {
            let parked = e2e::park_event(&system.db.pool, fresh_contact().await, 1).await;
            (path_with("dead_letter_id", parked), None)
        }
        "search_messages" => ("/messages?q=hello".into(), None),
        // A feed does not end: its status is read, then it is dropped.
        "stream_changes" => ("/changes".into(), None),
        "get_contact" => (
            format!("{}?min_version=1", path_with("contact_id", seen.contact)),
            None,
        ),
        "list_contact_sessions" | "list_contact_events" | "list_contact_messages" => {
            (path_with("contact_id", seen.contact), None)
        }
        "get_session" => (
            format!("{}?min_version=1", path_with("session_id", seen.session)),
            None,
        ),
        "list_session_messages" => (path_with("session_id", seen.session), None),
        "create_contact" => (op.path.clone(), Some(json!({"name": "New"}))),
        "update_contact" => (
            path_with("contact_id", fresh_contact().await),
            Some(json!({"name": "Edited"})),
        ),
        "add_contact_tag" => (
            path_with("contact_id", fresh_contact().await),
            Some(json!({"tag": "gold"})),
        ),
        "remove_contact_tag" => (
            path_with("contact_id", fresh_contact().await).replace("{tag}", "vip"),
            None,
        ),
        "set_contact_profile_picture" => (
            path_with("contact_id", fresh_contact().await),
            Some(json!({"url": "https://example.com/p.png"})),
        ),
        "delete_contact" | "forget_contact" => {
            (path_with("contact_id", fresh_contact().await), None)
        }
        "record_contact_message" => (
            path_with("contact_id", fresh_contact().await),
            Some(json!({"channel_type_id": 1, "from_contact": true, "text": "hi"})),
        ),
        "start_contact_session" => (
            path_with("contact_id", fresh_contact().await),
            Some(json!({"channel_type_id": 2})),
        ),
        "record_session_message"
        | "summarize_session"
        | "assign_session_agent"
        | "set_session_outcome"
        | "end_session" => {
            let session = system.open_session(fresh_contact().await).await;
            let body = match op.id.as_str() {
                "record_session_message" => json!({"from_contact": false, "text": "hello"}),
                "summarize_session" => json!({"summary": "s"}),
                "assign_session_agent" => json!({"agent_id": Uuid::now_v7()}),
                "set_session_outcome" => json!({"escalated": true}),
                _ => json!({"reason": "manual_close"}),
            };
            (path_with("session_id", session), Some(body))
        }
        "create_api_key" => (
            op.path.clone(),
            Some(json!({"name": "k", "role": "viewer"})),
        ),
        "revoke_api_key" => {
            let made = make_key(
                system,
                owner,
                json!({"name": "to revoke", "role": "viewer"}),
            )
            .await;
            assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
            (path_with("key_id", made.id("id")), None)
        }
        "set_member" => (
            path_with("user_id", new_user(system).await),
            Some(json!({"role": "agent"})),
        ),
        "remove_member" => {
            let member = system.add_member(owner, "agent").await;
            (path_with("user_id", member.user_id), None)
        }
        "create_webhook" => (
            op.path.clone(),
            Some(json!({"url": "http://127.0.0.1:9/hook", "events": ["contact.*"]})),
        ),
        "list_webhooks" => (op.path.clone(), None),
        "get_webhook" | "list_webhook_deliveries" | "delete_webhook" | "update_webhook" => {
            let (hook, _) = webhook_with_delivery(system, false).await;
            let body = (op.id == "update_webhook").then(|| json!({"active": false}));
            (path_with("webhook_id", hook), body)
        }
        "retry_webhook_delivery" => {
            let (hook, delivery) = webhook_with_delivery(system, true).await;
            let path = path_with("webhook_id", hook)
                .replace("{delivery_id}", &delivery.unwrap().to_string());
            (path, None)
        }
        other => panic!("no request for {other}: add one to this test"),
    }
}

#[tokio::test]
async fn every_route_answers_every_role_as_the_permission_table_says_and_a_refusal_writes_nothing()
{
    let system = TestSystem::start().await;
    let owner = system.tenant.clone();
    let mut callers: Vec<(&str, Tenant)> = vec![("owner", owner.clone())];
    for role in ["admin", "supervisor", "agent", "viewer"] {
        callers.push((role, system.add_member(&owner, role).await));
    }
    let contact = system
        .create_contact(json!({"name": "Seen", "tags": ["vip"]}))
        .await;
    let session = system.open_session(contact).await;
    let seen = Seen { contact, session };

    let ops = operations(&system).await;
    let ids: BTreeSet<&str> = ops.iter().map(|o| o.id.as_str()).collect();
    for op in &ops {
        let least = least_role(&op.id).unwrap_or_else(|| {
            panic!(
                "{} {} ({}): a route this test does not know; give it a permission here and in platform::auth::permissions",
                op.method, op.path, op.id
            )
        });
        assert!(
            op.permission.is_some(),
            "{}: the document names no permission",
            op.id
        );
        let expected: Vec<&str> = ROLES[rank(least)..].to_vec();
        assert_eq!(op.roles, expected, "{}: x-roles", op.id);
    }
    for id in [
        "create_api_key",
        "revoke_api_key",
        "list_api_keys",
        "set_member",
        "remove_member",
        "list_members",
    ] {
        assert!(ids.contains(id), "{id} is served");
    }

    let mut checked = 0;
    for op in &ops {
        let least = rank(least_role(&op.id).unwrap());
        for (role, caller) in &callers {
            let (path, body) = request_for(&system, &seen, op).await;
            let before = written(&system).await;
            let reply = match op.service {
                _ if op.id == "stream_changes" => {
                    let url = format!(
                        "{}/v1/projects/{}{path}",
                        system.query_url, caller.project_id
                    );
                    let answer = system
                        .http
                        .get(url)
                        .bearer_auth(&caller.api_key)
                        .send()
                        .await
                        .unwrap();
                    let status = answer.status();
                    if status.is_success() {
                        assert_eq!(
                            answer.headers()["content-type"],
                            "text/event-stream",
                            "{role} on the feed"
                        );
                        drop(answer);
                        checked += 1;
                        continue;
                    }
                    TestSystem::read(answer).await
                }
                "command" => {
                    system
                        .command_as(caller, op.method.clone(), &path, body, &[])
                        .await
                }
                // projection-service's one write: the console's retry of a parked event.
                _ if op.method != Method::GET => {
                    let url = format!(
                        "{}/v1/projects/{}{path}",
                        system.query_url, caller.project_id
                    );
                    system
                        .send(
                            op.method.clone(),
                            &url,
                            Some(&caller.api_key),
                            body.as_ref(),
                            &[],
                        )
                        .await
                }
                _ => system.query_as(caller, &path).await,
            };
            if rank(role) >= least {
                assert!(
                    reply.status.is_success(),
                    "{role} on {} {path} ({}): {} {}",
                    op.method,
                    op.id,
                    reply.status,
                    reply.body
                );
            } else {
                reply.assert_problem(403);
                assert_eq!(
                    reply.body["permission"],
                    op.permission.clone().unwrap(),
                    "{role} on {}: the problem names the permission",
                    op.id
                );
                assert_eq!(reply.body["role"], *role);
                assert_eq!(
                    written(&system).await,
                    before,
                    "{role} on {}: a refusal wrote something",
                    op.id
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ops.len() * ROLES.len());
    system.stop().await;
}

/// `by` makes a key (`POST /api-keys` with `body`).
async fn make_key(system: &TestSystem, by: &Tenant, body: Value) -> Reply {
    system
        .command_as(by, Method::POST, "/api-keys", Some(body), &[])
        .await
}

/// `by` revokes a key (`DELETE /api-keys/{key}`).
async fn revoke_key(system: &TestSystem, by: &Tenant, key: Uuid) -> Reply {
    system
        .command_as(by, Method::DELETE, &format!("/api-keys/{key}"), None, &[])
        .await
}

/// `by` removes a member (`DELETE /members/{user}`).
async fn remove_member(system: &TestSystem, by: &Tenant, user: Uuid) -> Reply {
    system
        .command_as(by, Method::DELETE, &format!("/members/{user}"), None, &[])
        .await
}

/// How long until `url` answers `status` to `key` (a read); panics after `within`.
async fn until_status(
    system: &TestSystem,
    url: &str,
    key: &str,
    status: StatusCode,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    let seen = e2e::wait_until(within, || async {
        system
            .send(Method::GET, url, Some(key), None, &[])
            .await
            .status
            == status
    })
    .await;
    assert!(seen, "{url}: not {status} within {within:?}");
    started.elapsed()
}

#[tokio::test]
async fn keys_are_made_listed_without_secrets_used_revoked_on_every_instance_and_expire() {
    let mut system = TestSystem::start().await;
    let owner = system.tenant.clone();
    let admin = system.add_member(&owner, "admin").await;

    // An admin makes a supervisor key for itself: shown once, with its prefix.
    let made = make_key(
        &system,
        &admin,
        json!({"name": "CRM sync", "role": "supervisor"}),
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let secret = made.body["secret"].as_str().unwrap().to_owned();
    let key_id = made.id("id");
    assert!(secret.starts_with(made.body["prefix"].as_str().unwrap()));
    assert_eq!(made.body["role"], "supervisor");
    assert_eq!(made.body["user_id"], admin.user_id.to_string());
    assert_eq!(made.header("cache-control"), Some("no-store"));
    let keyed = Tenant {
        api_key: secret.clone(),
        ..admin.clone()
    };

    // Above the creator's role: 403; bad fields: 422; nothing made.
    let before = written(&system).await;
    for (body, status) in [
        (json!({"name": "x", "role": "owner"}), 403),
        (json!({"name": "", "role": "viewer"}), 422),
        (json!({"name": "x", "role": "king"}), 422),
        (
            json!({"name": "x", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z"}),
            422,
        ),
        (
            json!({"name": "x", "role": "viewer", "secret": "mine"}),
            400,
        ),
    ] {
        system
            .command_as(&admin, Method::POST, "/api-keys", Some(body), &[])
            .await
            .assert_problem(status);
    }
    assert_eq!(written(&system).await, before);

    // The key works, with its own role's reach: a supervisor assigns, but cannot delete.
    let contact = system.create_contact(json!({"name": "K"})).await;
    let session = system.open_session(contact).await;
    let assign = system
        .command_as(
            &keyed,
            Method::POST,
            &format!("/sessions/{session}/agents"),
            Some(json!({"agent_id": Uuid::now_v7()})),
            &[],
        )
        .await;
    assert_eq!(assign.status, StatusCode::OK, "{}", assign.body);
    let delete = system
        .command_as(
            &keyed,
            Method::DELETE,
            &format!("/contacts/{contact}"),
            None,
            &[],
        )
        .await;
    delete.assert_problem(403);
    assert_eq!(delete.body["permission"], "delete_contacts");
    assert_eq!(delete.body["role"], "supervisor");

    // Listed without secrets; its use recorded.
    let listed = system.query_as(&owner, "/api-keys").await;
    assert_eq!(listed.status, StatusCode::OK);
    let items = listed.body["items"].as_array().unwrap();
    assert!(
        !listed.body.to_string().contains(&secret),
        "a secret is listed"
    );
    assert!(items.iter().all(|k| k.get("secret").is_none()));
    let mine = items
        .iter()
        .find(|k| k["id"] == key_id.to_string())
        .expect("the key is listed");
    assert_eq!(mine["name"], "CRM sync");
    assert!(mine["created_by_key"].is_string());
    system
        .eventually(Duration::from_secs(5), "its use recorded", || async {
            let listed = system.query_as(&owner, "/api-keys").await;
            listed.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["id"] == key_id.to_string() && k["last_used_at"].is_string())
        })
        .await;

    // Revoked through one instance: refused by both within a second.
    let (second_url, second) = system.another_command_instance().await;
    let contacts_on = |base: &str| format!("{base}/v1/projects/{}/contacts", owner.project_id);
    let probe_first = format!(
        "{}/v1/projects/{}/api-keys/{}",
        system.command_url,
        owner.project_id,
        Uuid::new_v4()
    );
    let probe_second = probe_first.replace(&system.command_url, &second_url);
    for url in [&probe_first, &probe_second] {
        // Warm both instances' caches with the key (a DELETE of no key: 404, nothing revoked).
        let reply = system
            .send(Method::DELETE, url, Some(&secret), None, &[])
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    }
    let revoked = revoke_key(&system, &admin, key_id).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);
    for url in [&probe_first, &probe_second] {
        let started = Instant::now();
        let refused = e2e::wait_until(Duration::from_secs(1), || async {
            system
                .send(Method::DELETE, url, Some(&secret), None, &[])
                .await
                .status
                == StatusCode::UNAUTHORIZED
        })
        .await;
        assert!(refused, "{url}: the revoked key still served after 1 s");
        println!("revoked key refused after {:?}", started.elapsed());
    }
    until_status(
        &system,
        &contacts_on(&system.query_url),
        &secret,
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(1),
    )
    .await;
    revoke_key(&system, &admin, key_id)
        .await
        .assert_problem(404);
    let listed = system.query_as(&owner, "/api-keys").await;
    assert!(listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["id"] != key_id.to_string()));
    second.stop().await;

    // The key's making and revoking are in the audit trail, naming the admin's key.
    system.wait_until_projected(Duration::from_secs(10)).await;
    let log = system
        .query_as(
            &owner,
            &format!(
                "/event-log?aggregate_type=project&aggregate_id={}",
                owner.project_id
            ),
        )
        .await;
    let admin_key = key_id_of(&system, &admin.api_key).await.to_string();
    let trail: Vec<(&str, &str, &str)> = log.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["payload"]["key_id"] == key_id.to_string())
        .map(|e| {
            (
                e["event_type"].as_str().unwrap(),
                e["payload"]["by_key_id"].as_str().unwrap(),
                e["payload"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        trail,
        vec![
            ("project.api_key_created", admin_key.as_str(), "CRM sync"),
            ("project.api_key_revoked", admin_key.as_str(), "CRM sync"),
        ]
    );
    assert!(
        !log.body.to_string().contains(&secret),
        "no secret in the audit trail"
    );

    // An admin cannot revoke the owner's key.
    let owners = make_key(&system, &owner, json!({"name": "owner's", "role": "owner"})).await;
    assert_eq!(owners.status, StatusCode::CREATED);
    revoke_key(&system, &admin, owners.id("id"))
        .await
        .assert_problem(403);

    // An expired key is refused.
    let expires_at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let short = make_key(
        &system,
        &owner,
        json!({"name": "short", "role": "viewer", "expires_at": expires_at}),
    )
    .await;
    assert_eq!(short.status, StatusCode::CREATED, "{}", short.body);
    let short_secret = short.body["secret"].as_str().unwrap().to_owned();
    let url = contacts_on(&system.query_url);
    assert_eq!(
        system
            .send(Method::GET, &url, Some(&short_secret), None, &[])
            .await
            .status,
        StatusCode::OK
    );
    until_status(
        &system,
        &url,
        &short_secret,
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(5),
    )
    .await;
    assert!(
        chrono::Utc::now() >= expires_at,
        "refused only once expired"
    );

    // A key made on project A is 404 on project B of the same user (who owns both).
    let b = command_service::bootstrap::bootstrap(
        &system.db.pool,
        &command_service::bootstrap::BootstrapSpec {
            email: format!("owner@{}.test", owner.tenant_id),
            name: "Owner".into(),
            tenant: "tenant-b".into(),
            project: "B".into(),
            session_timeout_minutes: 30,
            api_key: None,
            member_role: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(b.user_id, owner.user_id, "the same user owns B");
    let on_a = make_key(&system, &owner, json!({"name": "A only", "role": "admin"})).await;
    let a_key = on_a.body["secret"].as_str().unwrap().to_owned();
    let b_url = format!("{}/v1/projects/{}/contacts", system.query_url, b.project_id);
    system
        .send(Method::GET, &b_url, Some(&a_key), None, &[])
        .await
        .assert_problem(404);
    assert_eq!(
        system
            .send(Method::GET, &b_url, Some(&b.api_key), None, &[])
            .await
            .status,
        StatusCode::OK,
        "B's own key reads B"
    );
    system.stop_command().await;
    system.stop().await;
}

#[tokio::test]
async fn members_are_added_changed_and_removed_and_the_last_owner_stays() {
    let system = TestSystem::start().await;
    let owner = system.tenant.clone();
    let admin = system.add_member(&owner, "admin").await;
    let agent = system.add_member(&owner, "agent").await;
    let contact = system.create_contact(json!({"name": "M"})).await;
    let tag = |who: &Tenant, tag: &'static str| {
        let who = who.clone();
        let system = &system;
        async move {
            system
                .command_as(
                    &who,
                    Method::POST,
                    &format!("/contacts/{contact}/tags"),
                    Some(json!({"tag": tag})),
                    &[],
                )
                .await
                .status
        }
    };
    assert_eq!(tag(&agent, "a").await, StatusCode::OK);

    // Listed, with roles.
    let members = system.query_as(&admin, "/members").await;
    assert_eq!(members.status, StatusCode::OK, "{}", members.body);
    let roles: BTreeSet<(String, String)> = members.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user_id"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (who, role) in [(&owner, "owner"), (&admin, "admin"), (&agent, "agent")] {
        assert!(roles.contains(&(who.user_id.to_string(), role.to_owned())));
    }

    // Changed: the next request sees it.
    let set = |by: &Tenant, user: Uuid, role: &str| {
        let by = by.clone();
        let system = &system;
        let role = role.to_owned();
        async move {
            system
                .command_as(
                    &by,
                    Method::PUT,
                    &format!("/members/{user}"),
                    Some(json!({ "role": role })),
                    &[],
                )
                .await
        }
    };
    let changed = set(&admin, agent.user_id, "viewer").await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.body["previous_role"], "agent");
    e2e::wait_until(Duration::from_secs(1), || async {
        tag(&agent, "b").await == StatusCode::FORBIDDEN
    })
    .await
    .then_some(())
    .expect("a viewer now");

    // Added: a user of no project becomes a supervisor (201).
    let newcomer = new_user(&system).await;
    let added = set(&admin, newcomer, "supervisor").await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    assert!(added.body["previous_role"].is_null());
    set(&admin, Uuid::new_v4(), "agent")
        .await
        .assert_problem(404);

    // Only an owner gives or takes admin and owner.
    set(&admin, agent.user_id, "admin")
        .await
        .assert_problem(403);
    set(&admin, admin.user_id, "viewer")
        .await
        .assert_problem(403);
    remove_member(&system, &admin, owner.user_id)
        .await
        .assert_problem(403);

    // The last owner can neither leave nor step down.
    let before = written(&system).await;
    remove_member(&system, &owner, owner.user_id)
        .await
        .assert_problem(409);
    set(&owner, owner.user_id, "admin")
        .await
        .assert_problem(409);
    assert_eq!(written(&system).await, before, "nothing changed");
    // With a second owner, the first may step down.
    assert_eq!(
        set(&owner, admin.user_id, "owner").await.status,
        StatusCode::OK
    );
    let stepped = set(&owner, owner.user_id, "admin").await;
    assert_eq!(stepped.status, StatusCode::OK, "{}", stepped.body);

    // Removed: their keys for the project go with them, so their next request is refused.
    let removed = remove_member(&system, &admin, agent.user_id).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.body);
    e2e::wait_until(Duration::from_secs(1), || async {
        system.query_as(&agent, "/contacts").await.status == StatusCode::UNAUTHORIZED
    })
    .await
    .then_some(())
    .expect("a removed member's key is refused");
    let keys = system.query_as(&admin, "/api-keys").await;
    assert!(
        keys.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["user_id"] != agent.user_id.to_string()),
        "a removed member's keys are no longer listed"
    );
    remove_member(&system, &admin, agent.user_id)
        .await
        .assert_problem(404);

    // Every change, and nothing refused, is in the project's audit trail with who made it.
    system.wait_until_projected(Duration::from_secs(10)).await;
    let log = system
        .query_as(
            &admin,
            &format!("/event-log?aggregate_id={}", owner.project_id),
        )
        .await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.body);
    let entries: Vec<(String, String, String, String)> = log.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event_type"].as_str().unwrap().to_owned(),
                e["payload"]["user_id"].as_str().unwrap().to_owned(),
                e["payload"]["by_key_id"].as_str().unwrap().to_owned(),
                e["user_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let admin_key = key_id_of(&system, &admin.api_key).await;
    let owner_key = key_id_of(&system, &owner.api_key).await;
    let by = |who: &Tenant, key: Uuid| (who.user_id.to_string(), key.to_string());
    let expected = vec![
        (
            "project.member_role_set",
            agent.user_id,
            by(&admin, admin_key),
        ),
        ("project.member_role_set", newcomer, by(&admin, admin_key)),
        (
            "project.member_role_set",
            admin.user_id,
            by(&owner, owner_key),
        ),
        (
            "project.member_role_set",
            owner.user_id,
            by(&owner, owner_key),
        ),
        (
            "project.member_removed",
            agent.user_id,
            by(&admin, admin_key),
        ),
    ];
    let expected: Vec<(String, String, String, String)> = expected
        .into_iter()
        .map(|(t, member, (user, key))| (t.to_owned(), member.to_string(), key, user))
        .collect();
    assert_eq!(
        entries, expected,
        "the audit trail of the project's members"
    );
    assert_eq!(
        system.verify().await,
        vec![],
        "a rebuild gives the same audit log"
    );
    system.stop().await;
}

/// The id of the API key `secret` (`user_api_keys.id`).
async fn key_id_of(system: &TestSystem, secret: &str) -> Uuid {
    sqlx::query_scalar("select id from user_api_keys where key_hash = $1")
        .bind(platform::auth::hash_api_key(secret))
        .fetch_one(&system.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_agent_ends_only_its_own_or_unassigned_sessions() {
    let system = TestSystem::start().await;
    let owner = system.tenant.clone();
    let agent = system.add_member(&owner, "agent").await;
    let supervisor = system.add_member(&owner, "supervisor").await;
    let end = |who: &Tenant, session: Uuid| {
        let who = who.clone();
        let system = &system;
        async move {
            system
                .command_as(
                    &who,
                    Method::POST,
                    &format!("/sessions/{session}/end"),
                    Some(json!({"reason": "agent_close"})),
                    &[],
                )
                .await
        }
    };
    let assigned_to = |agent_id: Uuid| {
        let system = &system;
        async move {
            let contact = system.create_contact(json!({"name": "S"})).await;
            let session = system.open_session(contact).await;
            let assigned = system
                .command(
                    Method::POST,
                    &format!("/sessions/{session}/agents"),
                    Some(json!({ "agent_id": agent_id })),
                )
                .await;
            assert_eq!(assigned.status, StatusCode::OK, "{}", assigned.body);
            session
        }
    };
    let others = assigned_to(Uuid::now_v7()).await;
    let before = written(&system).await;
    let refused = end(&agent, others).await;
    refused.assert_problem(403);
    assert_eq!(written(&system).await, before);
    assert_eq!(
        end(&supervisor, others).await.status,
        StatusCode::OK,
        "a supervisor ends any session"
    );
    let own = assigned_to(agent.user_id).await;
    assert_eq!(end(&agent, own).await.status, StatusCode::OK);
    system.stop().await;
}
