//! Building new read tables from the history, beside the live ones.
//!
//! The new tables live in a [`Target`]: a schema of their own (a whole rebuild, which then takes
//! the live tables' place, see [`crate::swap`]) or the session's temporary schema (a tenant's
//! rebuild, merged into the live tables, and `verify`). A connection whose `search_path` puts the
//! target first makes the projection code's unqualified SQL read and write the new tables, while
//! `contact_event_store` and the keys still resolve to `public`.
//!
//! A build takes a fixed part of the history ([`Build::bound`]: everything up to the last
//! finished transaction) and
//! - folds it into `contacts` and `sessions` with [`apply_batch_once`], the live workers' own
//!   code ([`Build::fold`]); a reader task on a connection of its own fetches the next batch
//!   meanwhile;
//! - copies it into `domain_event_logs` in one statement ([`Build::copy_log`] with
//!   [`event_log::copy_sql`], the very copy the live path makes per batch), into a table with no
//!   index yet; its key is built after.
//!
//! A swap's build runs the two at once, on two connections (the caller's business); a build in
//! the temporary schema, whose tables only its own connection sees, runs them one after the
//! other ([`Build::fill`]).
//!
//! [`Build::catch_up`] then applies whatever was stored since, batch by batch, all projections
//! together. Nothing here touches the live tables.

use std::time::Instant;

use event_model::EventEnvelope;
use platform::event_store::{Checkpoint, EventRow, EventStore, Horizon, OrderedEvent};
use platform::personal::DataKeys;
use projection_service::projections::{apply_batch_once, event_log, Projection};
use sqlx::{Connection, Executor, PgConnection, PgPool};

use crate::{Progress, RebuildReport};

/// Where new tables are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The session's temporary schema: gone with the connection.
    Temp,
    /// A schema of its own, named `replay_<random hex>`.
    Schema(String),
}

impl Target {
    /// A new schema's name, unique to this build.
    pub fn new_schema() -> Self {
        Self::Schema(format!("replay_{}", uuid::Uuid::new_v4().simple()))
    }

    /// `table` in this target, for SQL.
    pub fn qualified(&self, table: &str) -> String {
        match self {
            Self::Temp => format!("pg_temp.{table}"),
            Self::Schema(schema) => format!("{schema}.{table}"),
        }
    }

    /// The temporary schema is searched first anyway.
    fn search_path(&self) -> String {
        match self {
            Self::Temp => "public".to_owned(),
            Self::Schema(schema) => format!("{schema}, public"),
        }
    }
}

/// One build: which projections, for which tenant, in batches of what size, into what.
pub struct Build<'a> {
    pub pool: &'a PgPool,
    /// Read per batch, as they are now: a forgotten contact's fields come out redacted.
    pub keys: &'a DataKeys,
    pub projections: &'a [Projection],
    pub tenant: Option<&'a str>,
    pub batch_size: i64,
    pub target: Target,
}

