//! Row-level security binds the application role: with `app.current_tenant_id` set it sees and
//! writes only that tenant's rows, without it nothing; the projector role sees every tenant; a
//! superuser is unaffected. (What the application role may write at all is in `privileges.rs`;
//! these tests write notes and snapshots, which it may.)

use e2e::TestDb;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::inventory;

struct Tenants {
    contact_a: Uuid,
    note_a: Uuid,
    note_b: Uuid,
    project_a: Uuid,
}

/// Two tenants' users, projects, contacts and notes, inserted as the superuser.
async fn two_tenants(pool: &PgPool) -> Tenants {
    let mut ids = Vec::new();
    for tenant in ["tenant-a", "tenant-b"] {
        let (project, contact, note): (Uuid, Uuid, Uuid) = sqlx::query_as(
            "with u as (insert into users (name, email, password_hash) \
                        values ($1, $1 || '@example.test', '!') returning id), \
                  p as (insert into projects (user_id, tenant_id, name) \
                        select id, $1, 'Project ' || $1 from u returning id), \
                  c as (insert into contacts (project_id, tenant_id, name) \
                        select id, $1, 'Contact of ' || $1 from p returning id), \
                  n as (insert into notes (contact_id, tenant_id, author_id, author_type, \
                                           author_name, content, note_type) \
                        select id, $1, gen_random_uuid(), 'agent', 'An agent', 'Note of ' || $1, \
                               'general' from c returning id) \
             select p.id, c.id, n.id from p, c, n",
        )
        .bind(tenant)
        .fetch_one(pool)
        .await
        .expect("insert a tenant");
        ids.push((project, contact, note));
    }
    Tenants {
        project_a: ids[0].0,
        contact_a: ids[0].1,
        note_a: ids[0].2,
        note_b: ids[1].2,
    }
}

