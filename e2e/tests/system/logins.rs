//! The services log in to PostgreSQL as least-privileged roles: the request paths as
//! `ventros_app` (no superuser, no owner, no BYPASSRLS, no access to users or keys, history
//! insert-only), the work that spans tenants as `ventros_projector`. A statement injected into a
//! request's connection that resets its role finds itself `ventros_app` again.

use e2e::postgres::PrivatePostgres;
use e2e::process::ServiceProcess;
use e2e::{TestDb, TestStream, TestSystem};
use platform::db::{check_login, tenant_tx, Login};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// The logins `scripts/run.sh` gives the services, read from the file it sources, for the
/// database `name` on the test server.
fn run_sh_logins(name: &str) -> Vec<(&'static str, String)> {
    let server = url::Url::parse(&e2e::database_server()).expect("TEST_DATABASE_SERVER");
    let host = format!(
        "{}:{}",
        server.host_str().expect("a host"),
        server.port().unwrap_or(5432)
    );
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(
            "unset MIGRATION_DATABASE_URL DATABASE_URL SYSTEM_DATABASE_URL; \
             source scripts/local.env; \
             printf '%s\\n' \"$MIGRATION_DATABASE_URL\" \"$DATABASE_URL\" \"$SYSTEM_DATABASE_URL\"",
        )
        .current_dir(root)
        .env("VENTROS_DATABASE_SERVER", host)
        .env("VENTROS_DATABASE", name)
        .output()
        .expect("bash");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let urls: Vec<&str> = text.lines().collect();
    assert_eq!(urls.len(), 3, "{text}");
    vec![
        ("MIGRATION_DATABASE_URL", urls[0].to_owned()),
        ("DATABASE_URL", urls[1].to_owned()),
        ("SYSTEM_DATABASE_URL", urls[2].to_owned()),
    ]
}

