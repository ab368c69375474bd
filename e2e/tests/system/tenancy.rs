//! Acceptance 8: another tenant's ids are 404 on every route and change nothing; a viewer cannot
//! send commands; a missing or bad key is 401.
//!
//! Every system here runs on a private broker that checks logins and TLS, as `deploy/` runs it.

use e2e::{Options, Tenant, TestSystem};
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

/// Every command route, with the body it needs.
fn command_routes(
    contact: Uuid,
    session: Uuid,
) -> Vec<(Method, String, Option<serde_json::Value>)> {
    vec![
        (
            Method::PATCH,
            format!("/contacts/{contact}"),
            Some(json!({"name": "X"})),
        ),
        (
            Method::POST,
            format!("/contacts/{contact}/tags"),
            Some(json!({"tag": "x"})),
        ),
        (
            Method::DELETE,
            format!("/contacts/{contact}/tags/vip"),
            None,
        ),
        (
            Method::PUT,
            format!("/contacts/{contact}/profile-picture"),
            Some(json!({"url": "https://x.io/a.png"})),
        ),
        (
            Method::POST,
            format!("/contacts/{contact}/messages"),
            Some(json!({"channel_type_id": 1, "from_contact": true})),
        ),
        (
            Method::POST,
            format!("/contacts/{contact}/sessions"),
            Some(json!({"channel_type_id": 2})),
        ),
        (
            Method::POST,
            format!("/sessions/{session}/messages"),
            Some(json!({"from_contact": true})),
        ),
        (
            Method::POST,
            format!("/sessions/{session}/agents"),
            Some(json!({"agent_id": Uuid::now_v7()})),
        ),
        (
            Method::PUT,
            format!("/sessions/{session}/summary"),
            Some(json!({"summary": "s"})),
        ),
        (
            Method::PUT,
            format!("/sessions/{session}/outcome"),
            Some(json!({"escalated": true})),
        ),
        (
            Method::POST,
            format!("/sessions/{session}/end"),
            Some(json!({"reason": "manual_close"})),
        ),
        (Method::DELETE, format!("/contacts/{contact}"), None),
    ]
}

