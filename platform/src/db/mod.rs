//! The PostgreSQL pool: created database, applied migrations, UTC sessions; one server or
//! several in libpq's multi-host form ([`hosts`], [`failover`]).

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgConnection, PgPool, Postgres, Transaction};

mod failover;
pub mod hosts;

pub use hosts::{host_port, without_password, SessionAttrs, Target};

/// The project's migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Connects (to the first host that qualifies, for a URL of several), creating the database if
/// it is missing, and applies the migrations.
pub async fn connect_and_migrate(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let target = Target::parse(url)?.map(tune);
    let first = if target.watched() {
        failover::find(&target).await?
    } else {
        target.hosts[0].clone()
    };
    create_database_if_missing(&first).await?;
    let pool = pool_on(target, max_connections, "", None::<String>);
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// The options of a connection to `url`, which names one server: the session in UTC, and a
/// statement slower than 500 ms logged as a warning. A URL of several hosts is refused: only a
/// pool ([`login_pool`]) follows them.
pub fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    let target = Target::parse(url)?;
    anyhow::ensure!(
        !target.watched(),
        "{} names several hosts or a target_session_attrs: only the services' pools follow them",
        without_password(url)
    );
    Ok(tune(target.hosts.into_iter().next().expect("one host")))
}

/// What every connection of the services is: the session in UTC, slow statements logged.
fn tune(options: PgConnectOptions) -> PgConnectOptions {
    // Every timestamp column is `timestamp` (without time zone) holding UTC: make the session say
    // so, so that binding a `DateTime<Utc>` never shifts it.
    options
        .options([("timezone", "UTC")])
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500))
}

async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = sqlx::PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists = sqlx::query_scalar!(
        r#"select exists (select 1 from pg_database where datname = $1) as "exists!""#,
        &name,
    )
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

/// Set on every connection of the cross-tenant pool (the sweepers, retention, dead letters, and
/// the relay's and workers' connections until they switch to [`GenericPlans`]). These statements
/// run for hours while the tables grow from empty, and PostgreSQL keeps a generic plan until the
/// table is next analyzed: one settled on while the tables are tiny scans them whole once they
/// are not (the relay's batch query would scan the event store once per pending row). Planning
/// every execution costs a little CPU per statement, which only the relay's and the workers' hot
/// statements cannot afford.
pub const PLAN_PER_EXECUTION: &str = "set plan_cache_mode = force_custom_plan";

/// The plans of a long-lived connection that runs the same few statements all day: the relay's,
/// a projection worker's lease. Each statement is planned once (`force_generic_plan`) instead of
/// on every execution: these statements run so often that planning each one would be a large
/// share of PostgreSQL's CPU with the whole pipeline live. The plans are thrown away every
/// `every` (`discard plans`: the prepared statements stay, each is planned again at its next
/// execution, for the tables as they are then), so a plan made while a table was tiny, the
/// danger of [`PLAN_PER_EXECUTION`], lasts that long at most.
#[derive(Debug)]
pub struct GenericPlans {
    every: Duration,
    /// When the plans are next thrown away; `None` until the connection switched.
    due: Option<std::time::Instant>,
}

impl GenericPlans {
    /// How long a plan lives on such a connection.
    pub const EVERY: Duration = Duration::from_secs(5);

    /// Plans kept for `every` at most (the services use [`GenericPlans::EVERY`]); the
    /// connection is switched at the first [`GenericPlans::refresh`].
    pub fn new(every: Duration) -> Self {
        Self { every, due: None }
    }

    /// Call before a unit of work on `conn` (always the same connection): switches it to generic
    /// plans the first time, and throws its plans away when they are due. Costs a statement
    /// every `every`, nothing in between.
    pub async fn refresh(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let now = std::time::Instant::now();
        let sql = match self.due {
            None => "set plan_cache_mode = force_generic_plan",
            Some(due) if now >= due => "discard plans",
            Some(_) => return Ok(()),
        };
        conn.execute(sql).await?;
        self.due = Some(now + self.every);
        Ok(())
    }
}

/// A pool logged in with `url`, its connections named `application_name` (as
/// `pg_stat_activity` shows them) unless the URL names them, and running as `role` (`set role`
/// right after connecting, then `setup`, once per connection; an empty role keeps the login, and
/// a login that is more than the role is [`check_login`]'s warning). It connects when first used;
/// for a URL of several hosts, to the first that qualifies, and elsewhere after a failover.
pub fn login_pool(
    url: &str,
    application_name: &str,
    max_connections: u32,
    role: &str,
    setup: Option<impl Into<String>>,
) -> anyhow::Result<PgPool> {
    let target = Target::parse(url)?.map(|options| {
        let options = tune(options);
        match options.get_application_name() {
            Some(_) => options,
            None => options.application_name(application_name),
        }
    });
    if target.hosts.len() > 1 && target.attrs == SessionAttrs::Any {
        tracing::warn!(
            url = %without_password(url),
            "a database URL of several hosts without target_session_attrs: a connection may land \
             on a standby (add target_session_attrs=read-write for the primary)"
        );
    }
    Ok(pool_on(target, max_connections, role, setup))
}

