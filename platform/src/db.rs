//! The PostgreSQL pool: created database, applied migrations, UTC sessions.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgPool, Postgres, Transaction};

/// The project's migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Connects, creating the database if it is missing, and applies the migrations.
pub async fn connect_and_migrate(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options = connect_options(url)?;
    create_database_if_missing(&options).await?;
    let pool = pool(options, max_connections).await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

pub fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    // Every timestamp column is `timestamp` (without time zone) holding UTC: make the session say
    // so, so that binding a `DateTime<Utc>` never shifts it.
    Ok(PgConnectOptions::from_str(url)?
        .options([("timezone", "UTC")])
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500)))
}

pub async fn pool(options: PgConnectOptions, max_connections: u32) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?)
}

/// A pool that connects when first used, without creating or migrating anything (a read
/// replica's).
pub fn pool_lazy(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(connect_options(url)?))
}

async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = sqlx::PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let sql = format!("create database \"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&sql).execute(&mut admin).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it between our check and our create.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    admin.close().await?;
    Ok(())
}

/// Whether an error is a unique violation of the named constraint.
pub fn is_unique_violation(error: &sqlx::Error, constraint: &str) -> bool {
    matches!(error, sqlx::Error::Database(e)
        if e.code().as_deref() == Some("23505") && e.constraint() == Some(constraint))
}

/// A pool on the same server and database as `owner` whose connections run as `role` (`set role`
/// right after connecting; the connecting user must be a member of it). An empty role keeps the
/// connecting user.
pub async fn role_pool(owner: &PgPool, max_connections: u32, role: &str) -> anyhow::Result<PgPool> {
    role_pool_with(owner, max_connections, role, None::<String>).await
}

/// Set on every connection of the cross-tenant pool: the outbox relay and the projection workers.
/// They run the same few statements for hours while the tables grow from empty, and PostgreSQL
/// keeps the generic plan it settled on after five executions until the table is next analyzed.
/// Settled on while the tables were tiny, those plans scanned them whole: the relay's batch query
/// scanned the event store once per pending row (1.3 to 2.2 s a batch), the workers' duplicate
/// check walked every `processed_events` row of its projection (58 ms a batch), for the first
/// minutes of a fresh system. Their statements run once per batch, so planning each execution
/// for the tables as they are costs a fraction of a millisecond per batch. (Request paths keep
/// the plan cache: they run several statements per request.)
pub const PLAN_PER_EXECUTION: &str = "set plan_cache_mode = force_custom_plan";

/// [`role_pool`], each connection also running `setup` once.
pub async fn role_pool_with(
    owner: &PgPool,
    max_connections: u32,
    role: &str,
    setup: Option<impl Into<String>>,
) -> anyhow::Result<PgPool> {
    let setup: Option<String> = setup.map(Into::into);
    let options = owner.connect_options().as_ref().clone();
    let set_role =
        (!role.is_empty()).then(|| format!("set role \"{}\"", role.replace('"', "\"\"")));
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(move |conn, _| {
            let (set_role, setup) = (set_role.clone(), setup.clone());
            Box::pin(async move {
                if let Some(sql) = set_role {
                    conn.execute(sql.as_str()).await?;
                }
                if let Some(sql) = setup {
                    conn.execute(sql.as_str()).await?;
                }
                Ok(())
            })
        })
        .connect_lazy_with(options))
}

/// A transaction in one tenant: row-level security shows and accepts that tenant's rows only.
///
/// `BEGIN` and setting the tenant go to the server as one simple query: one round trip, where a
/// `BEGIN` followed by a bound `set_config` took two on every command and query.
pub async fn tenant_tx<'a>(
    pool: &'a PgPool,
    tenant_id: &str,
) -> Result<Transaction<'a, Postgres>, sqlx::Error> {
    if tenant_id.contains('\0') {
        // PostgreSQL text cannot hold NUL, so no tenant id does.
        return Err(sqlx::Error::Encode("a tenant id cannot contain NUL".into()));
    }
    pool.begin_with(begin_in_tenant(tenant_id)).await
}

/// `BEGIN` plus the transaction-local tenant setting, the tenant quoted as a SQL literal.
fn begin_in_tenant(tenant_id: &str) -> String {
    format!(
        "begin; select set_config('app.current_tenant_id', {}, true)",
        quote_literal(tenant_id)
    )
}

/// A SQL string literal of `value`: `E'...'` with quotes and backslashes escaped, so it reads the
/// same whatever `standard_conforming_strings` is. The caller refuses NUL, which text cannot hold.
fn quote_literal(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 3);
    quoted.push_str("E'");
    for c in value.chars() {
        match c {
            '\'' => quoted.push_str("''"),
            '\\' => quoted.push_str("\\\\"),
            c => quoted.push(c),
        }
    }
    quoted.push('\'');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(quote_literal("acme"), "E'acme'");
        assert_eq!(quote_literal("o'brien"), "E'o''brien'");
        assert_eq!(
            quote_literal(r"a\'; drop table x; --"),
            r"E'a\\''; drop table x; --'"
        );
    }
}
