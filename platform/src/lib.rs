//! What both services (and the replay tool) share, and nothing domain-specific: configuration,
//! the database pool and migrations, the NATS connection and stream set-up, API-key
//! authentication, problem+json errors, telemetry, health routes, the HTTP server and shutdown.

#![warn(missing_docs)]

pub mod auth;
pub mod body;
pub mod config;
pub mod crypto;
pub mod db;
pub mod defaults;
pub mod event_store;
pub mod health;
pub mod history;
pub mod http;
pub mod nats;
pub mod nats_auth;
pub mod openapi;
pub mod personal;
pub mod problem;
pub mod rate_limit;
pub mod retention;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod webhooks;

/// Every binary of the project (both services, the replay tool, the bench, the tests) allocates
/// with mimalloc: decoding events allocates and frees many small maps and strings, which glibc's
/// allocator serves at a far higher CPU cost (most visibly in a replay-tool rebuild, which
/// decodes every event of the store).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use config::Settings;
pub use problem::{ApiError, FieldProblem};
pub use server::HttpLimits;
