//! Rebuilding and verifying the read tables from `contact_event_store`.
//!
//! A rebuild folds the whole history into new tables beside the live ones ([`build`]), with the
//! live workers' own projection code, while the live tables go on being written and served.
//! Then:
//! - a rebuild of every tenant swaps the new tables in, in one short transaction, with the
//!   live tables' indexes, foreign keys, policies and grants ([`swap`]);
//! - a rebuild of one tenant (whose rows share the tables with the others) brings the live
//!   tables to the new rows under a short lock: changed rows updated, missing ones inserted, rows
//!   the history does not produce deleted; rows already right are not touched.
//!
//! `processed_events` is the live consumers' record, and a rebuild leaves it alone: an event it
//! applied that a consumer delivers later is below its row's version (`contacts`, `sessions`)
//! or already there by its id (`domain_event_logs`), so it changes nothing.
//!
//! `verify` builds the same tables in the session's temporary schema and diffs them against the
//! live tables, writing nothing.

pub mod build;
pub mod personal;
pub mod status;
pub mod swap;

use std::time::Instant;

use build::{Build, Target};
use platform::event_store::{Checkpoint, Horizon};
use platform::personal::DataKeys;
use projection_service::projections::Projection;
use serde::Serialize;
use sqlx::{Connection, Executor, PgConnection, PgPool, Postgres, Transaction};

/// Progress: events done so far, and the total expected.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

#[derive(Debug, Clone, Default, Serialize)]
pub struct RebuildReport {
    pub events: u64,
    pub applied: u64,
    /// Where the time went, in order. The first phases (reading the store, folding, the bulk
    /// copy of the audit rows) run at the same time, so the phases add up to more than the whole.
    pub phases: Vec<Phase>,
    #[serde(skip)]
    pub checkpoint: Checkpoint,
}

/// A part of a rebuild and the seconds it took.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
}

impl RebuildReport {
    fn add(&mut self, name: &str, took: std::time::Duration) {
        match self.phases.iter_mut().find(|p| p.name == name) {
            Some(phase) => phase.seconds += took.as_secs_f64(),
            None => self.phases.push(Phase {
                name: name.to_owned(),
                seconds: took.as_secs_f64(),
            }),
        }
    }

    /// Adds a later part's events, updates and phases; its checkpoint is where this one stands.
    fn absorb(&mut self, later: RebuildReport) {
        self.events += later.events;
        self.applied += later.applied;
        for phase in later.phases {
            self.add(
                &phase.name,
                std::time::Duration::from_secs_f64(phase.seconds),
            );
        }
        self.checkpoint = later.checkpoint;
    }

