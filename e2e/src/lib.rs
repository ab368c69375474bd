//! The test harness: a fresh database per test, a JetStream stream per test (or a private
//! nats-server that a test may stop), both services built in-process exactly as `main` builds
//! them, and small HTTP helpers. Everything a test creates is removed when it is dropped.

pub mod cluster;
pub mod db;
pub mod nats;
pub mod nats_security;
mod options;
pub mod postgres;
pub mod process;
mod requests;
pub mod service;
mod system;
pub mod traces;
pub mod traffic;

use std::time::Duration;

pub use db::{
    database_server, login_url, outbox_as_an_earlier_release_left_it, park_event, settings_for,
    TestDb,
};
pub use nats::{NatsServer, SecuredBroker, TestStream};
pub use nats_security::{BrokerSecurity, Login};
pub use options::Options;
pub use requests::Reply;
pub use system::{Tenant, TestSystem};

/// `processed_events` as `(event_id, name)` pairs, one per projection an event was applied to
/// (a row names every projection its batch applied the event to, joined by `+`).
pub const APPLIED_PAIRS: &str = "(select pe.event_id, p.name from processed_events pe \
     cross join unnest(string_to_array(pe.consumer_name, '+')) as p(name))";

/// The value of a Prometheus sample: the sum over every series of `family` whose labels contain
/// all of `labels`.
pub fn sample(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Asks `check` every 20 ms until it answers true (true) or `within` has passed (false).
pub async fn wait_until<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs an async clean-up from a `Drop`, on its own runtime (a `Drop` cannot await).
pub(crate) fn block_on_cleanup<F: std::future::Future<Output = ()> + Send + 'static>(f: F) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(f);
        }
    })
    .join();
}
