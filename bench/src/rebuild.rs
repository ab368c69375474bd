//! Scenario 4: `replay_tool::rebuild` of every projection, run in a child process (this very
//! binary, `bench rebuild-child`) so that its peak RSS is the rebuild's own and not the
//! benchmark's; and baseline (c): `COPY` of the rows it produced into the same tables.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::TryStreamExt;
use projection_service::projections::Projection;
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection};

/// What the child reports on stdout, as one JSON line.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChildReport {
    pub events: u64,
    pub applied: u64,
    pub seconds: f64,
    /// Resident set before the rebuild started (runtime, pool) and its high-water mark after.
    pub rss_before_kib: u64,
    pub hwm_after_kib: u64,
    /// Where the rebuild's time went (`RebuildReport::phases_line`).
    pub phases: String,
}

/// A `VmXxx:  1234 kB` line of `/proc/<pid>/status`.
pub fn proc_status_kib(pid: &str, field: &str) -> Option<u64> {
    proc_file_kib(&format!("/proc/{pid}/status"), field)
}

/// A `Name:  1234 kB` line of a `/proc` file.
pub fn proc_file_kib(path: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The child's side: rebuild and report.
pub async fn child(database_url: &str, batch_size: i64) -> anyhow::Result<()> {
    let pool = platform::db::connect_and_migrate(database_url, 4).await?;
    let rss_before_kib = proc_status_kib("self", "VmRSS:").unwrap_or(0);
    let started = Instant::now();
    let report = replay_tool::rebuild(
        &pool,
        &crate::data_keys(),
        &Projection::ALL,
        None,
        batch_size,
        &|_, _| {},
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let hwm_after_kib = proc_status_kib("self", "VmHWM:").unwrap_or(0);
    println!(
        "{}",
        serde_json::to_string(&ChildReport {
            events: report.events,
            applied: report.applied,
            seconds,
            rss_before_kib,
            hwm_after_kib,
            phases: report.phases_line(),
        })?
    );
    pool.close().await;
    Ok(())
}

pub struct Observed {
    pub report: ChildReport,
    /// The child's resident set, polled every 100 ms: (time since start, KiB).
    pub samples: Vec<(Duration, u64)>,
}

impl Observed {
    /// The resident set at a fraction of the run (the last sample before it).
    pub fn rss_at(&self, fraction: f64) -> u64 {
        let end = self.samples.last().map(|s| s.0).unwrap_or_default();
        self.samples
            .iter()
            .take_while(|s| s.0.as_secs_f64() <= end.as_secs_f64() * fraction)
            .last()
            .map(|s| s.1)
            .unwrap_or(0)
    }

    pub fn polled_peak_kib(&self) -> u64 {
        self.samples.iter().map(|s| s.1).max().unwrap_or(0)
    }
}

/// Runs the rebuild in a child process and watches its memory.
pub async fn run_child(database_url: &str, batch_size: i64) -> anyhow::Result<Observed> {
    let exe = std::env::current_exe()?;
    let child = tokio::process::Command::new(exe)
        .arg("rebuild-child")
        .arg("--database-url")
        .arg(database_url)
        .arg("--batch-size")
        .arg(batch_size.to_string())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().map(|p| p.to_string()).unwrap_or_default();
    let output = child.wait_with_output();
    tokio::pin!(output);
    let mut samples = Vec::new();
    let started = Instant::now();
    let output = loop {
        tokio::select! {
            out = &mut output => break out?,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if let Some(rss) = proc_status_kib(&pid, "VmRSS:") {
                    samples.push((started.elapsed(), rss));
                }
            }
        }
    };
    anyhow::ensure!(
        output.status.success(),
        "rebuild child failed: {}",
        output.status
    );
    let text = String::from_utf8(output.stdout)?;
    let report: ChildReport = serde_json::from_str(text.lines().last().unwrap_or_default())?;
    Ok(Observed { report, samples })
}

/// The tables a rebuild writes, in an order their foreign keys accept.
pub const READ_TABLES: [&str; 3] = ["contacts", "sessions", "domain_event_logs"];

pub struct CopyTimings {
    /// COPY into the three read tables.
    pub read_tables: Duration,
    pub rows: u64,
}

/// Baseline (c): takes the rebuilt rows out with `COPY … TO STDOUT`, then times `COPY … FROM
/// STDIN` of them into the emptied tables (same indexes, same constraints) in one transaction.
/// `processed_events` is not part of it: a rebuild leaves that table to the live consumers.
pub async fn copy_baseline(database_url: &str) -> anyhow::Result<CopyTimings> {
    let mut conn =
        PgConnection::connect_with(&platform::db::connect_options(database_url)?).await?;
    let mut dumps = Vec::new();
    for table in READ_TABLES {
        let mut data = BytesMut::new();
        let mut out = conn
            .copy_out_raw(&format!("copy {table} to stdout"))
            .await?;
        while let Some(chunk) = out.try_next().await? {
            data.extend_from_slice(&chunk);
        }
        drop(out);
        dumps.push(data.freeze());
    }
    let rows = dumps
        .iter()
        .map(|d| d.iter().filter(|b| **b == b'\n').count() as u64)
        .sum();
    let mut tx = conn.begin().await?;
    sqlx::query("truncate contacts, sessions, domain_event_logs cascade")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let started = Instant::now();
    let mut tx = conn.begin().await?;
    for (table, data) in READ_TABLES.iter().zip(dumps) {
        let mut copy = tx.copy_in_raw(&format!("copy {table} from stdin")).await?;
        copy.send(data).await?;
        copy.finish().await?;
    }
    tx.commit().await?;
    let read_tables = started.elapsed();
    let _ = conn.close().await;
    Ok(CopyTimings { read_tables, rows })
}
