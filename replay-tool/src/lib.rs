//! Rebuilding and verifying the read tables from `contact_event_store`.
//!
//! A rebuild folds the whole history into *shadow* tables (temporary tables of the same columns
//! and checks, keyed by `id` but without the live tables' other indexes, which shadow the real
//! ones for this session's unqualified SQL), streaming the store in `(transaction_id, position)`
//! order in batches through [`projection_service::projections::apply_batch_once`], the live
//! workers' own code minus `processed_events` (the store gives each event once). The ids of the
//! events applied go to an unindexed list. Only one batch is held in memory at a time, and the
//! live tables stay untouched (and served) meanwhile.
//!
//! Then, holding the live tables for a moment: a last pass applies what was committed since, and
//! the live tables are brought to the shadow's rows: changed rows updated, missing ones inserted,
//! rows the history does not produce deleted, `processed_events` completed from the list of
//! applied events (one row per event naming the projections rebuilt, written once). Rows that are already
//! right are not touched, and rows of other tables that reference them (trackings, notes, ... with
//! their ON DELETE rules) are left alone.
//!
//! Afterwards the live consumers carry on: an event the rebuild applied is in `processed_events`
//! (and below the row's version), so its delivery changes nothing; one it did not see is applied
//! by them as usual.
//!
//! `verify` builds the same shadow and diffs it against the live tables, writing nothing.

pub mod personal;
pub mod status;

use std::time::Instant;

use platform::event_store::{Checkpoint, EventRow, EventStore, Horizon, OrderedEvent};
use platform::personal::DataKeys;
use projection_service::projections::{
    apply_batch_once, consumer_name, covered, covers_sql, Projection,
};
use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};

/// Progress: events done so far, and the total expected.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

#[derive(Debug, Clone, Default, Serialize)]
pub struct RebuildReport {
    pub events: u64,
    pub applied: u64,
    /// Where the time went, in order: reading the store, applying to the shadow, noting the
    /// applied ids, the pass over late events, bringing each live table to its shadow,
    /// `processed_events`, the commit.
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