async fn tenant_b_with_data(system: &TestSystem) -> (Tenant, Uuid, Uuid) {
    let b = TestSystem::bootstrap_tenant(&system.db.pool, "tenant-b").await;
    let created = system
        .command_as(
            &b,
            Method::POST,
            "/contacts",
            Some(json!({"name": "B's", "tags": ["vip"]})),
            &[],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let contact = created.id("id");
    let inbound = system
        .command_as(
            &b,
            Method::POST,
            &format!("/contacts/{contact}/messages"),
            Some(json!({"channel_type_id": 1, "from_contact": true, "text": "B's secret"})),
            &[],
        )
        .await;
    (b, contact, inbound.id("session_id"))
}

#[tokio::test]
async fn another_tenants_ids_are_not_found_on_every_route_and_nothing_changes() {
    ids_probe(APP_ROLE).await;
}

/// The same probe with row-level security out of the way (the request paths run as a role that
/// bypasses it): every route's own SQL keeps the tenants apart.
#[tokio::test]
async fn without_row_level_security_another_tenants_ids_are_still_not_found() {
    ids_probe(RLS_BYPASSING_ROLE).await;
}

/// The request paths' role, bound by row-level security.
const APP_ROLE: &str = "ventros_app";
/// A role the policies do not bind (the workers' own).
const RLS_BYPASSING_ROLE: &str = "ventros_projector";

async fn ids_probe(app_role: &'static str) {
    let system = TestSystem::start_secured(Options {
        app_role,
        ..Options::default()
    })
    .await;
    let (b, contact, session) = tenant_b_with_data(&system).await;
    // B's webhook subscription, with a delivery (B's next event, taken in).
    let hook = system
        .command_as(
            &b,
            Method::POST,
            "/webhooks",
            Some(json!({"url": "http://127.0.0.1:9/b", "events": ["contact.*"]})),
            &[],
        )
        .await
        .id("id");
    system
        .command_as(
            &b,
            Method::POST,
            &format!("/contacts/{contact}/tags"),
            Some(json!({"tag": "heard"})),
            &[],
        )
        .await;
    let mut delivery = None;
    for _ in 0..100 {
        delivery = sqlx::query_scalar::<_, Uuid>(
            "select id from webhook_deliveries where subscription_id = $1",
        )
        .bind(hook)
        .fetch_optional(&system.db.pool)
        .await
        .unwrap();
        if delivery.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let delivery = delivery.expect("B's delivery taken in");
    let b_hook_state = || async {
        sqlx::query_scalar::<_, String>(
            "select concat_ws('|', s.url, s.active::text, s.deleted_at::text, s.events::text,
                              s.version::text)
               from webhook_subscriptions s where s.id = $1",
        )
        .bind(hook)
        .fetch_one(&system.db.pool)
        .await
        .unwrap()
    };
    let hook_before = b_hook_state().await;
    // Let B's rows reach the read model, so a leak would have something to show.
    let seen = system
        .query_as(&b, &format!("/sessions/{session}?min_version=2"))
        .await;
    assert_eq!(seen.status, StatusCode::OK);
    let before = system.rows("contact_event_store").await;

    for (method, path, body) in command_routes(contact, session) {
        let reply = system
            .command_as(&system.tenant, method.clone(), &path, body, &[])
            .await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            reply.body
        );
        reply.assert_problem(404);
    }
    for path in [
        format!("/contacts/{contact}"),
        format!("/contacts/{contact}?min_version=1"),
        format!("/contacts/{contact}/sessions"),
        format!("/contacts/{contact}/events"),
        format!("/sessions/{session}"),
        format!("/sessions/{session}?min_version=1"),
        format!("/contacts/{contact}/messages"),
        format!("/sessions/{session}/messages"),
        format!("/sessions/{session}/messages?min_version=1"),
    ] {
        system.query(&path).await.assert_problem(404);
    }
    for path in [
        "/contacts".to_owned(),
        "/contacts?tag=vip".to_owned(),
        format!("/contacts?cursor={}", Uuid::nil()),
        "/sessions".to_owned(),
        format!("/event-log?aggregate_id={contact}"),
        "/event-log".to_owned(),
        "/messages?q=secret".to_owned(),
    ] {
        let reply = system.query(&path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(
            reply.body["items"],
            json!([]),
            "{path} leaks another tenant's rows"
        );
    }
    // B's subscription and delivery, named on A's project: not found, not changed.
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("/webhooks/{hook}"),
            Some(json!({"url": "http://127.0.0.1:9/a"})),
        ),
        (Method::DELETE, format!("/webhooks/{hook}"), None),
        (
            Method::POST,
            format!("/webhooks/{hook}/deliveries/{delivery}/retry"),
            None,
        ),
    ] {
        system
            .command_as(&system.tenant, method, &path, body, &[])
            .await
            .assert_problem(404);
    }
    for path in [
        format!("/webhooks/{hook}"),
        format!("/webhooks/{hook}/deliveries"),
    ] {
        system.query(&path).await.assert_problem(404);
    }
    let listed = system.query("/webhooks").await;
    assert_eq!(listed.body["items"], json!([]), "A lists B's subscription");

    // B's parked event, named on A's project: not listed, not retried.
    let b_parked = e2e::park_event(&system.db.pool, contact, 1).await;
    let parked = system.query("/ops/dead-letters").await;
    assert_eq!(parked.status, StatusCode::OK);
    assert_eq!(parked.body["items"], json!([]), "A lists B's parked event");
    let retried = system
        .send(
            Method::POST,
            &format!(
                "{}/v1/projects/{}/ops/dead-letters/{b_parked}/retry",
                system.query_url, system.tenant.project_id
            ),
            Some(&system.tenant.api_key),
            None,
            &[],
        )
        .await;
    retried.assert_problem(404);
    let status: String =
        sqlx::query_scalar("select status || attempts from dead_letter_events where id = $1")
            .bind(b_parked)
            .fetch_one(&system.db.pool)
            .await
            .unwrap();
    assert_eq!(status, "parked1", "B's parked event was retried");
    assert_eq!(
        b_hook_state().await,
        hook_before,
        "B's subscription changed"
    );

    // B's keys and members, named on A's project: not A's to revoke or remove, and not listed.
    let b_key: Uuid = sqlx::query_scalar("select id from user_api_keys where user_id = $1")
        .bind(b.user_id)
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    for path in [
        format!("/api-keys/{b_key}"),
        format!("/members/{}", b.user_id),
    ] {
        system
            .command_as(&system.tenant, Method::DELETE, &path, None, &[])
            .await
            .assert_problem(404);
    }
    for path in ["/api-keys", "/members"] {
        let reply = system.query(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        let listed = reply.body.to_string();
        assert!(
            !listed.contains(&b_key.to_string()) && !listed.contains(&b.user_id.to_string()),
            "{path} shows B's keys or members: {listed}"
        );
    }
    let b_key_still: bool =
        sqlx::query_scalar("select deleted_at is null and active from user_api_keys where id = $1")
            .bind(b_key)
            .fetch_one(&system.db.pool)
            .await
            .unwrap();
    assert!(b_key_still, "B's key still works");

    // A's key on B's project: 404, as if B's project did not exist.
    let a_on_b = system
        .command_as(
            &Tenant {
                project_id: b.project_id,
                ..system.tenant.clone()
            },
            Method::POST,
            "/contacts",
            Some(json!({"name": "x"})),
            &[],
        )
        .await;
    a_on_b.assert_problem(404);
    let a_reads_b = system
        .query_as(
            &Tenant {
                project_id: b.project_id,
                ..system.tenant.clone()
            },
            "/contacts",
        )
        .await;
    a_reads_b.assert_problem(404);
    for path in ["/api-keys", "/members"] {
        system
            .query_as(
                &Tenant {
                    project_id: b.project_id,
                    ..system.tenant.clone()
                },
                path,
            )
            .await
            .assert_problem(404);
    }

    assert_eq!(
        system.rows("contact_event_store").await,
        before,
        "nothing was written"
    );
    system.stop().await;
}

