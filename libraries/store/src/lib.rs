//! `adora-store`: the coordinator's desired state (dataflow records) behind the [`Store`] trait.
//!
//! [`MemoryStore`] keeps everything in memory (tests, single sessions). A redb-backed store that
//! survives coordinator restarts comes later; until then a restarted coordinator learns about
//! running dataflows from the daemons' status reports.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Mutex, PoisonError},
};

use adora_core::{Descriptor, NodeId};
use adora_message::control::{DataflowOutcome, DataflowStatus};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Everything the coordinator remembers about one dataflow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataflowRecord {
    /// Id of the run.
    pub id: Uuid,
    /// Unique name among running dataflows.
    pub name: String,
    /// The descriptor it was started from (restart uses it).
    pub descriptor: Descriptor,
    /// Directory relative paths are resolved against.
    pub working_dir: PathBuf,
    /// Node → daemon name (machine id, or hostname of an unnamed daemon).
    pub placement: BTreeMap<NodeId, String>,
    /// Lifecycle status.
    pub status: DataflowStatus,
    /// Node results collected so far.
    pub outcome: DataflowOutcome,
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The in-memory store's lock was poisoned by a panic.
    #[error("the store is unusable after a panic")]
    Poisoned,
}

impl<T> From<PoisonError<T>> for StoreError {
    fn from(_: PoisonError<T>) -> Self {
        StoreError::Poisoned
    }
}

/// Persistence of the coordinator's desired state. Implementations must be cheap to call from
/// the coordinator's actor; a disk-backed one does its I/O on its own thread.
pub trait Store: Send + Sync + 'static {
    /// Inserts or replaces a record.
    fn put_dataflow(&self, record: &DataflowRecord) -> Result<(), StoreError>;
    /// Every record, in no particular order.
    fn dataflows(&self) -> Result<Vec<DataflowRecord>, StoreError>;
}

/// A [`Store`] in memory: lost when the coordinator exits.
#[derive(Debug, Default)]
pub struct MemoryStore {
    dataflows: Mutex<BTreeMap<Uuid, DataflowRecord>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn put_dataflow(&self, record: &DataflowRecord) -> Result<(), StoreError> {
        self.dataflows.lock()?.insert(record.id, record.clone());
        Ok(())
    }

    fn dataflows(&self) -> Result<Vec<DataflowRecord>, StoreError> {
        Ok(self.dataflows.lock()?.values().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_keeps_the_latest_record() {
        let store = MemoryStore::new();
        let descriptor = Descriptor::parse("nodes:\n  - id: a\n    path: ./a\n", "d.yml".as_ref())
            .expect("valid");
        let mut record = DataflowRecord {
            id: Uuid::new_v4(),
            name: "demo".into(),
            descriptor,
            working_dir: "/".into(),
            placement: BTreeMap::new(),
            status: DataflowStatus::Running,
            outcome: DataflowOutcome::default(),
        };
        store.put_dataflow(&record).expect("put");
        record.status = DataflowStatus::Finished;
        store.put_dataflow(&record).expect("put");
        let all = store.dataflows().expect("read");
        assert_eq!(all, vec![record]);
    }
}
