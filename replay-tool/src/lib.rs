//! Rebuilding and verifying the read tables from `contact_event_store`.
//!
//! A rebuild runs in one transaction: it takes the chosen read tables (writes wait, reads go on
//! seeing the old rows until commit), deletes their rows and their `processed_events`, then
//! streams the store in `(transaction_id, position)` order in batches through
//! [`projection_service::projections::apply_batch`], the live workers' own code. A last pass
//! reads what younger transactions committed meanwhile. Memory stays flat: only one batch is
//! held at a time.
//!
//! Afterwards the live consumers carry on: an event the rebuild already applied is in
//! `processed_events` (and below the row's version), so its delivery changes nothing; one the
//! rebuild did not see is applied by them as usual.

use platform::event_store::{Checkpoint, EventRow, EventStore, Horizon, OrderedEvent};
use projection_service::projections::{apply_batch, Projection};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

/// Progress: events done so far, and the total expected.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

#[derive(Debug, Clone, Default, Serialize)]
pub struct RebuildReport {
    pub events: u64,
    pub applied: u64,
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
    projections: &[Projection],
    tenant: Option<&str>,
    batch_size: i64,
    progress: Progress<'_>,
) -> anyhow::Result<RebuildReport> {
    let mut tx = pool.begin().await?;
    let report = rebuild_in(&mut tx, pool, projections, tenant, batch_size, progress).await?;
    tx.commit().await?;
    Ok(report)
}

/// Rebuilds every projection inside a transaction, diffs the result against the live tables,
/// and rolls back: nothing changes. An empty result means live = rebuilt, column for column.
pub async fn verify(
    pool: &PgPool,
    tenant: Option<&str>,
    batch_size: i64,
    progress: Progress<'_>,
) -> anyhow::Result<Vec<TableDiff>> {
    let mut tx = pool.begin().await?;
    for p in Projection::ALL {
        sqlx::query(&format!(
            "create temp table live_{t} on commit drop as select * from {t} where ($1::text is null or tenant_id = $1)",
            t = p.table()
        ))
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    }
    rebuild_in(
        &mut tx,
        pool,
        &Projection::ALL,
        tenant,
        batch_size,
        progress,
    )
    .await?;
    let mut diffs = Vec::new();
    for p in Projection::ALL {
        let t = p.table();
        let count = |from: &str, minus: &str| {
            format!(
                "select count(*) from (select * from {from} where ($1::text is null or tenant_id = $1) \
                 except select * from {minus} where ($1::text is null or tenant_id = $1)) d"
            )
        };
        let only_live: i64 = sqlx::query_scalar(&count(&format!("live_{t}"), t))
            .bind(tenant)
            .fetch_one(&mut *tx)
            .await?;
        let only_rebuilt: i64 = sqlx::query_scalar(&count(t, &format!("live_{t}")))
            .bind(tenant)
            .fetch_one(&mut *tx)
            .await?;
        if only_live + only_rebuilt > 0 {
            let sample_ids: Vec<String> = sqlx::query_scalar(&format!(
                "select distinct id::text from ((select * from live_{t} except select * from {t}) \
                 union all (select * from {t} except select * from live_{t})) d \
                 where ($1::text is null or tenant_id = $1) order by 1 limit 10"
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

async fn rebuild_in(
    tx: &mut Transaction<'_, Postgres>,
    pool: &PgPool,
    projections: &[Projection],
    tenant: Option<&str>,
    batch_size: i64,
    progress: Progress<'_>,
) -> anyhow::Result<RebuildReport> {
    let store = EventStore::new(pool.clone());
    // A contacts-only rebuild deletes contact rows that sessions still reference; the foreign key
    // is deferrable and checked at commit, when every contact is back.
    sqlx::query("set constraints all deferred")
        .execute(&mut **tx)
        .await?;
    let tables: Vec<&str> = projections.iter().map(|p| p.table()).collect();
    sqlx::query(&format!(
        "lock table {} in exclusive mode",
        tables.join(", ")
    ))
    .execute(&mut **tx)
    .await?;
    for table in &tables {
        sqlx::query(&format!(
            "delete from {table} where ($1::text is null or tenant_id = $1)"
        ))
        .bind(tenant)
        .execute(&mut **tx)
        .await?;
    }
    let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
    sqlx::query(
        "delete from processed_events p where p.consumer_name = any($1) and ($2::text is null or exists \
            (select 1 from contact_event_store e where e.id = p.event_id and e.tenant_id = $2))",
    )
    .bind(&names)
    .bind(tenant)
    .execute(&mut **tx)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "select count(*) from contact_event_store where ($1::text is null or tenant_id = $1)",
    )
    .bind(tenant)
    .fetch_one(&mut **tx)
    .await?;
    let mut report = RebuildReport::default();
    let mut checkpoint = Checkpoint::default();
    for horizon in [Horizon::Finished, Horizon::Visible] {
        loop {
            let rows =
                EventStore::read_after(&mut **tx, checkpoint, batch_size, tenant, horizon).await?;
            let Some(last) = rows.last().map(OrderedEvent::checkpoint) else {
                break;
            };
            let envelopes = rows
                .into_iter()
                .map(|r| EventRow::into_envelope(r.event))
                .collect::<Result<Vec<_>, _>>()?;
            let batch = apply_batch(tx, &store, projections, &envelopes).await?;
            report.events += envelopes.len() as u64;
            report.applied += batch.applied as u64;
            checkpoint = last;
            progress(report.events, total.max(report.events as i64) as u64);
        }
    }
    Ok(report)
}
