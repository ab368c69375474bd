//! `command-service bootstrap`: creates (idempotently) a user, a billing account, a project with
//! its tenant, and an API key, and prints them. Running it twice with the same e-mail, tenant and
//! key changes nothing.

use platform::auth::{generate_api_key, hash_api_key};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, clap::Args)]
pub struct BootstrapSpec {
    /// The user's e-mail (the user is found by it, or created).
    #[arg(long, default_value = "demo@ventros.local")]
    pub email: String,
    #[arg(long, default_value = "Demo User")]
    pub name: String,
    /// The tenant id of the project (the project is found by it, or created).
    #[arg(long, default_value = "demo")]
    pub tenant: String,
    #[arg(long, default_value = "Demo project")]
    pub project: String,
    /// `projects.session_timeout_minutes` for a new project.
    #[arg(long, default_value_t = 30)]
    pub session_timeout_minutes: i64,
    /// Use this API key (registered if new) instead of generating one.
    #[arg(long, env = "VENTROS_API_KEY")]
    pub api_key: Option<String>,
    /// Give the user this role on the project through `project_members` instead of owning it
    /// (the project must then exist; owner, admin, supervisor, agent or viewer). The key gets
    /// the same role.
    #[arg(long)]
    pub member_role: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bootstrapped {
    pub user_id: Uuid,
    pub project_id: Uuid,
    pub tenant_id: String,
    pub api_key: String,
}

pub async fn bootstrap(pool: &PgPool, spec: &BootstrapSpec) -> anyhow::Result<Bootstrapped> {
    // In the tenant: row-level security is forced on the tenant tables, so an owner that is not a
    // superuser sees and writes the tenant's rows only this way.
    let mut tx = platform::db::tenant_tx(pool, &spec.tenant).await?;
    let user_id = upsert_user(&mut tx, spec).await?;
    let (project_id, role) = match &spec.member_role {
        None => (own_project(&mut tx, spec, user_id).await?, "owner"),
        Some(role) => (
            join_project(&mut tx, spec, user_id, role).await?,
            role.as_str(),
        ),
    };
    let api_key = spec.api_key.clone().unwrap_or_else(generate_api_key);
    register_api_key(&mut tx, user_id, project_id, role, &api_key).await?;
    tx.commit().await?;
    Ok(Bootstrapped {
        user_id,
        project_id,
        tenant_id: spec.tenant.clone(),
        api_key,
    })
}

/// The user with the spec's e-mail: found (left as it is) or created as an active admin.
async fn upsert_user(conn: &mut PgConnection, spec: &BootstrapSpec) -> anyhow::Result<Uuid> {
    let user_id = sqlx::query_scalar!(
        "insert into users (name, email, password_hash, status, role, created_at, updated_at) \
         values ($1, $2, '!', 'active', 'admin', now(), now()) \
         on conflict (email) do update set updated_at = users.updated_at \
         returning id",
        &spec.name,
        spec.email.to_lowercase(),
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(user_id)
}

/// The tenant's project, owned by the user: found, or created on the user's billing account.
async fn own_project(
    conn: &mut PgConnection,
    spec: &BootstrapSpec,
    user_id: Uuid,
) -> anyhow::Result<Uuid> {
    let billing_id = billing_account(&mut *conn, spec, user_id).await?;
    let project_id = sqlx::query_scalar!(
        "insert into projects (user_id, billing_account_id, tenant_id, name, session_timeout_minutes, \
                               configuration, created_at, updated_at) \
         values ($1, $2, $3, $4, $5, '{}', now(), now()) \
         on conflict (tenant_id) do update set updated_at = projects.updated_at \
         returning id",
        user_id,
        billing_id,
        &spec.tenant,
        &spec.project,
        spec.session_timeout_minutes,
    )
    .fetch_one(&mut *conn)
    .await?;
    // Its creator's owner row (the rows say who may do what), unless the tenant's project is
    // someone else's.
    sqlx::query!(
        "insert into project_members (project_id, agent_id, role, invited_by, invited_at) \
         select p.id, p.user_id::text, 'owner', 'bootstrap', now() from projects p \
          where p.id = $1 and p.user_id = $2 \
         on conflict (project_id, agent_id) do nothing",
        project_id,
        user_id,
    )
    .execute(&mut *conn)
    .await?;
    Ok(project_id)
}

/// The user's oldest live billing account, or a new one.
async fn billing_account(
    conn: &mut PgConnection,
    spec: &BootstrapSpec,
    user_id: Uuid,
) -> anyhow::Result<Uuid> {
    let billing_id = match sqlx::query_scalar!(
        "select id from billing_accounts where user_id = $1 and deleted_at is null order by created_at limit 1",
        user_id,
    )
    .fetch_optional(&mut *conn)
    .await?
    {
        Some(id) => id,
        None => {
            sqlx::query_scalar!(
                "insert into billing_accounts (user_id, name, billing_email, payment_status, created_at, updated_at) \
                 values ($1, $2, $3, 'active', now(), now()) returning id",
                user_id,
                format!("{} billing", spec.name),
                spec.email.to_lowercase(),
            )
            .fetch_one(&mut *conn)
            .await?
        }
    };
    Ok(billing_id)
}

/// The tenant's existing project, which the user joins with `role` through `project_members`.
async fn join_project(
    conn: &mut PgConnection,
    spec: &BootstrapSpec,
    user_id: Uuid,
    role: &str,
) -> anyhow::Result<Uuid> {
    let project_id =
        sqlx::query_scalar!("select id from projects where tenant_id = $1", &spec.tenant)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no project with tenant {:?} to join", spec.tenant))?;
    sqlx::query!(
        "insert into project_members (project_id, agent_id, role, invited_by, invited_at) \
         values ($1, $2, $3, 'bootstrap', now()) \
         on conflict (project_id, agent_id) do update set role = excluded.role, deleted_at = null",
        project_id,
        user_id.to_string(),
        role,
    )
    .execute(&mut *conn)
    .await?;
    Ok(project_id)
}

/// Registers `api_key` for the user, for this project and role (idempotently); fails when
/// another user or project holds it.
async fn register_api_key(
    conn: &mut PgConnection,
    user_id: Uuid,
    project_id: Uuid,
    role: &str,
    api_key: &str,
) -> anyhow::Result<()> {
    let held = sqlx::query!(
        "insert into user_api_keys (user_id, name, key_hash, active, created_at, updated_at, \
                                    project_id, role, prefix) \
         values ($1, 'bootstrap', $2, true, now(), now(), $3, $4, $5) \
         on conflict (key_hash) do update set updated_at = user_api_keys.updated_at \
         returning user_id, project_id",
        user_id,
        hash_api_key(api_key),
        project_id,
        role,
        api_key.chars().take(10).collect::<String>(),
    )
    .fetch_one(&mut *conn)
    .await?;
    if held.user_id != Some(user_id) {
        anyhow::bail!("that API key belongs to another user");
    }
    // A key of the previous release (no project) reaches every project of its user, as it did.
    if held.project_id.is_some_and(|p| p != project_id) {
        anyhow::bail!("that API key belongs to another project");
    }
    Ok(())
}