    /// `read 1.2 s, apply 3.4 s, ...`
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

/// Rebuilds `projections` (for one tenant, or all) and commits.
pub async fn rebuild(
    pool: &PgPool,
    keys: &DataKeys,
    projections: &[Projection],
    tenant: Option<&str>,
    batch_size: i64,
    progress: Progress<'_>,
) -> anyhow::Result<RebuildReport> {
    let shadow = Shadow {
        store: EventStore::new(pool.clone()),
        keys,
        projections,
        tenant,
        batch_size,
    };
    let mut conn = shadow_connection(pool).await?;
    let mut tx = conn.begin().await?;
    let mut report = shadow.build(&mut tx, progress).await?;
    let tables: Vec<&str> = projections.iter().map(|p| p.table()).collect();
    let started = Instant::now();
    // Writers wait from here to commit; readers go on seeing the old rows.
    sqlx::query(&format!(
        "lock table {} in exclusive mode",
        qualified(&tables).join(", ")
    ))
    .execute(&mut *tx)
    .await?;
    let late = shadow
        .catch_up(&mut tx, report.checkpoint, Horizon::Visible, &|_, _| {})
        .await?;
    report.events += late.events;
    report.applied += late.applied;
    report.add("late events", started.elapsed());
    for table in &tables {
        let started = Instant::now();
        sync_table(&mut tx, table, tenant).await?;
        report.add(&format!("merge {table}"), started.elapsed());
    }
    let started = Instant::now();
    sync_processed(&mut tx, projections).await?;
    report.add("processed_events", started.elapsed());
    let started = Instant::now();
    tx.commit().await?;
    report.add("commit", started.elapsed());
    Ok(report)
}

/// Rebuilds every projection into shadow tables and diffs them against the live tables, writing
/// nothing. An empty result means live = rebuilt, column for column.
pub async fn verify(
    pool: &PgPool,
    keys: &DataKeys,
    tenant: Option<&str>,
    batch_size: i64,
    progress: Progress<'_>,
) -> anyhow::Result<Vec<TableDiff>> {
    let shadow = Shadow {
        store: EventStore::new(pool.clone()),
        keys,
        projections: &Projection::ALL,
        tenant,
        batch_size,
    };
    let mut conn = shadow_connection(pool).await?;
    let mut tx = conn.begin().await?;
    let report = shadow.build(&mut tx, progress).await?;
    shadow
        .catch_up(&mut tx, report.checkpoint, Horizon::Visible, &|_, _| {})
        .await?;
    let mut diffs = Vec::new();
    for p in Projection::ALL {
        let t = p.table();
        let live = format!("(select * from public.{t} where ($1::text is null or tenant_id = $1))");
        let rebuilt = format!("(select * from pg_temp.{t})");
        let count = |a: &str, b: &str| format!("select count(*) from ({a} except {b}) d");
        let only_live: i64 = sqlx::query_scalar(&count(&live, &rebuilt))
            .bind(tenant)
            .fetch_one(&mut *tx)
            .await?;
        let only_rebuilt: i64 = sqlx::query_scalar(&count(&rebuilt, &live))
            .bind(tenant)
            .fetch_one(&mut *tx)
            .await?;
        if only_live + only_rebuilt > 0 {
            let sample_ids: Vec<String> = sqlx::query_scalar(&format!(
                "select distinct id::text from (({live} except {rebuilt}) union all ({rebuilt} except {live})) d \
                 order by 1 limit 10"
            ))
            .bind(tenant)
            .fetch_all(&mut *tx)
            .await?;
            diffs.push(TableDiff {
                table: t,
                only_live,
                only_rebuilt,
                sample_ids,
            });
        }
    }
    tx.rollback().await?;
    Ok(diffs)
}

/// A connection of its own for the shadow tables. Not one from the pool: a pooled connection
/// keeps statements prepared by the live workers, whose plans name the live tables and would not
/// see the temporary ones that shadow them, so the projection code would write to the live
/// tables. This connection prepares everything while the shadow exists, and is closed after.
async fn shadow_connection(pool: &PgPool) -> anyhow::Result<PgConnection> {
    Ok(PgConnection::connect_with(&pool.connect_options()).await?)
}

fn qualified(tables: &[&str]) -> Vec<String> {
    tables.iter().map(|t| format!("public.{t}")).collect()
}

/// One rebuild: which projections, for which tenant, in batches of what size.
struct Shadow<'a> {
    store: EventStore,
    /// Read per batch, as they are now: a forgotten contact's fields come out redacted.
    keys: &'a DataKeys,
    projections: &'a [Projection],
    tenant: Option<&'a str>,
    batch_size: i64,
}

impl Shadow<'_> {
    /// Creates the shadow tables (dropped at commit) and folds the history into them.
    async fn build(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        progress: Progress<'_>,
    ) -> anyhow::Result<RebuildReport> {
        // Temporary tables come first in name resolution: the projection code's unqualified SQL
        // writes here. `like` copies columns, defaults and checks; of the indexes only the key
        // the upserts need (the live ones' other indexes would only slow the fold down).
        for table in self.projections.iter().map(|p| p.table()) {
            sqlx::query(&format!(
                "create temp table {table} (like public.{table} including defaults including constraints) \
                 on commit drop"
            ))
            .execute(&mut **tx)
            .await?;
            sqlx::query(&format!("alter table pg_temp.{table} add primary key (id)"))
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query("create temp table rebuilt_events (event_id uuid not null) on commit drop")
            .execute(&mut **tx)
            .await?;
        let total: i64 = sqlx::query_scalar(
            "select count(*) from contact_event_store where ($1::text is null or tenant_id = $1)",
        )
        .bind(self.tenant)
        .fetch_one(&mut **tx)
        .await?;
        metrics::gauge!("replay_events_expected").set(total as f64);
        let counted = |done: u64, _: u64| progress(done, (total as u64).max(done));
        self.catch_up(tx, Checkpoint::default(), Horizon::Finished, &counted)
            .await
    }

    /// Applies every event after `from` (up to `horizon`) to the shadow tables.
    async fn catch_up(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        from: Checkpoint,
        horizon: Horizon,
        progress: Progress<'_>,
    ) -> anyhow::Result<RebuildReport> {
        let mut report = RebuildReport {
            checkpoint: from,
            ..RebuildReport::default()
        };
        loop {
            let started = Instant::now();
            let rows = EventStore::read_after(
                &mut **tx,
                report.checkpoint,
                self.batch_size,
                self.tenant,
                horizon,
            )
            .await?;
            let Some(last) = rows.last().map(OrderedEvent::checkpoint) else {
                break;
            };
            let envelopes = rows
                .into_iter()
                .map(|r| EventRow::into_envelope(r.event))
                .collect::<Result<Vec<_>, _>>()?;
            report.add("read", started.elapsed());
            let started = Instant::now();
            let (batch, handled) =
                apply_batch_once(tx, &self.store, self.keys, self.projections, &envelopes).await?;
            report.add("apply", started.elapsed());
            let started = Instant::now();
            sqlx::query("insert into pg_temp.rebuilt_events select unnest($1::uuid[])")
                .bind(&handled)
                .execute(&mut **tx)
                .await?;
            report.add("note ids", started.elapsed());
            report.events += envelopes.len() as u64;
            report.applied += batch.applied as u64;
            report.checkpoint = last;
            metrics::counter!("replay_events_total").increment(envelopes.len() as u64);
            progress(report.events, report.events);
        }
        Ok(report)
    }
}

