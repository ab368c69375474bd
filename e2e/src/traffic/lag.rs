//! The end-to-end lag of a running system, sampled while a scenario runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use projection_service::projections::covers_sql;
use sqlx::PgPool;
use tokio::task::JoinHandle;

/// End-to-end lag, sampled: the age of the oldest stored event not yet applied (0 when every
/// event is applied).
pub struct LagMonitor {
    samples: Arc<Mutex<Vec<(tokio::time::Instant, f64)>>>,
    handle: JoinHandle<()>,
}

/// The lag above which the system counts as behind.
pub const LAGGING_SECS: f64 = 1.0;

impl LagMonitor {
    pub fn start(pool: PgPool) -> Self {
        let samples: Arc<Mutex<Vec<(tokio::time::Instant, f64)>>> = Arc::default();
        let handle = tokio::spawn({
            let samples = samples.clone();
            async move {
                // A connection of its own: a sample never waits for the pool.
                let mut conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>> = None;
                loop {
                    if conn.is_none() {
                        conn = pool.acquire().await.ok();
                        // The tables grow faster than autovacuum analyses them; on stale
                        // statistics the planner picks a nested-loop anti-join that takes
                        // seconds. A hash anti-join stays linear.
                        if let Some(c) = conn.as_mut() {
                            if sqlx::query("set enable_nestloop = off")
                                .execute(&mut **c)
                                .await
                                .is_err()
                            {
                                conn = None;
                            }
                        }
                    }
                    let Some(c) = conn.as_mut() else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    // Stamped when asked, not when answered: on a starved machine the answer can
                    // take seconds, and the lag it reports is the lag at the query's snapshot.
                    let asked = tokio::time::Instant::now();
                    match sqlx::query_scalar::<_, f64>(&format!(
                        "select coalesce(extract(epoch from statement_timestamp()::timestamp - min(e.created_at)), 0)::float8 \
                           from contact_event_store e \
                          where not exists (select 1 from processed_events p \
                                             where p.event_id = e.id and {})",
                        covers_sql("p", "'domain_event_logs'")
                    ))
                    .fetch_one(&mut **c)
                    .await
                    {
                        Ok(lag) => samples.lock().unwrap().push((asked, lag)),
                        Err(_) => conn = None,
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Self { samples, handle }
    }

    /// The worst lag sampled between `from` and `to`.
    pub fn worst(&self, from: tokio::time::Instant, to: tokio::time::Instant) -> f64 {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, lag)| *lag)
            .fold(0.0, f64::max)
    }

    /// The worst lag of each second from `since` to `until`, e.g. `0.1 0.2 3.8 - 0.1` (`-`: no
    /// sample that second).
    pub fn timeline(&self, since: tokio::time::Instant, until: tokio::time::Instant) -> String {
        let samples = self.samples.lock().unwrap();
        let mut seconds: Vec<Option<f64>> = Vec::new();
        for (t, lag) in samples.iter().filter(|(t, _)| *t >= since && *t <= until) {
            let i = (*t - since).as_secs() as usize;
            if seconds.len() <= i {
                seconds.resize(i + 1, None);
            }
            seconds[i] = Some(seconds[i].map_or(*lag, |worst| worst.max(*lag)));
        }
        seconds
            .iter()
            .map(|l| l.map_or("-".to_owned(), |l| format!("{l:.1}")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// How long after `since` the lag was last above [`LAGGING_SECS`] (zero if it never was),
    /// looking at the samples up to `until`; `None` if it was still above at `until`.
    pub fn recovered_after(
        &self,
        since: tokio::time::Instant,
        until: tokio::time::Instant,
    ) -> Option<Duration> {
        let samples = self.samples.lock().unwrap();
        let window: Vec<_> = samples
            .iter()
            .filter(|(t, _)| *t >= since && *t <= until)
            .collect();
        if window.last().is_some_and(|(_, lag)| *lag > LAGGING_SECS) {
            return None;
        }
        Some(
            window
                .iter()
                .rev()
                .find(|(_, lag)| *lag > LAGGING_SECS)
                .map(|(t, _)| *t - since)
                .unwrap_or_default(),
        )
    }
}

impl Drop for LagMonitor {
    fn drop(&mut self) {
        self.handle.abort();
    }
}