#[tokio::test]
async fn viewers_read_but_cannot_command_and_keys_must_be_valid() {
    let system = TestSystem::start_secured(Options::default()).await;
    let contact = system.create_contact(json!({"name": "Seen"})).await;
    let viewer = system.add_member(&system.tenant, "viewer").await;
    let agent = system.add_member(&system.tenant, "agent").await;
    let before = system.rows("contact_event_store").await;

    for (method, path, body) in command_routes(contact, Uuid::now_v7()) {
        let reply = system
            .command_as(&viewer, method.clone(), &path, body, &[])
            .await;
        reply.assert_problem(403);
    }
    system
        .command_as(
            &viewer,
            Method::POST,
            "/contacts",
            Some(json!({"name": "v"})),
            &[],
        )
        .await
        .assert_problem(403);
    assert_eq!(
        system.rows("contact_event_store").await,
        before,
        "a viewer wrote nothing"
    );
    let read = system
        .query_as(&viewer, &format!("/contacts/{contact}?min_version=1"))
        .await;
    assert_eq!(read.status, StatusCode::OK, "a viewer reads");
    let by_agent = system
        .command_as(
            &agent,
            Method::POST,
            &format!("/contacts/{contact}/tags"),
            Some(json!({"tag": "ok"})),
            &[],
        )
        .await;
    assert_eq!(
        by_agent.status,
        StatusCode::OK,
        "an agent commands: {}",
        by_agent.body
    );

    let url = format!(
        "{}/v1/projects/{}/contacts",
        system.command_url, system.tenant.project_id
    );
    let body = json!({"name": "nobody"});
    let missing = system
        .send(Method::POST, &url, None, Some(&body), &[])
        .await;
    missing.assert_problem(401);
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    system
        .send(Method::POST, &url, Some("vk_not_a_key"), Some(&body), &[])
        .await
        .assert_problem(401);
    system
        .send(
            Method::POST,
            &url,
            None,
            Some(&body),
            &[("authorization", "Basic dXNlcjpwYXNz")],
        )
        .await
        .assert_problem(401);
    let query_url = format!(
        "{}/v1/projects/{}/contacts",
        system.query_url, system.tenant.project_id
    );
    system
        .send(Method::GET, &query_url, None, None, &[])
        .await
        .assert_problem(401);

    for (what, sql) in [
        (
            "expired",
            "update user_api_keys set expires_at = now() - interval '1 minute' where user_id = $1",
        ),
        (
            "inactive",
            "update user_api_keys set expires_at = null, active = false where user_id = $1",
        ),
        (
            "deleted",
            "update user_api_keys set active = true, deleted_at = now() where user_id = $1",
        ),
    ] {
        sqlx::query(sql)
            .bind(agent.user_id)
            .execute(&system.db.pool)
            .await
            .unwrap();
        // The services keep keys in use in a cache that the change empties through a
        // notification: within a second the key is refused by both, found out by requests that
        // change nothing (a read; a command on a contact that does not exist).
        let project = format!("/v1/projects/{}", system.tenant.project_id);
        for (method, url, body) in [
            (
                Method::GET,
                format!("{}{project}/contacts/{contact}", system.query_url),
                None,
            ),
            (
                Method::POST,
                format!(
                    "{}{project}/contacts/{}/tags",
                    system.command_url,
                    uuid::Uuid::new_v4()
                ),
                Some(json!({"tag": "probe"})),
            ),
        ] {
            let refused = e2e::wait_until(std::time::Duration::from_secs(1), || async {
                let reply = system
                    .send(
                        method.clone(),
                        &url,
                        Some(&agent.api_key),
                        body.as_ref(),
                        &[],
                    )
                    .await;
                reply.status == reqwest::StatusCode::UNAUTHORIZED
            })
            .await;
            assert!(refused, "{what}: {url} still accepts the key after 1 s");
        }
        let reply = system
            .command_as(
                &agent,
                Method::POST,
                &format!("/contacts/{contact}/tags"),
                Some(json!({"tag": what})),
                &[],
            )
            .await;
        reply.assert_problem(401);
    }
    assert_eq!(system.rows("contact_event_store").await, before + 1);
    system.stop().await;
}