impl Build<'_> {
    /// A connection whose unqualified names find the target's tables first. Not one from the
    /// pool: a pooled connection keeps statements prepared by the live workers, whose plans name
    /// the live tables.
    /// - Commits on it do not wait for the WAL flush: nothing built is final before the swap's
    ///   (or the merge's) own commit, and a crash only loses the build.
    /// - Each execution is planned for the tables as they are then: they start empty and grow,
    ///   and a plan made for an empty table (a sequential scan) would stay in a prepared
    ///   statement's cache.
    /// - Index builds sort in memory up to 256 MB (PostgreSQL's default, 64 MB, spills a million
    ///   audit rows to disk).
    pub async fn connect(&self) -> anyhow::Result<PgConnection> {
        let mut conn = PgConnection::connect_with(&self.pool.connect_options()).await?;
        conn.execute(
            format!(
                "set search_path = {}; set synchronous_commit = off; \
                 set plan_cache_mode = force_custom_plan; set maintenance_work_mem = '256MB'",
                self.target.search_path()
            )
            .as_str(),
        )
        .await?;
        Ok(conn)
    }

    /// Creates the target's tables, empty: the live tables' columns, defaults, checks, storage
    /// and comments, and (for the folds' upserts) the keys of `contacts` and `sessions`.
    /// `domain_event_logs` gets its key after its bulk copy ([`Self::copy_log`]).
    pub async fn create_tables(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        if let Target::Schema(schema) = &self.target {
            conn.execute(format!("create schema {schema}").as_str())
                .await?;
        }
        for table in self.projections.iter().map(|p| p.table()) {
            let temp = if self.target == Target::Temp {
                "temp "
            } else {
                ""
            };
            conn.execute(
                format!(
                    "create {temp}table {} (like public.{table} including all excluding indexes)",
                    self.target.qualified(table)
                )
                .as_str(),
            )
            .await?;
            if table != Projection::DomainEventLogs.table() {
                self.add_keys(conn, table).await?;
            }
        }
        Ok(())
    }

    /// Adds the live table's primary key, unique and exclusion constraints (same names, same
    /// definitions) to the target's table.
    async fn add_keys(&self, conn: &mut PgConnection, table: &str) -> anyhow::Result<()> {
        let keys = sqlx::query!(
            r#"select quote_ident(conname) as "name!", pg_get_constraintdef(oid) as "definition!"
                 from pg_constraint
                where conrelid = $1::text::regclass and contype in ('p', 'u', 'x') order by conname"#,
            format!("public.{table}"),
        )
        .fetch_all(&mut *conn)
        .await?;
        for key in keys {
            let (name, definition) = (key.name, key.definition);
            conn.execute(
                format!(
                    "alter table {} add constraint {name} {definition}",
                    self.target.qualified(table)
                )
                .as_str(),
            )
            .await?;
        }
        Ok(())
    }

    /// The part of the history a build takes: up to the last finished transaction (nothing can
    /// join it any more), and how many events that is.
    pub async fn bound(&self) -> anyhow::Result<(Checkpoint, u64)> {
        let bound = EventStore::finished_checkpoint(self.pool, self.tenant).await?;
        let total = EventStore::count_upto(self.pool, Some(bound), self.tenant).await?;
        metrics::gauge!("replay_events_expected").set(total as f64);
        Ok((bound, total as u64))
    }

    /// Fills the target's tables with the history up to [`Self::bound`], one step after the
    /// other; returns where it stopped (in `report.checkpoint`).
    pub async fn fill(
        &self,
        conn: &mut PgConnection,
        progress: Progress<'_>,
    ) -> anyhow::Result<RebuildReport> {
        let (bound, total) = self.bound().await?;
        let mut report = self.fold(conn, bound, total, progress).await?;
        if self.projections.contains(&Projection::DomainEventLogs) {
            report.beside(self.copy_log(conn, bound).await?);
        }
        Ok(report)
    }

    /// Folds the history up to `bound` into the target's `contacts` and `sessions` (those being
    /// rebuilt), batch by batch, each batch in its own transaction, while a reader task fetches
    /// the next one.
    pub async fn fold(
        &self,
        conn: &mut PgConnection,
        bound: Checkpoint,
        total: u64,
        progress: Progress<'_>,
    ) -> anyhow::Result<RebuildReport> {
        let mut report = RebuildReport {
            checkpoint: bound,
            ..RebuildReport::default()
        };
        let projections: Vec<Projection> = self
            .projections
            .iter()
            .copied()
            .filter(|p| *p != Projection::DomainEventLogs)
            .collect();
        if projections.is_empty() {
            return Ok(report);
        }
        let (sender, mut batches) = tokio::sync::mpsc::channel(1);
        let reader = {
            let (pool, tenant, limit) = (
                self.pool.clone(),
                self.tenant.map(str::to_owned),
                self.batch_size,
            );
            tokio::spawn(async move {
                let mut at = Checkpoint::default();
                loop {
                    let started = Instant::now();
                    let rows = EventStore::read_after(
                        &pool,
                        at,
                        limit,
                        tenant.as_deref(),
                        Horizon::Upto(bound),
                    )
                    .await?;
                    let Some(last) = rows.last().map(OrderedEvent::checkpoint) else {
                        return anyhow::Ok(());
                    };
                    at = last;
                    let envelopes = rows
                        .into_iter()
                        .map(|r| EventRow::into_envelope(r.event))
                        .collect::<Result<Vec<_>, _>>()?;
                    if sender.send((envelopes, started.elapsed())).await.is_err() {
                        return Ok(()); // the fold failed, and says why
                    }
                }
            })
        };
        let store = EventStore::new(self.pool.clone());
        say_progress(conn, 0, total).await?;
        while let Some((envelopes, read)) = batches.recv().await {
            report.add("read", read);
            let started = Instant::now();
            self.apply(conn, &store, &projections, &envelopes, &mut report)
                .await?;
            report.add("fold", started.elapsed());
            progress(report.events, total.max(report.events));
            say_progress(conn, report.events, total).await?;
        }
        reader.await??;
        Ok(report)
    }

    /// Copies the history up to `bound` into the target's `domain_event_logs` in one statement
    /// (into a table without any index: less work than keeping one up to date), then adds its
    /// key. Its report counts the rows copied as updates, and no events: see [`RebuildReport::beside`].
    pub async fn copy_log(
        &self,
        conn: &mut PgConnection,
        bound: Checkpoint,
    ) -> anyhow::Result<RebuildReport> {
        let mut report = RebuildReport {
            checkpoint: bound,
            ..RebuildReport::default()
        };
        let started = Instant::now();
        let mut tx = conn.begin().await?;
        // A bulk read of the history: the build connection's planner settings are for batches.
        tx.execute("set local plan_cache_mode = auto").await?;
        report.applied = sqlx::query(&format!(
            "{} where (e.transaction_id, e.position) <= ($1::text::xid8, $2) \
               and ($3::text is null or e.tenant_id = $3)",
            event_log::copy_sql()
        ))
        .bind(bound.transaction_id.to_string())
        .bind(bound.position)
        .bind(self.tenant)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        report.add("copy domain_event_logs", started.elapsed());
        let started = Instant::now();
        self.add_keys(conn, Projection::DomainEventLogs.table())
            .await?;
        report.add("key domain_event_logs", started.elapsed());
        Ok(report)
    }

    /// Applies one batch to the target's tables in a transaction of its own (a savepoint when
    /// `conn` is in one) and counts it in `report`.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        store: &EventStore,
        projections: &[Projection],
        envelopes: &[EventEnvelope],
        report: &mut RebuildReport,
    ) -> anyhow::Result<()> {
        let mut tx = conn.begin().await?;
        let batch = apply_batch_once(&mut tx, store, self.keys, projections, envelopes).await?;
        tx.commit().await?;
        report.events += envelopes.len() as u64;
        report.applied += batch.applied as u64;
        metrics::counter!("replay_events_total").increment(envelopes.len() as u64);
        Ok(())
    }

    /// Applies every event after `from` (up to `horizon`) to the target's tables, all
    /// projections together, a batch per transaction (a savepoint when `conn` is in one).
    pub async fn catch_up(
        &self,
        conn: &mut PgConnection,
        from: Checkpoint,
        horizon: Horizon,
    ) -> anyhow::Result<RebuildReport> {
        let store = EventStore::new(self.pool.clone());
        let mut report = RebuildReport {
            checkpoint: from,
            ..RebuildReport::default()
        };
        loop {
            let started = Instant::now();
            let rows = EventStore::read_after(
                &mut *conn,
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
            self.apply(conn, &store, self.projections, &envelopes, &mut report)
                .await?;
            report.add("catch-up", started.elapsed());
            report.checkpoint = last;
        }
        Ok(report)
    }
}

impl RebuildReport {
    /// Adds the bulk copy into `domain_event_logs` that ran beside this fold.
    pub fn beside(&mut self, copied: RebuildReport) {
        self.applied += copied.applied;
        for phase in copied.phases {
            self.add(
                &phase.name,
                std::time::Duration::from_secs_f64(phase.seconds),
            );
        }
        if self.events == 0 {
            // No fold: the copy is what read the history.
            self.events = copied.applied;
            metrics::counter!("replay_events_total").increment(copied.applied);
        }
    }
}

/// Says how far a rebuild is in its connection's `application_name`, which anyone who may look
/// at the server's sessions sees (the console's pipeline page shows the rebuild's lock holder).
async fn say_progress(conn: &mut PgConnection, done: u64, total: u64) -> sqlx::Result<()> {
    let said = format!("replay-tool rebuild: {done} of {} events", total.max(done));
    sqlx::query!("select set_config('application_name', $1, false)", said)
        .fetch_one(conn)
        .await?;
    Ok(())
}
