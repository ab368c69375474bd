//! Steering a pool to the right server of several: sqlx opens every connection to one set of
//! options, so a watcher per pool asks the hosts what they are and points the pool's new
//! connections at the first that qualifies ([`SessionAttrs::choose`]), as libpq would at each
//! connect. Each new connection is checked on arrival, and the connections made before the pool
//! last moved away from a host are closed instead of handed out: after a failover, none is left
//! on a server that became read-only or went away.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection, PgPool};
use tokio::sync::Notify;

use super::hosts::{host_port, HostState, Target};

/// How often the host in use is asked whether it still qualifies (one small statement on a
/// connection of the watcher's own): how soon a promotion or a demotion is noticed.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// How long a host may take to connect or answer before it counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a pool's new connections go.
#[derive(Debug, Default, Clone, Copy)]
struct Chosen {
    /// The host new connections go to; `None` while none qualifies.
    now: Option<usize>,
    /// The host they went to last (`now`, or the one before an outage).
    last: Option<usize>,
}

/// One pool's view of its hosts.
pub(super) struct Watch {
    target: Target,
    /// The pool's name (its connections' `application_name`), for logs and metrics.
    name: String,
    chosen: Mutex<Chosen>,
    epoch: Instant,
    /// When the pool last moved away from a host, in milliseconds since `epoch`.
    left_host_at_ms: AtomicU64,
    /// Rung by a connection that arrived at a host that does not qualify.
    wake: Notify,
}

impl Watch {
    pub(super) fn new(target: Target) -> Arc<Self> {
        let name = target.hosts[0]
            .get_application_name()
            .unwrap_or("ventros")
            .to_owned();
        Arc::new(Self {
            target,
            name,
            chosen: Mutex::new(Chosen::default()),
            epoch: Instant::now(),
            left_host_at_ms: AtomicU64::new(0),
            wake: Notify::new(),
        })
    }

    /// A new connection's check (the pool's `after_connect`): refused, and the watcher woken,
    /// when its server does not qualify; the pool then tries again, by then perhaps elsewhere.
    pub(super) async fn check(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let state = state_of(conn).await?;
        if self.target.attrs.accepts(state) {
            return Ok(());
        }
        self.wake.notify_one();
        Err(sqlx::Error::Configuration(
            format!(
                "the server is {} and the URL asks for target_session_attrs={}",
                describe(Some(state)),
                self.target.attrs
            )
            .into(),
        ))
    }

    /// Whether an idle connection `age` old may be handed out (the pool's `before_acquire`):
    /// not if it was made before the pool last moved away from a host.
    pub(super) fn keeps(&self, age: Duration) -> bool {
        let left = Duration::from_millis(self.left_host_at_ms.load(Ordering::Acquire));
        age <= self.epoch.elapsed().saturating_sub(left)
    }

    /// Watches until the pool is closed.
    pub(super) fn spawn(self: Arc<Self>, pool: PgPool) {
        tokio::spawn(async move {
            let mut probes: Vec<Option<PgConnection>> =
                self.target.hosts.iter().map(|_| None).collect();
            while !pool.is_closed() {
                self.round(&pool, &mut probes).await;
                tokio::select! {
                    _ = tokio::time::sleep(WATCH_EVERY) => {}
                    _ = self.wake.notified() => {}
                }
            }
        });
    }

    /// Asks the host in use; when it no longer settles the choice, asks them all and moves.
    async fn round(&self, pool: &PgPool, probes: &mut [Option<PgConnection>]) {
        let Chosen { now: current, last } = *self.chosen.lock().expect("not poisoned");
        if let Some(i) = current {
            let state = probe(&mut probes[i], &self.target.hosts[i]).await;
            if state.is_some_and(|s| self.target.attrs.settled_on(s)) {
                return;
            }
        }
        let states = futures::future::join_all(
            probes
                .iter_mut()
                .zip(&self.target.hosts)
                .map(|(held, host)| probe(held, host)),
        )
        .await;
        let chosen = self.target.attrs.choose(&states);
        if chosen == current {
            return;
        }
        if current.is_some() {
            self.left_host_at_ms
                .store(self.epoch.elapsed().as_millis() as u64, Ordering::Release);
        }
        *self.chosen.lock().expect("not poisoned") = Chosen {
            now: chosen,
            last: chosen.or(last),
        };
        metrics::gauge!("database_host_available", "pool" => self.name.clone())
            .set(if chosen.is_some() { 1.0 } else { 0.0 });
        let hosts = describe_hosts(&self.target, &states);
        match chosen {
            Some(i) => {
                pool.set_connect_options(self.target.hosts[i].clone());
                if last.is_some_and(|last| last != i) {
                    metrics::counter!("database_host_switches_total", "pool" => self.name.clone())
                        .increment(1);
                }
                tracing::info!(pool = %self.name, host = %host_port(&self.target.hosts[i]), %hosts, "database connections go to this host");
            }
            None => tracing::warn!(
                pool = %self.name,
                attrs = %self.target.attrs,
                %hosts,
                "no database host qualifies: requests that need one fail until one does"
            ),
        }
    }
}

