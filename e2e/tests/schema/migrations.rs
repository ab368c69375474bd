//! The migrations apply from zero on an empty database, re-run as a no-op, apply on several
//! databases at once (the roles they create are cluster-wide), and each runs inside one
//! transaction.

use std::collections::BTreeSet;

use futures::future::try_join_all;
use platform::db::MIGRATOR;
use sqlx::PgPool;
use uuid::Uuid;

/// A database of its own, created empty (unlike `e2e::TestDb`, which migrates it), dropped
/// afterwards.
struct EmptyDb {
    name: String,
    pool: PgPool,
}

impl EmptyDb {
    async fn create() -> Self {
        Self::create_on(&e2e::database_server()).await
    }

    async fn create_on(server: &str) -> Self {
        let name = format!("ventros_test_{}", Uuid::new_v4().simple());
        let admin = PgPool::connect(&format!("{server}/postgres"))
            .await
            .expect("server");
        sqlx::query(&format!("create database \"{name}\""))
            .execute(&admin)
            .await
            .expect("create database");
        admin.close().await;
        let options = platform::db::connect_options(&format!("{server}/{name}")).unwrap();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .expect("pool");
        Self { name, pool }
    }

    async fn drop(self) {
        self.pool.close().await;
        let admin = PgPool::connect(&format!("{}/postgres", e2e::database_server()))
            .await
            .expect("server");
        sqlx::query(&format!(
            "drop database if exists \"{}\" with (force)",
            self.name
        ))
        .execute(&admin)
        .await
        .expect("drop database");
        admin.close().await;
    }
}

async fn public_tables(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace \
         where n.nspname = 'public' and c.relkind = 'r'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The versions of the files in `migrations/`.
fn migration_files() -> BTreeSet<i64> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let version = name.strip_suffix(".sql")?.split('_').next()?.parse().ok()?;
            Some(version)
        })
        .collect()
}

#[tokio::test]
async fn migrations_apply_from_zero_concurrently_and_rerun_as_a_no_op() {
    let dbs = [
        EmptyDb::create().await,
        EmptyDb::create().await,
        EmptyDb::create().await,
    ];
    for db in &dbs {
        assert_eq!(public_tables(&db.pool).await, 0, "starts empty");
    }

    // From zero, three databases at once: the roles are created (or found) by each.
    try_join_all(dbs.iter().map(|db| MIGRATOR.run(&db.pool)))
        .await
        .expect("migrations apply from zero");
    let migrated = public_tables(&dbs[0].pool).await;
    assert!(
        migrated >= 45,
        "44 tables and _sqlx_migrations, found {migrated}"
    );

    // Again: nothing to do, nothing fails, nothing changes.
    for db in &dbs {
        MIGRATOR.run(&db.pool).await.expect("a re-run is a no-op");
        MIGRATOR.run(&db.pool).await.expect("a re-run is a no-op");
        assert_eq!(public_tables(&db.pool).await, migrated);
    }

    let applied: Vec<(i64, bool, Vec<u8>)> =
        sqlx::query_as("select version, success, checksum from _sqlx_migrations order by version")
            .fetch_all(&dbs[0].pool)
            .await
            .unwrap();
    let embedded: Vec<(i64, bool, Vec<u8>)> = MIGRATOR
        .iter()
        .map(|m| (m.version, true, m.checksum.to_vec()))
        .collect();
    assert_eq!(
        applied, embedded,
        "every migration applied once, successfully, unchanged"
    );
    assert_eq!(
        applied.iter().map(|(v, _, _)| *v).collect::<BTreeSet<_>>(),
        migration_files(),
        "_sqlx_migrations lists every file of migrations/"
    );
    assert!(
        migration_files().is_superset(&(1..=16).collect()),
        "0001 … 0016 are all there"
    );

    assert!(
        crate::schema_differences(&dbs[1].pool).await.is_empty(),
        "the migrator alone gives the inventory's schema"
    );
    for db in dbs {
        db.drop().await;
    }
}

/// sqlx runs a migration in a transaction unless its file starts with `-- no-transaction`; none
/// does, and none holds a statement that cannot run inside one (or that ends it).
#[test]
fn every_migration_runs_inside_one_transaction() {
    const OUTSIDE_A_TRANSACTION: [&str; 9] = [
        "concurrently",
        "vacuum",
        "create database",
        "drop database",
        "alter system",
        "reindex",
        "create tablespace",
        "commit",
        "rollback",
    ];
    assert!(MIGRATOR.iter().count() >= 16);
    for m in MIGRATOR.iter() {
        assert!(
            !m.no_tx,
            "{} {} opts out of its transaction",
            m.version, m.description
        );
        let code: String = m
            .sql
            .lines()
            .map(|line| line.split("--").next().unwrap_or_default().to_lowercase())
            .collect::<Vec<_>>()
            .join("\n");
        for statement in OUTSIDE_A_TRANSACTION {
            assert!(
                !code.contains(statement),
                "{} {} contains `{statement}`, which cannot run inside sqlx's transaction",
                m.version,
                m.description
            );
        }
    }
}

/// On a server that has never seen the project, several databases migrating at once all create
/// or find the cluster-wide roles and make them logins (a role altered by two migrations at the
/// same moment must not fail either).
#[tokio::test]
async fn on_a_fresh_server_databases_migrating_at_once_all_get_the_login_roles() {
    let server = e2e::postgres::PrivatePostgres::start().await;
    let mut dbs = Vec::new();
    for _ in 0..6 {
        dbs.push(EmptyDb::create_on(&server.url()).await);
    }
    try_join_all(dbs.iter().map(|db| MIGRATOR.run(&db.pool)))
        .await
        .expect("migrations apply from zero, all at once");
    let roles: Vec<(String, bool, bool)> = sqlx::query_as(
        "select rolname::text, rolcanlogin, rolbypassrls from pg_roles \
          where rolname like 'ventros%' order by 1",
    )
    .fetch_all(&dbs[0].pool)
    .await
    .unwrap();
    assert_eq!(
        roles,
        [
            ("ventros_app".to_owned(), true, false),
            ("ventros_projector".to_owned(), true, true)
        ]
    );
}