#[tokio::test]
async fn bootstrap_is_idempotent_and_a_key_belongs_to_one_user() {
    let db = e2e::TestDb::new().await;
    let spec = command_service::bootstrap::BootstrapSpec {
        email: "demo@ventros.local".into(),
        name: "Demo".into(),
        tenant: "demo".into(),
        project: "Demo project".into(),
        session_timeout_minutes: 30,
        api_key: Some("vk_fixed_demo_key".into()),
        member_role: None,
    };
    let first = command_service::bootstrap::bootstrap(&db.pool, &spec)
        .await
        .unwrap();
    let second = command_service::bootstrap::bootstrap(&db.pool, &spec)
        .await
        .unwrap();
    assert_eq!(
        (first.user_id, first.project_id),
        (second.user_id, second.project_id)
    );
    for table in ["users", "billing_accounts", "projects", "user_api_keys"] {
        let n = e2e::db::rows(&db.pool, table).await;
        assert_eq!(n, 1, "{table} after two bootstraps");
    }
    let thief = command_service::bootstrap::BootstrapSpec {
        email: "other@ventros.local".into(),
        tenant: "other".into(),
        ..spec
    };
    assert!(
        command_service::bootstrap::bootstrap(&db.pool, &thief)
            .await
            .is_err(),
        "a key cannot be claimed by another user"
    );
    let projects: i64 = sqlx::query_scalar("select count(*) from projects")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(projects, 1, "the refused bootstrap left nothing behind");
}

