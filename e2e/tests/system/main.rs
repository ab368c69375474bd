//! The whole system, end to end, against the real PostgreSQL and NATS JetStream: one binary,
//! one module per concern. Each test gets its own database and stream.

mod broker;
mod cache;
mod changes;
mod cli;
mod cluster;
mod combine;
mod concurrency;
mod conformance;
mod console;
mod conversations;
mod delivery;
mod erasure;
mod failover;
mod faults;
mod flow;
mod group_commit;
mod hostile;
mod identity;
mod key_cache;
mod logins;
mod operations;
mod replay;
mod retention;
mod schemathesis;
mod sessions;
mod snapshots;
mod tenancy;
mod time_travel;
mod trust;
mod validation;
mod webhooks;
