//! Snapshots of aggregate state (`contact_snapshots.snapshot_data`).
//!
//! The data carries a schema version. A snapshot written by another version of the state's shape
//! is never mis-read: [`Snapshot::decode`] refuses it and the loader folds from the first event
//! instead (and writes a fresh snapshot later).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aggregate::AggregateType;
use crate::contact::Contact;
use crate::session::Session;

/// An aggregate whose state can be snapshotted. Bump `SNAPSHOT_SCHEMA` whenever the state's
/// serialised shape changes.
pub trait Snapshot: Serialize + DeserializeOwned + Sized {
    const AGGREGATE: AggregateType;
    const SNAPSHOT_SCHEMA: u32;

    fn version(&self) -> i64;

    fn encode(&self) -> Value {
        serde_json::to_value(Envelope {
            schema_version: Self::SNAPSHOT_SCHEMA,
            aggregate_type: Self::AGGREGATE,
            state: self,
        })
        .expect("aggregate state serialises to JSON")
    }

    fn decode(data: Value) -> Result<Self, SnapshotError> {
        let header: Header =
            serde_json::from_value(data.clone()).map_err(SnapshotError::Malformed)?;
        if header.schema_version != Self::SNAPSHOT_SCHEMA
            || header.aggregate_type != Self::AGGREGATE
        {
            return Err(SnapshotError::OtherSchema {
                found: header.schema_version,
                expected: Self::SNAPSHOT_SCHEMA,
            });
        }
        let envelope: Envelope<Self> =
            serde_json::from_value(data).map_err(SnapshotError::Malformed)?;
        Ok(envelope.state)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot schema {found} is not the current {expected}")]
    OtherSchema { found: u32, expected: u32 },
    #[error("snapshot data does not fit the state: {0}")]
    Malformed(serde_json::Error),
}

#[derive(Serialize, Deserialize)]
struct Envelope<S> {
    schema_version: u32,
    aggregate_type: AggregateType,
    state: S,
}

#[derive(Deserialize)]
struct Header {
    schema_version: u32,
    aggregate_type: AggregateType,
}

impl Snapshot for Contact {
    const AGGREGATE: AggregateType = AggregateType::Contact;
    const SNAPSHOT_SCHEMA: u32 = 1;

    fn version(&self) -> i64 {
        self.version
    }
}

impl Snapshot for Session {
    const AGGREGATE: AggregateType = AggregateType::Session;
    const SNAPSHOT_SCHEMA: u32 = 1;

    fn version(&self) -> i64 {
        self.version
    }
}
