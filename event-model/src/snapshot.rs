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
    /// The aggregate type a snapshot records, checked on decode so that a snapshot is never read as
    /// the other aggregate's state.
    const AGGREGATE: AggregateType;
    /// The version of the state's serialised shape; a snapshot carrying another is refused.
    const SNAPSHOT_SCHEMA: u32;

    /// The last `sequence_number` folded into the state: the snapshot row's `last_sequence_number`,
    /// which a loader checks the decoded state against.
    fn version(&self) -> i64;

    /// The snapshot data (`snapshot_data`): the state, with its schema version and aggregate type
    /// beside it. Panics only if the state does not serialise to JSON, which these states always
    /// do.
    fn encode(&self) -> Value {
        serde_json::to_value(Envelope {
            schema_version: Self::SNAPSHOT_SCHEMA,
            aggregate_type: Self::AGGREGATE,
            state: self,
        })
        .expect("aggregate state serialises to JSON")
    }

    /// The state a snapshot holds; [`SnapshotError::OtherSchema`] when it was written for another
    /// schema version or aggregate type, so that the loader folds from the first event instead of
    /// mis-reading it.
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

/// Why a snapshot cannot be used; either way the loader folds the aggregate from its first event.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot was written for another schema version, or for the other aggregate type (then
    /// `found` may equal `expected`).
    #[error("snapshot schema {found} is not the current {expected}")]
    OtherSchema {
        /// The schema version the snapshot carries.
        found: u32,
        /// This build's [`Snapshot::SNAPSHOT_SCHEMA`].
        expected: u32,
    },
    /// The data is not a snapshot envelope, or its state does not deserialise though its header
    /// matches.
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
