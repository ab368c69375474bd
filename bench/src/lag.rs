//! End-to-end lag: from the moment a command is answered to the moment its version is in the
//! read table the query service serves. One task polls the read tables for every command still
//! waiting, with one set-based query per table every 2 ms, so measuring costs a few queries a
//! second rather than one poller per command.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::workload::{Accepted, Visible};

pub struct LagReport {
    /// When each command of the measuring window was accepted, and its lag.
    pub lags: Vec<(Instant, Duration)>,
    /// Commands of the window never seen before the tracker gave up.
    pub unseen: usize,
}

struct Waiting {
    version: i64,
    accepted: Instant,
    measured: bool,
}

/// Tracks until the sender side is closed and everything is seen, or `give_up` after that.
pub async fn track(
    database_url: &str,
    accepted: mpsc::UnboundedReceiver<Accepted>,
    give_up: Duration,
) -> anyhow::Result<LagReport> {
    track_polling(database_url, accepted, give_up, Duration::from_millis(2)).await
}

/// [`track`], reading the tables every `poll` while anything is waiting: a coarser poll costs
/// the system under a closed loop fewer queries, and measures the lag to within `poll`.
pub async fn track_polling(
    database_url: &str,
    mut accepted: mpsc::UnboundedReceiver<Accepted>,
    give_up: Duration,
    poll: Duration,
) -> anyhow::Result<LagReport> {
    let options = platform::db::connect_options(database_url)?;
    let mut conn = PgConnection::connect_with(&options).await?;
    let mut waiting: [HashMap<Uuid, Vec<Waiting>>; 2] = [HashMap::new(), HashMap::new()];
    let mut lags = Vec::new();
    let mut closed_at: Option<Instant> = None;
    loop {
        loop {
            match accepted.try_recv() {
                Ok(a) => {
                    let (table, id, version) = match a.visible {
                        Visible::Contact(id, v) => (0, id, v),
                        Visible::Session(id, v) => (1, id, v),
                    };
                    waiting[table].entry(id).or_default().push(Waiting {
                        version,
                        accepted: a.accepted,
                        measured: a.measured,
                    });
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed_at.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
        if waiting.iter().all(HashMap::is_empty) {
            if closed_at.is_some() {
                break;
            }
        } else {
            for (table, name) in [(0, "contacts"), (1, "sessions")] {
                if waiting[table].is_empty() {
                    continue;
                }
                let ids: Vec<Uuid> = waiting[table].keys().copied().collect();
                let rows: Vec<(Uuid, i32)> = sqlx::query_as(&format!(
                    "select id, version from {name} where id = any($1)"
                ))
                .bind(&ids)
                .fetch_all(&mut conn)
                .await?;
                let seen = Instant::now();
                for (id, version) in rows {
                    if let Some(list) = waiting[table].get_mut(&id) {
                        list.retain(|w| {
                            if w.version <= i64::from(version) {
                                if w.measured {
                                    lags.push((w.accepted, seen - w.accepted));
                                }
                                false
                            } else {
                                true
                            }
                        });
                        if list.is_empty() {
                            waiting[table].remove(&id);
                        }
                    }
                }
            }
        }
        if closed_at.is_some_and(|t| t.elapsed() > give_up) {
            break;
        }
        tokio::time::sleep(poll).await;
    }
    let unseen = waiting
        .iter()
        .flat_map(|m| m.values())
        .flatten()
        .filter(|w| w.measured)
        .count();
    let _ = conn.close().await;
    Ok(LagReport { lags, unseen })
}