/// Brings a live table to its shadow: changed rows updated, new ones inserted, rows the history
/// does not produce deleted; rows already right are not written.
async fn sync_table(
    tx: &mut Transaction<'_, Postgres>,
    table: &str,
    tenant: Option<&str>,
) -> anyhow::Result<()> {
    let columns: Vec<String> = sqlx::query_scalar(
        "select column_name::text from information_schema.columns \
          where table_schema = 'public' and table_name = $1 order by ordinal_position",
    )
    .bind(table)
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
        "delete from public.{table} live where ($1::text is null or live.tenant_id = $1) \
           and not exists (select 1 from pg_temp.{table} shadow where shadow.id = live.id)"
    ))
    .bind(tenant)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Completes `processed_events`: for each applied event, one row naming the rebuilt projections
/// that no row of it covers yet. Rows of events applied live stay as they are, and no
/// (event, projection) is ever covered twice.
async fn sync_processed(
    tx: &mut Transaction<'_, Postgres>,
    projections: &[Projection],
) -> anyhow::Result<()> {
    let all = consumer_name(projections);
    let names: Vec<&str> = covered(&all).map(Projection::name).collect();
    sqlx::query(
        "create temp table rebuilt_ids on commit drop as \
         select distinct event_id from pg_temp.rebuilt_events",
    )
    .execute(&mut **tx)
    .await?;
    // Events with rows (applied live, or by an earlier rebuild of other projections): one row
    // naming the rebuilt projections their rows do not cover yet, if any.
    sqlx::query(&format!(
        "insert into public.processed_events (event_id, consumer_name, processing_duration_ms) \
         select r.event_id, string_agg(p.name, '+' order by p.position), 0 \
           from pg_temp.rebuilt_ids r \
          cross join unnest($1::text[]) with ordinality as p(name, position) \
          where exists (select 1 from public.processed_events e where e.event_id = r.event_id) \
            and not exists (select 1 from public.processed_events e \
                             where e.event_id = r.event_id and {}) \
          group by r.event_id \
         on conflict (event_id, consumer_name) do nothing",
        covers_sql("e", "p.name")
    ))
    .bind(&names)
    .execute(&mut **tx)
    .await?;
    // The others (all of them in a rebuild from scratch) have no row at all: one row naming
    // every rebuilt projection, inserted in id order. The ids are time-ordered, so the unique
    // index grows at its end instead of taking a million inserts at random pages (the distinct
    // above leaves them in hash order): 9 s against 5 s for a million rows here.
    sqlx::query(
        "insert into public.processed_events (event_id, consumer_name, processing_duration_ms) \
         select r.event_id, $1, 0 from pg_temp.rebuilt_ids r \
          where not exists (select 1 from public.processed_events e where e.event_id = r.event_id) \
          order by r.event_id \
         on conflict (event_id, consumer_name) do nothing",
    )
    .bind(&all)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