#[tokio::test]
async fn the_services_as_run_sh_starts_them_are_connected_as_unprivileged_roles() {
    let db = TestDb::new().await;
    let stream = TestStream::new(None, 2);
    let mut env = stream.service_env(&db.url);
    env.retain(|(name, _)| !name.ends_with("DATABASE_URL"));
    env.extend(run_sh_logins(&db.name));
    let command = ServiceProcess::start("command-service", "COMMAND_ADDR", &env).await;
    let query = ServiceProcess::start("projection-service", "QUERY_ADDR", &env).await;

    // Every connection the services hold, with what its login could become (the listeners
    // connect in the background: read until every kind of connection is there).
    let expected = [
        "command-service request",
        "command-service system",
        "projection-service listener",
        "projection-service request",
        "projection-service system",
    ];
    let read = || async {
        sqlx::query_as::<_, (String, String, bool, bool, bool)>(
            "select a.application_name, a.usename::text, \
                    exists (select 1 from pg_roles r where r.rolsuper \
                             and pg_has_role(a.usesysid, r.oid, 'member')), \
                    exists (select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace \
                             where n.nspname = 'public' \
                               and pg_has_role(a.usesysid, c.relowner, 'member')), \
                    exists (select 1 from pg_roles r where r.rolbypassrls \
                             and pg_has_role(a.usesysid, r.oid, 'member')) \
               from pg_stat_activity a \
              where a.datname = $1 and a.application_name like '%-service %' \
              order by 1",
        )
        .bind(&db.name)
        .fetch_all(&db.pool)
        .await
        .unwrap()
    };
    e2e::wait_until(std::time::Duration::from_secs(10), || async {
        let rows = read().await;
        expected
            .iter()
            .all(|name| rows.iter().any(|r| r.0.starts_with(name)))
    })
    .await;
    // A projection instance's leases name the instance after the pool: "... system (<instance>)".
    let rows: Vec<_> = read()
        .await
        .into_iter()
        .map(|(name, user, superuser, owner, bypass)| {
            let pool = name.split(" (").next().unwrap_or_default().to_owned();
            (pool, user, superuser, owner, bypass)
        })
        .collect();
    let names: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names.into_iter().collect::<Vec<_>>(), expected, "{rows:?}");
    for (name, user, superuser, owner, bypass) in &rows {
        assert!(!superuser && !owner, "{name} logged in as {user}: {rows:?}");
        // The request paths, and the listener that wakes their `min_version` reads.
        if !name.ends_with("system") {
            assert_eq!((user.as_str(), *bypass), ("ventros_app", false), "{name}");
        } else {
            assert_eq!(user, "ventros_projector", "{name}");
        }
    }
    // And each says so on /metrics.
    let http = reqwest::Client::new();
    for service in [&command, &query] {
        let text = http
            .get(format!("{}/metrics", service.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for pool in ["request", "system"] {
            let line = format!("database_login_privileged{{pool=\"{pool}\"}} 0");
            assert!(text.contains(&line), "{line} not in:\n{text}");
        }
    }
}

#[tokio::test]
async fn a_service_logged_in_as_a_superuser_says_so() {
    let db = TestDb::new().await;
    let owner_login = platform::Settings {
        database_url: db.url.clone(),
        system_database_url: Some(db.url.clone()),
        ..e2e::settings_for(&db.url)
    };
    let least = e2e::settings_for(&db.url);
    assert!(
        check_login(&owner_login.app_pool("test").unwrap(), Login::Request)
            .await
            .unwrap()
    );
    assert!(
        check_login(&owner_login.system_pool("test", 1).unwrap(), Login::System)
            .await
            .unwrap()
    );
    assert!(
        !check_login(&least.app_pool("test").unwrap(), Login::Request)
            .await
            .unwrap()
    );
    assert!(
        !check_login(&least.system_pool("test", 1).unwrap(), Login::System)
            .await
            .unwrap()
    );
    // The projector bypasses row-level security: right for its work, too much for a request's.
    let projector_for_requests = platform::Settings {
        database_url: e2e::login_url(&db.url, "ventros_projector"),
        database_app_role: "ventros_projector".into(),
        ..e2e::settings_for(&db.url)
    };
    assert!(check_login(
        &projector_for_requests.app_pool("test").unwrap(),
        Login::Request
    )
    .await
    .unwrap());
}

/// Two tenants' users, keys, projects, contacts and events, written by the owner.
async fn two_tenants(db: &TestDb) -> (e2e::Tenant, Uuid) {
    let a = TestSystem::bootstrap_tenant(&db.pool, "tenant-a").await;
    TestSystem::bootstrap_tenant(&db.pool, "tenant-b").await;
    let mut contact_a = Uuid::nil();
    for tenant in ["tenant-a", "tenant-b"] {
        let id = Uuid::new_v4();
        sqlx::query(
            "with c as (insert into contacts (id, project_id, tenant_id, name) \
                        select $1, id, tenant_id, 'Contact of ' || tenant_id from projects \
                         where tenant_id = $2 returning id) \
             insert into contact_event_store (aggregate_id, aggregate_type, event_type, \
                        event_version, sequence_number, event_data, metadata, occurred_at, tenant_id) \
             select id, 'contact', 'contact.created', 'v1', 1, \
                    '{\"name\": \"Ada\", \"email\": \"ada@example.test\", \"tags\": []}', '{}', \
                    now(), $2 from c",
        )
        .bind(id)
        .bind(tenant)
        .execute(&db.pool)
        .await
        .unwrap();
        if tenant == "tenant-a" {
            contact_a = id;
        }
    }
    (a, contact_a)
}

/// The SQLSTATE a statement fails with (it must fail).
async fn refused(conn: &mut sqlx::PgConnection, sql: &str) -> String {
    match sqlx::query(sql).execute(&mut *conn).await {
        Ok(done) => panic!("{sql} was allowed ({} rows)", done.rows_affected()),
        Err(sqlx::Error::Database(e)) => e.code().unwrap_or_default().into_owned(),
        Err(e) => panic!("{sql}: {e}"),
    }
}

#[tokio::test]
async fn an_injected_reset_role_on_the_request_login_gains_nothing() {
    let db = TestDb::new().await;
    let (tenant, contact) = two_tenants(&db).await;
    // The request paths' pool, as the services build it.
    let app: PgPool = e2e::settings_for(&db.url).app_pool("test").unwrap();
    let mut conn = app.acquire().await.unwrap();
    sqlx::query("reset role").execute(&mut *conn).await.unwrap();
    let (user, current): (String, String) =
        sqlx::query_as("select session_user::text, current_user::text")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(
        (user.as_str(), current.as_str()),
        ("ventros_app", "ventros_app")
    );

    for sql in [
        "select * from users",
        "select * from user_api_keys",
        "select * from project_members",
        "update contact_event_store set event_type = event_type",
        "delete from contact_event_store",
        "update outbox_events set status = 'processed'",
        "delete from outbox_events",
        "truncate contact_event_store",
        "update contacts set name = 'taken over'",
        "delete from sessions",
        "insert into processed_events (event_id, consumer_name) values (gen_random_uuid(), 'x')",
        "alter table contacts disable row level security",
        "set role ventros_projector",
        "set role postgres",
        "set session authorization postgres",
    ] {
        assert_eq!(refused(&mut conn, sql).await, "42501", "{sql}");
    }
    // Without a tenant, no tenant's rows; with one, that tenant's only.
    let visible: i64 = sqlx::query_scalar(
        "select (select count(*) from contacts) + (select count(*) from contact_event_store)",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(visible, 0);
    drop(conn);
    let mut tx = tenant_tx(&app, &tenant.tenant_id).await.unwrap();
    let ids: Vec<Uuid> = sqlx::query_scalar("select aggregate_id from contact_event_store")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(ids, [contact]);
    // The one sanctioned way to the keys: the lookup function, for exactly the key and project.
    let role: Option<String> = sqlx::query_scalar("select role from authenticate_api_key($1, $2)")
        .bind(platform::auth::hash_api_key(&tenant.api_key))
        .bind(tenant.project_id)
        .fetch_optional(&mut *tx)
        .await
        .unwrap();
    assert_eq!(role.as_deref(), Some("owner"));
    tx.rollback().await.unwrap();

    // The owner, for contrast, may do what the request login may not.
    let as_owner: i64 = sqlx::query_scalar("select count(*) from user_api_keys")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(as_owner, 2);
}

/// Calls the redaction function as the request login in `tenant`, answering how many events it
/// rewrote.
async fn redact(app: &PgPool, tenant: &str, id: Uuid, data: Value) -> i64 {
    let mut tx = tenant_tx(app, tenant).await.unwrap();
    let n: i64 = sqlx::query_scalar("select redact_forgotten_plain_events($1, $2)")
        .bind(vec![id])
        .bind(vec![data])
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    n
}

#[tokio::test]
async fn history_is_rewritten_by_the_request_login_only_as_a_forgotten_contacts_redaction() {
    let db = TestDb::new().await;
    let (tenant, contact) = two_tenants(&db).await;
    let app = e2e::settings_for(&db.url).app_pool("test").unwrap();
    let event: Uuid = sqlx::query_scalar(
        "select id from contact_event_store where aggregate_id = $1 and sequence_number = 1",
    )
    .bind(contact)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let redacted = json!({"tags": [], "personal": null});
    let stored = || async {
        sqlx::query_as::<_, (String, Value)>(
            "select event_version, event_data from contact_event_store where id = $1",
        )
        .bind(event)
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    let original = stored().await;

    // Not forgotten: nothing may be taken away.
    assert_eq!(redact(&app, "tenant-a", event, redacted.clone()).await, 0);
    sqlx::query(
        "insert into contact_event_store (aggregate_id, aggregate_type, event_type, \
                event_version, sequence_number, event_data, metadata, occurred_at, tenant_id) \
         values ($1, 'contact', 'contact.forgotten', 'v2', 2, '{\"reason\": null}', '{}', now(), $2)",
    )
    .bind(contact)
    .bind(&tenant.tenant_id)
    .execute(&db.pool)
    .await
    .unwrap();
    // Forgotten, but what is asked is more than a redaction, or in another tenant.
    for (tenant_id, data) in [
        ("tenant-a", json!({"tags": ["changed"], "personal": null})),
        (
            "tenant-a",
            json!({"tags": [], "added": true, "personal": null}),
        ),
        ("tenant-a", json!({"tags": [], "personal": "pd1:forged"})),
        ("tenant-a", json!({"tags": []})),
        ("tenant-a", json!("not an object")),
        ("tenant-b", redacted.clone()),
    ] {
        assert_eq!(
            redact(&app, tenant_id, event, data.clone()).await,
            0,
            "{tenant_id} {data}"
        );
    }
    assert_eq!(stored().await, original, "untouched");

    assert_eq!(redact(&app, "tenant-a", event, redacted.clone()).await, 1);
    assert_eq!(stored().await, ("v2".to_owned(), redacted.clone()));
    // Once `v2`, it cannot be rewritten again.
    assert_eq!(
        redact(&app, "tenant-a", event, json!({"personal": null})).await,
        0
    );
}

/// A database URL on the TLS server `pg` as `user`, verifying the server against `ca` and its
/// name (`sslmode=verify-full`) unless `mode` says otherwise.
fn tls_url(
    pg: &PrivatePostgres,
    host: &str,
    user: &str,
    mode: &str,
    ca: &std::path::Path,
) -> String {
    format!(
        "postgres://{user}@{host}:{}/ventros_tls?sslmode={mode}&sslrootcert={}",
        pg.port,
        ca.display()
    )
}

#[tokio::test]
async fn the_services_reach_postgresql_over_verified_tls() {
    let pg = PrivatePostgres::start_with_tls().await;
    let ca = pg.ca_file();
    let owner = tls_url(&pg, "localhost", "postgres", "verify-full", &ca);
    let stream = TestStream::new(None, 2);
    let mut env = stream.service_env(&owner);
    env.retain(|(name, _)| !name.ends_with("DATABASE_URL"));
    env.extend([
        ("MIGRATION_DATABASE_URL", owner.clone()),
        (
            "DATABASE_URL",
            tls_url(&pg, "localhost", "ventros_app", "verify-full", &ca),
        ),
        (
            "SYSTEM_DATABASE_URL",
            tls_url(&pg, "localhost", "ventros_projector", "verify-full", &ca),
        ),
    ]);
    // The services create and migrate the database over TLS themselves.
    let command = ServiceProcess::start("command-service", "COMMAND_ADDR", &env).await;
    let query = ServiceProcess::start("projection-service", "QUERY_ADDR", &env).await;
    let pool = platform::db::connect_and_migrate(&owner, 2).await.unwrap();
    let tenant = TestSystem::bootstrap_tenant(&pool, "tenant-a").await;

    e2e::process::contact_round_trip(&command.url(), &query.url(), &tenant).await;

    // Every connection of the services is encrypted.
    let connections: Vec<(String, bool)> = sqlx::query_as(
        "select a.application_name, coalesce(s.ssl, false) from pg_stat_activity a \
           left join pg_stat_ssl s on s.pid = a.pid \
          where a.datname = 'ventros_tls' and a.application_name like '%-service %'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(connections.len() >= 4, "{connections:?}");
    assert!(connections.iter().all(|(_, ssl)| *ssl), "{connections:?}");

    // Nothing less is accepted: no TLS, a server the CA did not sign, a name the certificate
    // does not hold.
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = e2e::postgres::make_ca(other_dir.path(), "other");
    for (url, why) in [
        (
            tls_url(&pg, "localhost", "ventros_app", "disable", &ca),
            "plain TCP is rejected by the server",
        ),
        (
            tls_url(&pg, "localhost", "ventros_app", "verify-full", &other_ca),
            "a certificate another CA signed",
        ),
        (
            tls_url(&pg, "127.0.0.1", "ventros_app", "verify-full", &ca),
            "a name not in the certificate",
        ),
    ] {
        let refused = sqlx::PgPool::connect(&url).await;
        assert!(refused.is_err(), "{why}: connected");
    }
    // And the same URL with the right name and CA connects (so the refusals are about them).
    sqlx::PgPool::connect(&tls_url(
        &pg,
        "localhost",
        "ventros_app",
        "verify-full",
        &ca,
    ))
    .await
    .expect("verified TLS");
}
