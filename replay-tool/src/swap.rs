//! Rebuilt tables take the live tables' place in one short transaction.
//!
//! Beforehand, while the live tables go on being written and served ([`dress`]), the new
//! tables get what the live ones carry ([`survey`]): their indexes, their foreign keys (checked),
//! their row-level security policies, grants, owner, storage options and comment, and statistics.
//!
//! Then the swap ([`swap`]), tried again while the live tables are too busy to be had at once:
//! 1. `exclusive` locks on the live tables: the workers wait, readers go on. The build catches
//!    up with every event now visible, so the new tables hold every event a worker applied.
//! 2. `access exclusive` locks on them and on the tables whose foreign keys reference them:
//!    readers wait for the rest of this transaction. The lock timeout is shorter than
//!    PostgreSQL's deadlock timeout, so a reader that holds one table and waits for another
//!    makes this attempt give up, instead of failing itself.
//! 3. Rows of the live tables that the history does not produce are deleted first, so the
//!    foreign keys that reference them apply their `on delete` rules as they always did.
//! 4. Those foreign keys are dropped; the live tables move to a schema of their own and the new
//!    ones into `public`; row-level security is switched on; the foreign keys are added again,
//!    now referencing the new tables (`not valid`: nothing is scanned under the locks).
//! 5. Commit. The foreign keys are then validated and the old tables dropped.
//!
//! A statement that waited for a live table when the swap committed runs on the new table:
//! PostgreSQL looks a name up again once it holds the lock, and replans prepared statements
//! whose tables moved. A reader sees the old tables or the new ones, never a mix.

use std::time::{Duration, Instant};

use platform::event_store::{Checkpoint, Horizon};
use sqlx::{Connection, Executor, PgConnection};

use crate::build::{Build, Target};
use crate::RebuildReport;

/// How many times the swap is tried before the rebuild gives up (the new tables are dropped,
/// the live ones untouched).
const ATTEMPTS: u32 = 20;

/// How long the swap waits for the workers' transactions to end (step 1), and for readers
/// (step 2): below `deadlock_timeout` (1 s by default), see the module docs.
const WRITERS_TIMEOUT: &str = "5s";
const READERS_TIMEOUT: &str = "200ms";

/// What a live table carries, as statements naming it `public.<table>` (retargeted to the new
/// table before they run), and its row-level security switches (set at the swap: the build
/// writes the new table without policies in the way).
#[derive(Debug)]
pub struct Carried {
    table: &'static str,
    statements: Vec<String>,
    row_security: bool,
    forced: bool,
}

/// A foreign key of another table that references a rebuilt one: moved to the new table.
#[derive(Debug)]
pub struct Inbound {
    /// The referencing table, schema-qualified.
    table: String,
    name: String,
    definition: String,
    validated: bool,
}

/// What the swap moves: the live tables' row-level security switches and the other tables'
/// foreign keys that reference them.
#[derive(Debug)]
pub struct Moved {
    carried: Vec<Carried>,
    inbound: Vec<Inbound>,
}

/// Gives the new `table` (in `schema`) what the live one carries, and fresh statistics.
pub async fn dress(
    conn: &mut PgConnection,
    schema: &str,
    moved: &Moved,
    table: &str,
    report: &mut RebuildReport,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let tables: Vec<&str> = moved.carried.iter().map(|c| c.table).collect();
    for carried in moved.carried.iter().filter(|c| c.table == table) {
        for statement in &carried.statements {
            let statement = retarget(statement, schema, &tables);
            conn.execute(statement.as_str()).await?;
        }
    }
    conn.execute(format!("analyze {schema}.{table}").as_str())
        .await?;
    report.add(&format!("indexes {table}"), started.elapsed());
    Ok(())
}

/// Points a definition read from the catalog (every name schema-qualified) at the new tables.
fn retarget(statement: &str, schema: &str, tables: &[&str]) -> String {
    tables.iter().fold(statement.to_owned(), |s, table| {
        s.replace(&format!(" public.{table} "), &format!(" {schema}.{table} "))
            .replace(
                &format!("REFERENCES public.{table}("),
                &format!("REFERENCES {schema}.{table}("),
            )
    })
}