#[tokio::test]
async fn the_services_database_role_is_bound_by_row_level_security() {
    let system = TestSystem::start_secured(Options::default()).await;
    let (b, _, _) = tenant_b_with_data(&system).await;
    system.create_contact(json!({"name": "A's"})).await;
    system
        .wait_until_projected(std::time::Duration::from_secs(20))
        .await;

    // The pool the request paths use, built as the services build it.
    let settings = platform::Settings {
        database_max_connections: 2,
        ..e2e::settings_for(&system.db.url)
    };
    let app = settings.app_pool("test").unwrap();
    let (user, superuser): (String, bool) = sqlx::query_as(
        "select current_user::text, rolsuper from pg_roles where rolname = current_user",
    )
    .fetch_one(&app)
    .await
    .unwrap();
    assert_eq!((user.as_str(), superuser), ("ventros_app", false));

    // A query that forgets the tenant filter sees nothing without a tenant, and only its
    // tenant's rows with one.
    let all = e2e::db::rows(&app, "contacts").await;
    assert_eq!(all, 0, "no tenant, no rows");
    for (tenant, name) in [(&system.tenant.tenant_id, "A's"), (&b.tenant_id, "B's")] {
        let mut tx = platform::db::tenant_tx(&app, tenant).await.unwrap();
        let names: Vec<String> = sqlx::query_scalar("select name from contacts")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert_eq!(
            names,
            vec![name.to_owned()],
            "{tenant} sees its own contact only"
        );
        let events: i64 =
            sqlx::query_scalar("select count(*) from contact_event_store where tenant_id <> $1")
                .bind(tenant)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        assert_eq!(events, 0, "{tenant} sees no other tenant's events");
        // The data keys are a table the request role writes (it creates and destroys them).
        let write = sqlx::query(
            "update contact_data_keys set destroyed_at = now(), key_material = null \
              where tenant_id <> $1",
        )
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .unwrap();
        assert_eq!(
            write.rows_affected(),
            0,
            "{tenant} changes no other tenant's rows"
        );
        let own: i64 = sqlx::query_scalar("select count(*) from contact_data_keys")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(own, 1, "{tenant} sees its own contact's key");
    }
    system.stop().await;
}

/// Everything of tenant A's, as one fingerprint: its events, outbox rows, idempotency rows and
/// read rows.
async fn tenant_fingerprint(system: &TestSystem, tenant: &str) -> String {
    let mut parts = Vec::new();
    for (table, key) in [
        ("contact_event_store", "tenant_id"),
        ("outbox_events", "tenant_id"),
        ("idempotency_keys", "tenant_id"),
        ("contacts", "tenant_id"),
        ("sessions", "tenant_id"),
        ("domain_event_logs", "tenant_id"),
    ] {
        let digest: Option<String> = sqlx::query_scalar(&format!(
            "select md5(string_agg(to_jsonb(t)::text, ',' order by to_jsonb(t)::text)) \
               from {table} t where {key} = $1"
        ))
        .bind(tenant)
        .fetch_one(&system.db.pool)
        .await
        .unwrap_or_else(|e| panic!("{table}: {e}"));
        parts.push(format!("{table}={}", digest.unwrap_or_default()));
    }
    parts.join(" ")
}

/// The route-by-route probe: tenant B holds tenant A's cursors (from A's paginated answers),
/// filters naming A's ids and values, A's ids in paths, and A's `Idempotency-Key`, on every query
/// and command route. No answer to B carries anything of A's, and nothing of A's is written.
#[tokio::test]
async fn tenant_b_with_a_s_cursors_filters_and_ids_sees_nothing_of_a_and_writes_nothing() {
    cursors_probe(APP_ROLE).await;
}

/// The same probe with row-level security out of the way: the routes' own tenant filters hold.
#[tokio::test]
async fn without_row_level_security_a_s_cursors_filters_and_ids_still_show_b_nothing() {
    cursors_probe(RLS_BYPASSING_ROLE).await;
}

