//! Personal data maintenance: `encrypt-history` (the one sanctioned rewrite of history, see
//! `platform::history`) and the KEK rotation (`kek rotate`). Both work in batches, each its own
//! transaction, and can be stopped and run again: they pick up what is left.

use std::time::Instant;

use anyhow::Context;

use platform::event_store::EventStore;
use platform::history::{self, Rewritten};
use platform::personal::DataKeys;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::Progress;

#[derive(Debug, Clone, Default, Serialize)]
pub struct EncryptReport {
    pub dry_run: bool,
    #[serde(flatten)]
    pub rewritten: Rewritten,
    /// Audit rows brought to their sealed event afterwards (written late from a plaintext message).
    pub log_rows_synced: u64,
    pub seconds: f64,
    /// What this cannot reach.
    pub note: &'static str,
}

const BROKER_NOTE: &str = "messages the previous release published in the clear stay in the \
     NATS stream until its max age (7 days); purge the stream once the consumers have caught up to \
     drop them sooner";

impl std::fmt::Display for EncryptReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.rewritten;
        let verb = if self.dry_run { "would seal" } else { "sealed" };
        writeln!(
            f,
            "{verb} {} events ({} of forgotten contacts redacted), {} outbox rows, {} audit rows, \
             {} dead letters; {} snapshots sealed, {} deleted; {} data keys created; {:.1} s",
            r.events_sealed + r.events_redacted,
            r.events_redacted,
            r.outbox_rows,
            r.log_rows + self.log_rows_synced,
            r.dead_letters,
            r.snapshots_sealed,
            r.snapshots_deleted,
            r.keys_created,
            self.seconds
        )?;
        writeln!(f, "note: {}", self.note)
    }
}

/// Seals the personal fields of every event, copy and snapshot stored in the clear.
pub async fn encrypt_history(
    pool: &PgPool,
    keys: &DataKeys,
    batch_size: i64,
    dry_run: bool,
    progress: Progress<'_>,
) -> anyhow::Result<EncryptReport> {
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    let total = history::plain_events_left(&mut conn).await?.max(0) as u64;
    drop(conn);
    let mut report = EncryptReport {
        dry_run,
        note: BROKER_NOTE,
        ..EncryptReport::default()
    };
    let mut after = 0;
    let mut done = 0u64;
    loop {
        let mut tx = pool.begin().await?;
        let events = history::plain_events(&mut tx, after, batch_size).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            break;
        };
        report.rewritten += history::seal_plain(&mut tx, keys, &events, dry_run).await?;
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        after = last;
        done += events.len() as u64;
        metrics::counter!("encrypt_history_events_total").increment(events.len() as u64);
        progress(done, total.max(done));
    }
    if dry_run {
        let mut conn = pool.acquire().await?;
        report.rewritten.snapshots_sealed =
            EventStore::plain_snapshots_left(&mut *conn).await? as u64;
    } else {
        loop {
            let mut tx = pool.begin().await?;
            let step = history::seal_plain_snapshots(&mut tx, keys, batch_size, false).await?;
            tx.commit().await?;
            let n = step.snapshots_sealed + step.snapshots_deleted;
            report.rewritten += step;
            if n == 0 {
                break;
            }
        }
        let mut conn = pool.acquire().await?;
        report.log_rows_synced = history::sync_log_copies(&mut conn).await?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RotateReport {
    /// The KEK every key is wrapped by now.
    pub kek: String,
    pub rewrapped: u64,
    /// Webhook signing secrets sealed anew under the KEK.
    pub webhook_secrets: u64,
    /// Keys per KEK afterwards (`destroyed`: forgotten contacts).
    pub keys: Vec<(String, i64)>,
}

impl std::fmt::Display for RotateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} data keys wrapped anew under KEK {}",
            self.rewrapped, self.kek
        )?;
        writeln!(
            f,
            "{} webhook signing secrets sealed anew under KEK {}",
            self.webhook_secrets, self.kek
        )?;
        for (kek, n) in &self.keys {
            writeln!(f, "  {kek}: {n}")?;
        }
        Ok(())
    }
}

/// Wraps every data key under the current KEK (`DATA_KEK`), unwrapping with whichever KEK it is
/// under now (`DATA_KEK_PREVIOUS`, or none for keys stored unwrapped in development).
pub async fn rotate_kek(
    pool: &PgPool,
    keys: &DataKeys,
    batch_size: i64,
    progress: Progress<'_>,
) -> anyhow::Result<RotateReport> {
    anyhow::ensure!(
        keys.keyring().wraps(),
        "set DATA_KEK (or DATA_KEK_FILE) to the new KEK, and DATA_KEK_PREVIOUS to the old one"
    );
    let mut report = RotateReport {
        kek: keys.keyring().current_id().to_owned(),
        ..RotateReport::default()
    };
    loop {
        let mut tx = pool.begin().await?;
        let n = keys.rewrap_batch(&mut tx, batch_size).await?;
        tx.commit().await?;
        report.rewrapped += n;
        progress(report.rewrapped, report.rewrapped);
        if n == 0 {
            break;
        }
    }
    report.webhook_secrets = reseal_webhook_secrets(pool, keys.keyring(), batch_size).await?;
    let mut conn = pool.acquire().await?;
    report.keys = DataKeys::census(&mut conn).await?;
    Ok(report)
}

/// Seals every webhook signing secret not under the current KEK (under an earlier one, or
/// stored in the clear) anew under it, a batch per transaction; returns how many.
async fn reseal_webhook_secrets(
    pool: &PgPool,
    keyring: &platform::crypto::Keyring,
    batch_size: i64,
) -> anyhow::Result<u64> {
    let (mut after, mut resealed) = (Uuid::nil(), 0);
    loop {
        let mut tx = pool.begin().await?;
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "select id, secret from webhook_subscriptions
              where id > $1 and secret is not null order by id limit $2 for update",
        )
        .bind(after)
        .bind(batch_size)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = rows.last().map(|r| r.0) else {
            return Ok(resealed);
        };
        after = last;
        let (mut ids, mut secrets) = (Vec::new(), Vec::new());
        for (id, stored) in rows {
            if keyring.secret_is_current(&stored) {
                continue;
            }
            let secret = platform::webhooks::open_secret(keyring, id, &stored)
                .with_context(|| format!("the signing secret of webhook subscription {id}"))?;
            secrets.push(platform::webhooks::seal_secret(keyring, id, &secret));
            ids.push(id);
        }
        sqlx::query(
            "update webhook_subscriptions w set secret = n.secret
               from unnest($1::uuid[], $2::text[]) as n(id, secret) where w.id = n.id",
        )
        .bind(&ids)
        .bind(&secrets)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        resealed += ids.len() as u64;
    }
}