/// A pool whose connections run as `role` (`set role` right after connecting: a no-op when the
/// login is that role, which is how production runs; a login that is a member of it works too,
/// with the warning of [`check_login`]) and then `setup`, once each; an empty role keeps the
/// login. A request for a connection waits 5 s at most. Over several hosts (or one that must be
/// of a kind) a watcher steers the pool, each new connection is checked, and those made before
/// the pool last moved are closed rather than handed out.
fn pool_on(
    target: Target,
    max_connections: u32,
    role: &str,
    setup: Option<impl Into<String>>,
) -> PgPool {
    let setup: Option<String> = setup.map(Into::into);
    let set_role =
        (!role.is_empty()).then(|| format!("set role \"{}\"", role.replace('"', "\"\"")));
    let watch = target
        .watched()
        .then(|| failover::Watch::new(target.clone()));
    let checked = watch.clone();
    let mut options = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(move |conn, _| {
            let (set_role, setup, checked) = (set_role.clone(), setup.clone(), checked.clone());
            Box::pin(async move {
                if let Some(watch) = checked {
                    watch.check(conn).await?;
                }
                if let Some(sql) = set_role {
                    conn.execute(sql.as_str()).await?;
                }
                if let Some(sql) = setup {
                    conn.execute(sql.as_str()).await?;
                }
                Ok(())
            })
        });
    if let Some(watch) = watch.clone() {
        options = options.before_acquire(move |_, meta| {
            let keep = watch.keeps(meta.age);
            Box::pin(async move { Ok(keep) })
        });
    }
    let first = target.hosts.into_iter().next().expect("a URL names a host");
    let pool = options.connect_lazy_with(first);
    if let Some(watch) = watch {
        Arc::clone(&watch).spawn(pool.clone());
    }
    pool
}

/// What a pool's work needs of its login, and so what would be more than it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// The request paths: one tenant per transaction, bound by row-level security.
    Request,
    /// The work that spans tenants: it bypasses row-level security by design.
    System,
}

impl Login {
    fn label(self) -> &'static str {
        match self {
            Login::Request => "request",
            Login::System => "system",
        }
    }
}

/// Whether the pool's login holds more than its work needs: a superuser, a member of the
/// tables' owner, or (for request paths) a role that bypasses row-level security or may become
/// one. Such a login is what an injected `reset role` or `set role` returns to. Logs a warning
/// and exports `database_login_privileged{pool}` (1 or 0); connects once to find out.
pub async fn check_login(pool: &PgPool, login: Login) -> anyhow::Result<bool> {
    let row = sqlx::query!(
        r#"select session_user::text as "user!",
                  exists (select 1 from pg_roles r where r.rolsuper
                           and pg_has_role(session_user, r.oid, 'member')) as "superuser!",
                  exists (select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace
                           where n.nspname = 'public' and c.relkind in ('r', 'p')
                             and pg_has_role(session_user, c.relowner, 'member')) as "owner!",
                  exists (select 1 from pg_roles r where r.rolbypassrls
                           and pg_has_role(session_user, r.oid, 'member')) as "bypass!""#,
    )
    .fetch_one(pool)
    .await?;
    let privileged = row.superuser || row.owner || (login == Login::Request && row.bypass);
    metrics::gauge!("database_login_privileged", "pool" => login.label()).set(if privileged {
        1.0
    } else {
        0.0
    });
    if privileged {
        tracing::warn!(
            pool = login.label(),
            login = %row.user,
            superuser = row.superuser,
            owner = row.owner,
            bypassrls = row.bypass,
            "logged in to PostgreSQL with more privileges than this work needs: a statement that \
             resets its role gains them. Log in as the service's own role (README \"Security\")"
        );
    }
    Ok(privileged)
}

/// A transaction in one tenant: row-level security shows and accepts that tenant's rows only.
///
/// `BEGIN` and setting the tenant go to the server as one simple query: one round trip on every
/// command and query, where a `BEGIN` followed by a bound `set_config` would take two.
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

/// Moves the caller's transaction into another tenant, for the statements after it (a group
/// commit writes several tenants' commands in one transaction, each under its own tenant).
pub async fn set_tenant(conn: &mut PgConnection, tenant_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "select set_config('app.current_tenant_id', $1, true)",
        tenant_id
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// The advisory lock of command-service's outbox relay ("outbox" in ASCII): one instance relays.
pub const RELAY_LOCK: i64 = 0x6f75_7462_6f78;

/// The advisory lock `replay-tool rebuild` holds while it runs ("rebuild"): one rebuild swaps
/// tables at a time.
pub const REBUILD_LOCK: i64 = 0x0072_6562_7569_6c64;

/// Takes the session-level advisory lock `key` if no one holds it: the election of the
/// background tasks that must run once across instances (the relay, the retention sweepers, a
/// rebuild). Held until [`advisory_unlock`] or the connection closes.
pub async fn try_advisory_lock(conn: &mut PgConnection, key: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(r#"select pg_try_advisory_lock($1) as "taken!""#, key)
        .fetch_one(conn)
        .await
}

/// Releases a lock taken with [`try_advisory_lock`].
pub async fn advisory_unlock(conn: &mut PgConnection, key: i64) -> Result<(), sqlx::Error> {
    sqlx::query!("select pg_advisory_unlock($1)", key)
        .fetch_one(conn)
        .await?;
    Ok(())
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