/// The first host of `target` that qualifies, asked now (each on a connection of its own):
/// where a pool starts, and where migrations run.
pub(super) async fn find(target: &Target) -> anyhow::Result<PgConnectOptions> {
    let states = futures::future::join_all(target.hosts.iter().map(|host| async {
        let mut held = None;
        probe(&mut held, host).await
    }))
    .await;
    match target.attrs.choose(&states) {
        Some(i) => Ok(target.hosts[i].clone()),
        None => anyhow::bail!(
            "no host of the database URL qualifies for target_session_attrs={}: {}",
            target.attrs,
            describe_hosts(target, &states)
        ),
    }
}

/// Each host of `target` and what it was found to be, for logs and errors.
fn describe_hosts(target: &Target, states: &[Option<HostState>]) -> String {
    target
        .hosts
        .iter()
        .zip(states)
        .map(|(host, state)| format!("{} {}", host_port(host), describe(*state)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a host is, in words.
fn describe(state: Option<HostState>) -> &'static str {
    match state {
        None => "unreachable",
        Some(s) if s.in_recovery => "a standby",
        Some(s) if s.read_only => "a read-only primary",
        Some(_) => "the primary",
    }
}

/// A host's state, on the connection `held` for it (made, or made again, when there is none or
/// it broke); `None` when the host does not answer within [`PROBE_TIMEOUT`].
async fn probe(held: &mut Option<PgConnection>, host: &PgConnectOptions) -> Option<HostState> {
    if let Some(conn) = held.as_mut() {
        if let Ok(Ok(state)) = tokio::time::timeout(PROBE_TIMEOUT, state_of(conn)).await {
            return Some(state);
        }
        *held = None;
    }
    let mut conn = tokio::time::timeout(PROBE_TIMEOUT, connect(host))
        .await
        .ok()?
        .ok()?;
    let state = tokio::time::timeout(PROBE_TIMEOUT, state_of(&mut conn))
        .await
        .ok()?
        .ok()?;
    *held = Some(conn);
    Some(state)
}

/// A connection to `host`'s database, or to its `postgres` database while the first does not
/// exist yet (before migrations create it): either tells what the server is.
async fn connect(host: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    match host.connect().await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            host.clone().database("postgres").connect().await
        }
        connected => connected,
    }
}

async fn state_of(conn: &mut PgConnection) -> Result<HostState, sqlx::Error> {
    let row = sqlx::query!(
        r#"select pg_is_in_recovery() as "in_recovery!",
                  current_setting('transaction_read_only') = 'on' as "read_only!""#
    )
    .fetch_one(conn)
    .await?;
    Ok(HostState {
        in_recovery: row.in_recovery,
        read_only: row.read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_made_before_the_pool_left_a_host_are_not_handed_out() {
        let watch = Watch::new(Target::parse("postgres://u@h1,h2/db").unwrap());
        // Before any move every connection is kept, however old.
        assert!(watch.keeps(Duration::ZERO));
        std::thread::sleep(Duration::from_millis(30));
        assert!(watch.keeps(Duration::from_millis(25)));
        watch
            .left_host_at_ms
            .store(watch.epoch.elapsed().as_millis() as u64, Ordering::Release);
        assert!(
            !watch.keeps(Duration::from_millis(25)),
            "made before the move"
        );
        assert!(watch.keeps(Duration::ZERO), "made after it");
    }
}