async fn cursors_probe(app_role: &'static str) {
    let system = TestSystem::start_secured(Options {
        app_role,
        ..Options::default()
    })
    .await;
    let a = system.tenant.clone();
    let agent = Uuid::now_v7();
    // A: five contacts with distinctive values, each with two sessions and an agent's reply.
    let mut a_contacts = Vec::new();
    let mut a_sessions = Vec::new();
    for n in 0..5 {
        let headers: &[(&str, &str)] = if n == 0 {
            &[
                ("Idempotency-Key", "shared-key"),
                ("X-Correlation-Id", "a-correlation"),
            ]
        } else {
            &[]
        };
        let created = system
            .command_as(
                &a,
                Method::POST,
                "/contacts",
                Some(
                    json!({"name": format!("Victim {n}"), "email": format!("victim{n}@a.test"),
                    "phone": format!("+1555000000{n}"), "external_id": format!("ext-victim-{n}"),
                    "tags": ["victim-tag"]}),
                ),
                headers,
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        let contact = created.id("id");
        a_contacts.push(contact);
        for channel in [1, 2] {
            let session = system
                .command(
                    Method::POST,
                    &format!("/contacts/{contact}/messages"),
                    Some(json!({"channel_type_id": channel, "from_contact": true})),
                )
                .await
                .id("session_id");
            let reply = system
                .command(
                    Method::POST,
                    &format!("/sessions/{session}/messages"),
                    Some(json!({"from_contact": false, "agent_id": agent})),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            a_sessions.push(session);
        }
    }
    let (b, b_contact, b_session) = tenant_b_with_data(&system).await;
    let reply = system
        .command_as(
            &b,
            Method::POST,
            &format!("/sessions/{b_session}/messages"),
            Some(json!({"from_contact": false, "agent_id": agent})),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    system
        .wait_until_projected(std::time::Duration::from_secs(30))
        .await;

    // What must never show in B's answers: A's ids, event ids and values.
    let mut secrets: Vec<String> = sqlx::query_scalar(
        "select id::text from contact_event_store where tenant_id = $1 \
         union select aggregate_id::text from contact_event_store where tenant_id = $1",
    )
    .bind(&a.tenant_id)
    .fetch_all(&system.db.pool)
    .await
    .unwrap();
    secrets.extend(
        [
            "Victim",
            "victim",
            "+1555000000",
            "ext-victim",
            "a-correlation",
        ]
        .map(String::from),
    );
    secrets.push(a.project_id.to_string());

    // A's cursors, from A's own paginated answers.
    let cursor = |path: String| {
        let system = &system;
        async move {
            let page = system.query(&path).await;
            assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
            page.body["next_cursor"]
                .as_str()
                .unwrap_or_else(|| panic!("{path} has a next page: {}", page.body))
                .to_owned()
        }
    };
    let a_contact_cursor = cursor("/contacts?limit=2".into()).await;
    let a_session_cursor = cursor("/sessions?limit=2".into()).await;
    let a_log_cursor = cursor("/event-log?limit=2".into()).await;
    let a_contact_sessions_cursor =
        cursor(format!("/contacts/{}/sessions?limit=1", a_contacts[0])).await;
    let a_events_cursor = cursor(format!("/contacts/{}/events?limit=2", a_contacts[0])).await;
    let before = tenant_fingerprint(&system, &a.tenant_id).await;

    let (ac, asn) = (a_contacts[1], a_sessions[3]);
    let probes = [
        // A's cursors on B's lists.
        format!("/contacts?cursor={a_contact_cursor}"),
        format!("/contacts?cursor={a_contact_cursor}&limit=500&include_deleted=true"),
        format!("/sessions?cursor={a_session_cursor}"),
        format!("/sessions?cursor={a_session_cursor}&agent_id={agent}"),
        format!("/event-log?cursor={a_log_cursor}"),
        format!("/event-log?cursor={a_log_cursor}&aggregate_id={ac}"),
        format!("/contacts/{b_contact}/sessions?cursor={a_contact_sessions_cursor}"),
        format!("/contacts/{ac}/sessions?cursor={a_contact_sessions_cursor}"),
        format!("/contacts/{b_contact}/events?after_sequence={a_events_cursor}"),
        format!("/contacts/{ac}/events?after_sequence={a_events_cursor}"),
        format!("/contacts/{b_contact}/events?after_sequence=0"),
        // Filters naming A's ids and values.
        "/contacts?q=Victim".into(),
        "/contacts?q=victim".into(),
        "/contacts?email=victim1@a.test".into(),
        "/contacts?phone=%2B15550000001".into(),
        "/contacts?external_id=ext-victim-1".into(),
        "/contacts?tag=victim-tag".into(),
        "/contacts?updated_since=2000-01-01T00:00:00Z&include_deleted=true".into(),
        format!("/sessions?agent_id={agent}"),
        "/sessions?channel_type_id=2".into(),
        "/sessions?status=active".into(),
        "/sessions?started_after=2000-01-01T00:00:00Z".into(),
        format!("/event-log?aggregate_id={ac}"),
        format!("/event-log?aggregate_id={asn}"),
        "/event-log?aggregate_type=session".into(),
        "/event-log?event_type=contact.created".into(),
        "/event-log?occurred_after=2000-01-01T00:00:00Z".into(),
        // A's ids in the path.
        format!("/contacts/{ac}"),
        format!("/contacts/{ac}?min_version=1&wait_ms=100"),
        format!("/contacts/{ac}/sessions"),
        format!("/contacts/{ac}/sessions?status=active"),
        format!("/contacts/{ac}/events"),
        format!("/sessions/{asn}"),
        format!("/sessions/{asn}?min_version=1&wait_ms=100"),
    ];
    let mut b_saw_its_own = 0;
    for path in &probes {
        let reply = system.query_as(&b, path).await;
        assert!(
            matches!(reply.status.as_u16(), 200 | 404),
            "{path}: {} {}",
            reply.status,
            reply.body
        );
        let text = reply.body.to_string();
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{path} shows B something of A's ({secret}): {text}"
            );
        }
        if text.contains(&b_contact.to_string()) || text.contains(&b_session.to_string()) {
            b_saw_its_own += 1;
        }
    }
    assert!(
        b_saw_its_own >= 5,
        "the probe reached B's own rows ({b_saw_its_own} answers): it would have shown a leak"
    );

    // Commands: A's ids in the path are 404 on every route.
    for (method, path, body) in command_routes(ac, asn) {
        let reply = system
            .command_as(&b, method.clone(), &path, body, &[])
            .await;
        reply.assert_problem(404);
    }
    // A's values in B's bodies, and A's Idempotency-Key: B's own commands, answered for B alone.
    let created = system
        .command_as(
            &b,
            Method::POST,
            "/contacts",
            Some(json!({"name": "B again", "email": "victim0@a.test", "external_id": "ext-victim-0"})),
            &[("Idempotency-Key", "shared-key"), ("X-Correlation-Id", "a-correlation")],
        )
        .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "A's Idempotency-Key means nothing in B's project: {}",
        created.body
    );
    assert!(
        !a_contacts.contains(&created.id("id")),
        "B got A's stored answer"
    );
    let patched = system
        .command_as(
            &b,
            Method::PATCH,
            &format!("/contacts/{b_contact}"),
            Some(json!({"phone": "+15550000001", "external_id": "ext-victim-1"})),
            &[],
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    let assigned = system
        .command_as(
            &b,
            Method::POST,
            &format!("/sessions/{b_session}/agents"),
            Some(json!({"agent_id": agent})),
            &[],
        )
        .await;
    assert!(assigned.status.is_success(), "{}", assigned.body);

    system
        .wait_until_projected(std::time::Duration::from_secs(30))
        .await;
    assert_eq!(
        tenant_fingerprint(&system, &a.tenant_id).await,
        before,
        "B's requests wrote something of A's"
    );
    println!(
        "tenant probe: {} query probes and {} command probes by B, 0 leaks, A unchanged",
        probes.len(),
        command_routes(ac, asn).len() + 3
    );
    system.stop().await;
}