/// Reads what the live `tables` carry and what the swap moves; refuses tables that carry
/// something a swap would leave behind (triggers, views, publications, column privileges,
/// inheritance). Run before anything is built, so a refusal costs nothing. Read with
/// `search_path` set to the catalog alone, so that every name in a definition comes
/// schema-qualified.
pub async fn survey(conn: &mut PgConnection, tables: &[&'static str]) -> anyhow::Result<Moved> {
    let mut tx = conn.begin().await?;
    tx.execute("set local search_path = pg_catalog").await?;
    let mut carried = Vec::new();
    for &table in tables {
        let live = format!("public.{table}");
        // What a table has that a swap cannot carry over: one text per thing (`$1`: the table).
        let refused = sqlx::query_scalar!(
            r#"select array(select 'trigger ' || tgname from pg_trigger
                             where tgrelid = $1::regclass and not tgisinternal)
                   || array(select distinct 'view ' || r.ev_class::regclass::text
                              from pg_depend d join pg_rewrite r on r.oid = d.objid
                             where d.classid = 'pg_rewrite'::regclass and d.refobjid = $1::regclass
                               and r.ev_class <> $1::regclass)
                   || array(select 'publication ' || p.pubname
                              from pg_publication_rel pr join pg_publication p on p.oid = pr.prpubid
                             where pr.prrelid = $1::regclass)
                   || array(select 'column privileges on ' || attname from pg_attribute
                             where attrelid = $1::regclass and attacl is not null)
                   || array(select 'inheritance' from pg_inherits
                             where inhrelid = $1::regclass or inhparent = $1::regclass) as "refused!""#,
            &live as _,
        )
        .fetch_one(&mut *tx)
        .await?;
        anyhow::ensure!(
            refused.is_empty(),
            "{live} cannot be swapped for a rebuilt table: it has {}, which the swap would leave on the old table",
            refused.join(", ")
        );
        // The statements that give a new table what the live table `$1` carries, in an order that
        // works: owner, storage options, comment, indexes, foreign keys (added unchecked, then checked
        // if the live one is), policies, then grants (the new table's own first revoked); and the live
        // table's row-level security switches.
        let carried_row = sqlx::query!(
            r#"with t as (select c.*, $1::regclass as live from pg_class c where c.oid = $1::regclass)
               select array(select format('alter table %s owner to %I', live, pg_get_userbyid(relowner)) from t)
                   || array(select format('alter table %s set (%s)', live, array_to_string(reloptions, ', '))
                              from t where reloptions is not null)
                   || array(select format('comment on table %s is %L', live, obj_description(live, 'pg_class'))
                              from t where obj_description(live, 'pg_class') is not null)
                   || array(select pg_get_indexdef(i.indexrelid) from pg_index i, t
                             where i.indrelid = t.live
                               and not exists (select 1 from pg_constraint k
                                                where k.conindid = i.indexrelid and k.conrelid = i.indrelid
                                                  and k.contype in ('p', 'u', 'x'))
                             order by i.indexrelid)
                   || array(select format('alter table %s add constraint %I %s not valid', t.live, k.conname,
                                          pg_get_constraintdef(k.oid))
                              from pg_constraint k, t where k.conrelid = t.live and k.contype = 'f'
                             order by k.conname)
                   || array(select format('alter table %s validate constraint %I', t.live, k.conname)
                              from pg_constraint k, t
                             where k.conrelid = t.live and k.contype = 'f' and k.convalidated
                             order by k.conname)
                   || array(select format('create policy %I on %s as %s for %s to %s%s%s', p.polname, t.live,
                                          case when p.polpermissive then 'permissive' else 'restrictive' end,
                                          case p.polcmd when 'r' then 'select' when 'a' then 'insert'
                                                        when 'w' then 'update' when 'd' then 'delete'
                                                        else 'all' end,
                                          (select string_agg(case when r = 0 then 'public'
                                                                  else quote_ident(pg_get_userbyid(r)) end, ', ')
                                             from unnest(p.polroles) r),
                                          ' using (' || pg_get_expr(p.polqual, p.polrelid) || ')',
                                          ' with check (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')')
                              from pg_policy p, t where p.polrelid = t.live order by p.polname)
                   || array(select format('revoke all on %s from %s', t.live,
                                          case when a.grantee = 0 then 'public'
                                               else quote_ident(pg_get_userbyid(a.grantee)) end)
                              from t, aclexplode(coalesce(t.relacl, acldefault('r', t.relowner))) a
                             where a.grantee <> t.relowner group by t.live, a.grantee)
                   || array(select format('grant %s on %s to %s%s', a.privilege_type, t.live,
                                          case when a.grantee = 0 then 'public'
                                               else quote_ident(pg_get_userbyid(a.grantee)) end,
                                          case when a.is_grantable then ' with grant option' else '' end)
                              from t, aclexplode(t.relacl) a where a.grantee <> t.relowner) as "statements!",
                      (select relrowsecurity from t) as "row_security!",
                      (select relforcerowsecurity from t) as "forced!""#,
            &live as _,
        )
        .fetch_one(&mut *tx)
        .await?;
        carried.push(Carried {
            table,
            statements: carried_row.statements,
            row_security: carried_row.row_security,
            forced: carried_row.forced,
        });
    }
    let qualified: Vec<String> = tables.iter().map(|t| format!("public.{t}")).collect();
    let inbound = sqlx::query_as!(
        Inbound,
        r#"select c.conrelid::regclass::text as "table!", quote_ident(c.conname) as "name!",
                  pg_get_constraintdef(c.oid) as "definition!", c.convalidated as validated
             from pg_constraint c
            where c.contype = 'f' and c.confrelid = any($1::text[]::regclass[])
              and c.conrelid <> all($1::text[]::regclass[])
            order by 1, 2"#,
        &qualified,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Moved { carried, inbound })
}