async fn ids(conn: &mut PgConnection, table: &str) -> Vec<Uuid> {
    sqlx::query_scalar(&format!("select id from {table} order by tenant_id"))
        .fetch_all(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_application_role_sees_and_changes_only_the_current_tenants_rows() {
    let db = TestDb::new().await;
    let t = two_tenants(&db.pool).await;

    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("set local role ventros_app")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("set local app.current_tenant_id = 'tenant-a'")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(ids(&mut tx, "contacts").await, vec![t.contact_a]);
    assert_eq!(ids(&mut tx, "notes").await, vec![t.note_a]);
    assert_eq!(ids(&mut tx, "projects").await, vec![t.project_a]);

    // Another tenant's row can be neither changed nor removed: the statement finds nothing.
    let updated = sqlx::query("update notes set content = 'taken over' where id = $1")
        .bind(t.note_b)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 0);
    let deleted = sqlx::query("delete from notes where id = $1")
        .bind(t.note_b)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 0);

    // Its own rows it may change, and insert.
    let renamed = sqlx::query("update notes set content = 'Renamed' where id = $1")
        .bind(t.note_a)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(renamed.rows_affected(), 1);
    sqlx::query(
        "insert into contact_snapshots (aggregate_id, snapshot_data, last_sequence_number, \
                                        tenant_id) values ($1, '{}', 1, 'tenant-a')",
    )
    .bind(t.contact_a)
    .execute(&mut *tx)
    .await
    .expect("an insert for the current tenant");
    tx.commit().await.unwrap();

    let notes: Vec<String> =
        sqlx::query_scalar("select content from notes where tenant_id = 'tenant-b'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(notes, vec!["Note of tenant-b"], "tenant-b is untouched");
}

#[tokio::test]
async fn a_row_for_another_tenant_is_refused() {
    let db = TestDb::new().await;
    let t = two_tenants(&db.pool).await;

    let attempts = [
        (
            "insert into contact_snapshots (aggregate_id, snapshot_data, last_sequence_number, \
                                            tenant_id) values ($1, '{}', 1, 'tenant-b')",
            t.contact_a,
        ),
        (
            "insert into notes (contact_id, tenant_id, author_id, author_type, author_name, \
                                content, note_type) \
             values ($1, 'tenant-b', gen_random_uuid(), 'agent', 'A', 'Smuggled', 'general')",
            t.contact_a,
        ),
        // moving one's own row to another tenant is refused too (with check).
        (
            "update notes set tenant_id = 'tenant-b' where id = $1",
            t.note_a,
        ),
    ];
    for (sql, id) in attempts {
        let mut tx = db.pool.begin().await.unwrap();
        sqlx::query("set local role ventros_app")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("set local app.current_tenant_id = 'tenant-a'")
            .execute(&mut *tx)
            .await
            .unwrap();
        let error = sqlx::query(sql)
            .bind(id)
            .execute(&mut *tx)
            .await
            .expect_err(sql);
        let sqlx::Error::Database(error) = error else {
            panic!("{sql}: {error}");
        };
        assert_eq!(error.code().as_deref(), Some("42501"), "{sql}: {error}");
        assert!(
            error.message().contains("row-level security"),
            "{sql}: {}",
            error.message()
        );
        tx.rollback().await.unwrap();
    }
    let smuggled: i64 = sqlx::query_scalar(
        "select (select count(*) from contacts where tenant_id = 'tenant-b') \
              + (select count(*) from notes where tenant_id = 'tenant-b') \
              + (select count(*) from contact_snapshots)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(smuggled, 2, "only tenant-b's own contact and note");
}

#[tokio::test]
async fn without_the_tenant_setting_the_application_role_sees_nothing() {
    let db = TestDb::new().await;
    two_tenants(&db.pool).await;
    let inventory = inventory::load();
    let tenant_tables: Vec<&str> = inventory
        .tables
        .iter()
        .filter(|t| t.rls)
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(
        tenant_tables.len(),
        30,
        "the 27 tenant tables of 0016, dead_letter_events, contact_data_keys and webhook_deliveries"
    );

    let mut conn = db.pool.acquire().await.unwrap();
    // Never set on this connection (null), then set and ended with its transaction (''): both
    // mean no tenant, as on a pooled connection a previous transaction used.
    for round in ["never set", "ended with its transaction"] {
        if round == "ended with its transaction" {
            let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
            sqlx::query("set local app.current_tenant_id = 'tenant-a'")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        sqlx::query("set local role ventros_app")
            .execute(&mut *tx)
            .await
            .unwrap();
        for table in &tenant_tables {
            let visible = e2e::db::rows(&mut *tx, table).await;
            assert_eq!(visible, 0, "{table}, tenant {round}");
        }
        tx.rollback().await.unwrap();
    }

    // A superuser (the test's login) and the projector see every tenant.
    assert_eq!(e2e::db::rows(&db.pool, "contacts").await, 2);
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("set local role ventros_projector")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        e2e::db::rows(&mut *tx, "contacts").await,
        2,
        "the projector's batches mix tenants"
    );
    tx.rollback().await.unwrap();
}

/// `tenant_tx` sends the tenant as a quoted literal (one round trip with `BEGIN`): quotes,
/// backslashes and SQL-looking text arrive exactly as given, and the setting ends with the
/// transaction.
#[tokio::test]
async fn a_tenant_transaction_sets_exactly_the_tenant_given_and_only_for_itself() {
    let db = TestDb::new().await;
    for tenant in [
        "plain",
        "o'brien",
        r"back\slash\'",
        "x'); select pg_sleep(10); --",
        "ünïcødé 🦀",
    ] {
        let mut tx = platform::db::tenant_tx(&db.pool, tenant)
            .await
            .expect("begin");
        let set: String = sqlx::query_scalar("select current_setting('app.current_tenant_id')")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(set, tenant);
        tx.commit().await.unwrap();
    }
    assert!(
        platform::db::tenant_tx(&db.pool, "nul\0").await.is_err(),
        "a NUL cannot be a tenant id"
    );
    let after: Option<String> =
        sqlx::query_scalar("select nullif(current_setting('app.current_tenant_id', true), '')")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(after, None, "the setting is transaction-local");
}
