//! Acceptance 8: another tenant's ids are 404 on every route and change nothing; a viewer cannot
//! send commands; a missing or bad key is 401.

use e2e::{Tenant, TestSystem};
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
            Some(json!({"channel_type_id": 1, "from_contact": true})),
            &[],
        )
        .await;
    (b, contact, inbound.id("session_id"))
}

#[tokio::test]
async fn another_tenants_ids_are_not_found_on_every_route_and_nothing_changes() {
    let system = TestSystem::start().await;
    let (b, contact, session) = tenant_b_with_data(&system).await;
    // Let B's rows reach the read model, so a leak would have something to show.
    let seen = system
        .query_as(&b, &format!("/sessions/{session}?min_version=2"))
        .await;
    assert_eq!(seen.status, StatusCode::OK);
    let before = system
        .count("select count(*) from contact_event_store")
        .await;

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
    ] {
        let reply = system.query(&path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(
            reply.body["items"],
            json!([]),
            "{path} leaks another tenant's rows"
        );
    }
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

    assert_eq!(
        system
            .count("select count(*) from contact_event_store")
            .await,
        before,
        "nothing was written"
    );
    system.stop().await;
}

#[tokio::test]
async fn viewers_read_but_cannot_command_and_keys_must_be_valid() {
    let system = TestSystem::start().await;
    let contact = system.create_contact(json!({"name": "Seen"})).await;
    let viewer = system.add_member(&system.tenant, "viewer").await;
    let agent = system.add_member(&system.tenant, "agent").await;
    let before = system
        .count("select count(*) from contact_event_store")
        .await;

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
        system
            .count("select count(*) from contact_event_store")
            .await,
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
    assert_eq!(
        system
            .count("select count(*) from contact_event_store")
            .await,
        before + 1
    );
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
        let n: i64 = sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&db.pool)
            .await
            .unwrap();
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
    let system = TestSystem::start().await;
    let (b, _, _) = tenant_b_with_data(&system).await;
    system.create_contact(json!({"name": "A's"})).await;
    system
        .wait_until_projected(std::time::Duration::from_secs(20))
        .await;

    // The pool the request paths use, built as the services build it.
    let settings = platform::Settings {
        database_url: system.db.url.clone(),
        database_max_connections: 2,
        database_app_role: "ventros_app".into(),
        database_system_role: "ventros_projector".into(),
        nats_url: String::new(),
        nats_stream: String::new(),
        nats_subject_prefix: String::new(),
        nats_stream_replicas: 1,
        event_partitions: 1,
    };
    let app = settings.app_pool(&system.db.pool).await.unwrap();
    let (user, superuser): (String, bool) = sqlx::query_as(
        "select current_user::text, rolsuper from pg_roles where rolname = current_user",
    )
    .fetch_one(&app)
    .await
    .unwrap();
    assert_eq!((user.as_str(), superuser), ("ventros_app", false));

    // A query that forgets the tenant filter sees nothing without a tenant, and only its
    // tenant's rows with one.
    let all: i64 = sqlx::query_scalar("select count(*) from contacts")
        .fetch_one(&app)
        .await
        .unwrap();
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
        let write = sqlx::query("update contacts set name = 'hijacked' where tenant_id <> $1")
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(
            write.rows_affected(),
            0,
            "{tenant} changes no other tenant's rows"
        );
    }
    system.stop().await;
}