    /// `read 1.2 s, fold 3.4 s, ...`
    pub fn phases_line(&self) -> String {
        self.phases
            .iter()
            .map(|p| format!("{} {:.1} s", p.name, p.seconds))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableDiff {
    pub table: &'static str,
    /// Rows in the live table that the rebuild does not produce (or produces differently).
    pub only_live: i64,
    /// Rows the rebuild produces that the live table lacks (or has differently).
    pub only_rebuilt: i64,
    /// Some of the differing ids, for a look.
    pub sample_ids: Vec<String>,
}

/// Rebuilds `projections` (for one tenant, or all) and puts the result live.
pub async fn rebuild(
    pool: &PgPool,
    keys: &DataKeys,
    projections: &[Projection],
    tenant: Option<&str>,
    batch_size: i64,
    progress: Progress<'_>,
) -> anyhow::Result<RebuildReport> {
    let build = Build {
        pool,
        keys,
        projections,
        tenant,
        batch_size,
        target: match tenant {
            None => Target::new_schema(),
            Some(_) => Target::Temp,
        },
    };
    let mut conn = build.connect().await?;
    let report = match tenant {
        None => swap_in(&build, &mut conn, progress).await,
        Some(tenant) => merge_in(&build, &mut conn, tenant, progress).await,
    };
    let _ = conn.close().await;
    report
}

/// A rebuild of every tenant: build in a schema of its own, give the new tables what the live
/// ones carry, swap them in.
async fn swap_in(
    build: &Build<'_>,
    conn: &mut PgConnection,
    progress: Progress<'_>,
) -> anyhow::Result<RebuildReport> {
    let Target::Schema(schema) = &build.target else {
        unreachable!("a rebuild of every tenant builds in a schema of its own")
    };
    // Only one rebuild swaps tables at a time; it first drops what a rebuild that died left
    // behind.
    let locked = platform::db::try_advisory_lock(&mut *conn, platform::db::REBUILD_LOCK).await?;
    anyhow::ensure!(locked, "another rebuild is running");
    let left = sqlx::query_scalar!(
        r#"select quote_ident(nspname) as "schema!" from pg_namespace where nspname ~ '^replay_[0-9a-f]{32}(_old)?$'"#,
    )
    .fetch_all(&mut *conn)
    .await?;
    for stale in left {
        tracing::warn!(schema = %stale, "dropping what an interrupted rebuild left");
        conn.execute(format!("drop schema {stale} cascade").as_str())
            .await?;
    }
    let built = async {
        let tables: Vec<&'static str> = build.projections.iter().map(|p| p.table()).collect();
        let moved = swap::survey(conn, &tables).await?;
        build.create_tables(conn).await?;
        let (bound, total) = build.bound().await?;
        // The fold, and beside it on a second connection the audit rows' bulk copy, key and
        // indexes: the copy is done long before the fold.
        let logs = async {
            let mut report = RebuildReport::default();
            if tables.contains(&Projection::DomainEventLogs.table()) {
                let mut other = build.connect().await?;
                report = build.copy_log(&mut other, bound).await?;
                let table = Projection::DomainEventLogs.table();
                swap::dress(&mut other, schema, &moved, table, &mut report).await?;
                let _ = other.close().await;
            }
            anyhow::Ok(report)
        };
        let (folded, copied) = tokio::join!(build.fold(conn, bound, total, progress), logs);
        let mut report = folded?;
        report.beside(copied?);
        for table in tables
            .iter()
            .filter(|t| **t != Projection::DomainEventLogs.table())
        {
            swap::dress(conn, schema, &moved, table, &mut report).await?;
        }
        let at = report.checkpoint;
        swap::swap(build, conn, &moved, at, &mut report).await?;
        anyhow::Ok(report)
    }
    .await;
    if built.is_err() {
        let _ = conn
            .execute(format!("drop schema if exists {schema} cascade").as_str())
            .await;
    }
    built
}

/// A rebuild of one tenant: build its rows in temporary tables, then, holding the live tables
/// for a moment, apply what was committed meanwhile and bring the live tables to them.
async fn merge_in(
    build: &Build<'_>,
    conn: &mut PgConnection,
    tenant: &str,
    progress: Progress<'_>,
) -> anyhow::Result<RebuildReport> {
    build.create_tables(conn).await?;
    let mut report = build.fill(conn, progress).await?;
    let caught = build
        .catch_up(conn, report.checkpoint, Horizon::Finished)
        .await?;
    report.absorb(caught);
    let tables: Vec<&str> = build.projections.iter().map(|p| p.table()).collect();
    let started = Instant::now();
    let mut tx = conn.begin().await?;
    // Writers wait from here to commit; readers go on seeing the old rows.
    tx.execute(
        format!(
            "lock table {} in exclusive mode",
            tables
                .iter()
                .map(|t| format!("public.{t}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
        .as_str(),
    )
    .await?;
    let late = build
        .catch_up(&mut tx, report.checkpoint, Horizon::Visible)
        .await?;
    report.absorb(late);
    report.add("late events", started.elapsed());
    for table in &tables {
        let started = Instant::now();
        sync_table(&mut tx, table, tenant).await?;
        report.add(&format!("merge {table}"), started.elapsed());
    }
    let started = Instant::now();
    tx.commit().await?;
    report.add("commit", started.elapsed());
    Ok(report)
}

/// Rebuilds every projection into temporary tables and diffs them against the live tables,
/// writing nothing. An empty result means live = rebuilt, column for column.
pub async fn verify(
    pool: &PgPool,
    keys: &DataKeys,
    tenant: Option<&str>,
    batch_size: i64,
    progress: Progress<'_>,
) -> anyhow::Result<Vec<TableDiff>> {
    let build = Build {
        pool,
        keys,
        projections: &Projection::ALL,
        tenant,
        batch_size,
        target: Target::Temp,
    };
    let mut conn = build.connect().await?;
    build.create_tables(&mut conn).await?;
    let report = build.fill(&mut conn, progress).await?;
    build
        .catch_up(&mut conn, report.checkpoint, Horizon::Visible)
        .await?;
    let mut diffs = Vec::new();
    for p in Projection::ALL {
        let t = p.table();
        let live = format!("(select * from public.{t} where ($1::text is null or tenant_id = $1))");
        let rebuilt = format!("(select * from pg_temp.{t})");
        let count = |a: &str, b: &str| format!("select count(*) from ({a} except {b}) d");
        let only_live: i64 = sqlx::query_scalar(&count(&live, &rebuilt))
            .bind(tenant)
            .fetch_one(&mut conn)
            .await?;
        let only_rebuilt: i64 = sqlx::query_scalar(&count(&rebuilt, &live))
            .bind(tenant)
            .fetch_one(&mut conn)
            .await?;
        if only_live + only_rebuilt > 0 {
            let sample_ids: Vec<String> = sqlx::query_scalar(&format!(
                "select distinct id::text from (({live} except {rebuilt}) union all ({rebuilt} except {live})) d \
                 order by 1 limit 10"
            ))
            .bind(tenant)
            .fetch_all(&mut conn)
            .await?;
            diffs.push(TableDiff {
                table: t,
                only_live,
                only_rebuilt,
                sample_ids,
            });
        }
    }
    let _ = conn.close().await;
    Ok(diffs)
}

/// Brings a live table to the tenant's rebuilt rows: changed rows updated, new ones inserted,
/// rows the history does not produce deleted; rows already right are not written.
async fn sync_table(
    tx: &mut Transaction<'_, Postgres>,
    table: &str,
    tenant: &str,
) -> anyhow::Result<()> {
    let columns = sqlx::query_scalar!(
        r#"select column_name::text as "column!" from information_schema.columns
            where table_schema = 'public' and table_name = $1 order by ordinal_position"#,
        table,
    )
    .fetch_all(&mut **tx)
    .await?;
    let list = columns.join(", ");
    let updates = columns
        .iter()
        .filter(|c| *c != "id")
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    sqlx::query(&format!(
        "insert into public.{table} as live ({list}) select {list} from pg_temp.{table} \
         on conflict (id) do update set {updates} where (live.*) is distinct from (excluded.*)"
    ))
    .execute(&mut **tx)
    .await?;
    sqlx::query(&format!(
        "delete from public.{table} live where live.tenant_id = $1 \
           and not exists (select 1 from pg_temp.{table} shadow where shadow.id = live.id)"
    ))
    .bind(tenant)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