/// Catches the new tables up and swaps them in (see the module docs). `at`: where the build
/// stands. On success the old tables are gone; on failure the live tables are as they were.
pub async fn swap(
    build: &Build<'_>,
    conn: &mut PgConnection,
    moved: &Moved,
    mut at: Checkpoint,
    report: &mut RebuildReport,
) -> anyhow::Result<()> {
    let Target::Schema(schema) = &build.target else {
        anyhow::bail!("only tables built in a schema of their own can be swapped in");
    };
    let tables: Vec<&str> = build.projections.iter().map(|p| p.table()).collect();
    let old = format!("{schema}_old");
    for attempt in 1..=ATTEMPTS {
        let caught = build.catch_up(conn, at, Horizon::Finished).await?;
        at = caught.checkpoint;
        report.absorb(caught);
        let started = Instant::now();
        match try_swap(build, conn, moved, (schema, &old), &tables, at).await {
            Ok(late) => {
                report.absorb(late);
                report.add("swap", started.elapsed());
                break;
            }
            Err(e) if attempt < ATTEMPTS && lock_timed_out(&e) => {
                tracing::info!(attempt, "the live tables were busy; swapping again");
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            Err(e) => return Err(e),
        }
    }
    let started = Instant::now();
    for key in moved.inbound.iter().filter(|k| k.validated) {
        conn.execute(
            format!("alter table {} validate constraint {}", key.table, key.name).as_str(),
        )
        .await?;
    }
    conn.execute(format!("drop schema {old} cascade; drop schema {schema}").as_str())
        .await?;
    report.add("drop old tables", started.elapsed());
    Ok(())
}

/// One attempt at steps 1 to 5, the new tables in `schema` and the old ones moved to `old`;
/// returns the last catch-up's report.
async fn try_swap(
    build: &Build<'_>,
    conn: &mut PgConnection,
    Moved { carried, inbound }: &Moved,
    (schema, old): (&str, &str),
    tables: &[&str],
    at: Checkpoint,
) -> anyhow::Result<RebuildReport> {
    let live: Vec<String> = tables.iter().map(|t| format!("public.{t}")).collect();
    let mut tx = conn.begin().await?;
    tx.execute(
        format!(
            "set local lock_timeout = '{WRITERS_TIMEOUT}'; lock table {} in exclusive mode",
            live.join(", ")
        )
        .as_str(),
    )
    .await?;
    let late = build.catch_up(&mut tx, at, Horizon::Visible).await?;
    let mut locked = live.clone();
    for key in inbound {
        if !locked.contains(&key.table) {
            locked.push(key.table.clone());
        }
    }
    tx.execute(
        format!(
            "set local lock_timeout = '{READERS_TIMEOUT}'; \
             lock table {} in access exclusive mode",
            locked.join(", ")
        )
        .as_str(),
    )
    .await?;
    // Referenced rows the history does not produce, dependents before what they depend on.
    for table in tables.iter().rev() {
        if inbound.iter().any(|k| {
            k.definition
                .contains(&format!("REFERENCES public.{table}("))
        }) {
            tx.execute(
                format!(
                    "delete from public.{table} o \
                      where not exists (select 1 from {schema}.{table} n where n.id = o.id)"
                )
                .as_str(),
            )
            .await?;
        }
    }
    let mut statements = Vec::new();
    for key in inbound {
        statements.push(format!(
            "alter table {} drop constraint {}",
            key.table, key.name
        ));
    }
    statements.push(format!("create schema {old}"));
    for table in tables {
        statements.push(format!("alter table public.{table} set schema {old}"));
    }
    for table in tables {
        statements.push(format!("alter table {schema}.{table} set schema public"));
    }
    for table in carried.iter().filter(|c| c.row_security) {
        statements.push(format!(
            "alter table public.{} enable row level security",
            table.table
        ));
    }
    for table in carried.iter().filter(|c| c.forced) {
        statements.push(format!(
            "alter table public.{} force row level security",
            table.table
        ));
    }
    for key in inbound {
        statements.push(format!(
            "alter table {} add constraint {} {} not valid",
            key.table, key.name, key.definition
        ));
    }
    for statement in statements {
        tx.execute(statement.as_str()).await?;
    }
    tx.commit().await?;
    Ok(late)
}

/// Whether an attempt gave up waiting for a lock (SQLSTATE 55P03, `lock_not_available`).
fn lock_timed_out(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .and_then(|e| e.as_database_error())
            .and_then(|e| e.code())
            .is_some_and(|code| code == "55P03")
    })
}

#[cfg(test)]
mod tests;
