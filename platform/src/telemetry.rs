//! Logging, to stderr (stdout is kept for what a command prints, e.g. `bootstrap`'s JSON): JSON
//! lines when not on a terminal (what a log pipeline wants), readable text on one.
//! `RUST_LOG` filters (default `info`); `LOG_FORMAT=json|text` overrides the choice.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
}

/// For tests: text logs through the test harness's capture (shown only for a failing test).
pub fn init_for_tests() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let _ = fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .compact()
        .try_init();
}
