//! `adora-store`: the coordinator's desired state (dataflow records) behind the [`Store`] trait.
//!
//! [`MemoryStore`] keeps everything in memory (tests, single sessions); [`RedbStore`] keeps it in
//! one redb file so a restarted coordinator finds its dataflows, machines and answered requests
//! again. The coordinator calls a store from its actor: implementations must not block it (the
//! redb store writes on its own thread; reads happen once, at startup, off the runtime).
//!
//! What is over is not kept forever: [`retention`] says how long finished dataflows, answered
//! requests and builds are remembered; the coordinator forgets the rest in memory and here
//! (`remove_*`).

mod redb_store;
pub mod retention;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Mutex, PoisonError},
};

use adora_core::{Descriptor, NodeId};
use adora_message::{
    control::{DataflowOutcome, DataflowStatus, Labels},
    coordinator_to_cli::ControlReply,
    enroll::JoinCodeState,
    maintenance::MachineMaintenance,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use redb_store::{RedbStore, SCHEMA_VERSION};
pub use retention::Retention;

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
    /// How many times the coordinator spawned the nodes: 1 at start, plus one per auto-recovery
    /// re-spawn on a restarted daemon.
    #[serde(default)]
    pub generation: u64,
    /// When the dataflow was started (milliseconds since the Unix epoch).
    #[serde(default)]
    pub created_at_ms: u64,
    /// When the record last changed (milliseconds since the Unix epoch).
    #[serde(default)]
    pub updated_at_ms: u64,
    /// Why the coordinator marked it failed, when no node result says it (e.g. its daemons did
    /// not come back after a coordinator restart).
    #[serde(default)]
    pub failure: Option<String>,
    /// The client request id of the `start`/`restart` that created it (retries find it).
    #[serde(default)]
    pub request_id: Option<Uuid>,
    /// Binaries the CLI distributed for it (`distribute: scp | http`); artifacts no stored
    /// dataflow references are garbage-collected.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub artifacts: adora_message::distribute::NodeArtifacts,
    /// Why it runs without some of its nodes (a node stopped by a drain), if it does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<String>,
}

impl DataflowRecord {
    /// A new running dataflow, stamped now.
    pub fn new(
        id: Uuid,
        name: String,
        descriptor: Descriptor,
        working_dir: PathBuf,
        placement: BTreeMap<NodeId, String>,
    ) -> Self {
        let now = now_ms();
        Self {
            id,
            name,
            descriptor,
            working_dir,
            placement,
            status: DataflowStatus::Running,
            outcome: DataflowOutcome::default(),
            generation: 1,
            created_at_ms: now,
            updated_at_ms: now,
            failure: None,
            request_id: None,
            artifacts: Default::default(),
            degraded: Vec::new(),
        }
    }
}

/// A machine (daemon) the coordinator has seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineRecord {
    /// The name placements use: machine id, or hostname of an unnamed daemon.
    pub name: String,
    /// Its machine id, if it has one.
    pub machine_id: Option<String>,
    /// Its hostname.
    pub hostname: String,
    /// Its labels.
    pub labels: Labels,
    /// Last time it was heard from (milliseconds since the Unix epoch).
    pub last_seen_ms: u64,
}

/// A state-changing client request, remembered by its client-generated id so a retry is
/// answered instead of executed again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The client's request id.
    pub id: Uuid,
    /// The answer; `None` while the request is being handled.
    pub reply: Option<ControlReply>,
    /// When it arrived (milliseconds since the Unix epoch).
    pub at_ms: u64,
}

/// A distributed build (`adora build` with a coordinator), kept for `adora start --build-id`:
/// while it is stored, the uploads it lists are not collected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// The build id.
    pub id: Uuid,
    /// The binaries the CLI copied or uploaded (`distribute: scp | http`), per node.
    pub artifacts: adora_message::distribute::NodeArtifacts,
    /// Which daemon built (`local`) or received (`scp`, `http`) which node.
    pub placement: BTreeMap<NodeId, String>,
    /// When it completed (milliseconds since the Unix epoch).
    pub created_at_ms: u64,
}

/// A join code the coordinator created (`adora cluster join-code create`). Only the secret's
/// SHA-256 is kept, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinCodeRecord {
    /// The code's id (lowercase hex).
    pub id: String,
    /// SHA-256 of the code's secret, lowercase hex (`adora_pki::hash_secret`).
    pub secret_hash: String,
    /// When it was created (milliseconds since the Unix epoch).
    pub created_ms: u64,
    /// When it expires (milliseconds since the Unix epoch).
    pub expires_ms: u64,
    /// How many daemons it may enroll.
    pub uses_allowed: u32,
    /// How many it enrolled.
    pub uses: u32,
    /// The machine id it is bound to.
    pub machine: Option<String>,
    /// Labels every daemon enrolled with it gets.
    pub labels: Labels,
    /// True once revoked.
    pub revoked: bool,
}

impl JoinCodeRecord {
    /// Where the code stands at `now_ms`: revoked first, then used up, then expired.
    pub fn state(&self, now_ms: u64) -> JoinCodeState {
        if self.revoked {
            JoinCodeState::Revoked
        } else if self.uses >= self.uses_allowed {
            JoinCodeState::Used
        } else if now_ms >= self.expires_ms {
            JoinCodeState::Expired
        } else {
            JoinCodeState::Valid
        }
    }
}

/// A daemon certificate the coordinator issued at an enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    /// SHA-256 of the certificate (DER), lowercase hex: its key.
    pub fingerprint: String,
    /// The machine id it was issued for.
    pub machine_id: String,
    /// When it was issued (milliseconds since the Unix epoch).
    pub issued_ms: u64,
    /// The id of the join code it was issued for.
    pub join_code: String,
    /// When `adora cluster revoke` revoked it.
    pub revoked_ms: Option<u64>,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The in-memory store's lock was poisoned by a panic.
    #[error("the store is unusable after a panic")]
    Poisoned,
    /// The store file cannot be opened, created or given safe permissions.
    #[error("cannot open the store file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The store file is not a valid database (corrupted or truncated). It is left untouched.
    #[error(
        "the store file {path} cannot be read and was left untouched ({detail}); restore a \
             backup, or start the coordinator with --reset-store to move it aside and start empty"
    )]
    Corrupted {
        /// The file.
        path: PathBuf,
        /// What redb reported.
        detail: String,
    },
    /// The store file was written by an incompatible version of Adora.
    #[error("the store file {path} has schema version {found}, this coordinator uses version {expected}; \
             use a matching Adora version or move the file away")]
    SchemaMismatch {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Version this build uses.
        expected: u32,
    },
    /// Another process (a running coordinator) has the store file open.
    #[error(
        "the store file {path} is in use by another process (is a coordinator already running?)"
    )]
    InUse {
        /// The file.
        path: PathBuf,
    },
    /// A database operation failed.
    #[error("store database error: {0}")]
    Database(#[from] redb::Error),
    /// A record could not be encoded or decoded.
    #[error("cannot encode or decode a store record: {0}")]
    Codec(#[from] serde_json::Error),
    /// The store's writer thread is gone (it failed earlier or the store is closing).
    #[error("the store's writer thread has stopped")]
    WriterGone,
    /// The database is being opened again after a failed write.
    #[error("the store file is being reopened after a failed write")]
    Reopening,
    /// A queued write could not be committed (reported by [`Store::sync`]); it is kept and
    /// tried again.
    #[error("a write to the store failed: {0}")]
    Commit(#[source] std::sync::Arc<StoreError>),
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
    /// Every record (running and archived), in no particular order. Blocking: call it off the
    /// async runtime.
    fn dataflows(&self) -> Result<Vec<DataflowRecord>, StoreError>;
    /// Inserts or replaces a machine.
    fn put_machine(&self, machine: &MachineRecord) -> Result<(), StoreError>;
    /// Every machine. Blocking: call it off the async runtime.
    fn machines(&self) -> Result<Vec<MachineRecord>, StoreError>;
    /// Inserts or replaces a request record.
    fn put_request(&self, request: &RequestRecord) -> Result<(), StoreError>;
    /// Every remembered request. Blocking: call it off the async runtime.
    fn requests(&self) -> Result<Vec<RequestRecord>, StoreError>;
    /// Inserts or replaces a build.
    fn put_build(&self, build: &BuildRecord) -> Result<(), StoreError>;
    /// Every stored build. Blocking: call it off the async runtime.
    fn builds(&self) -> Result<Vec<BuildRecord>, StoreError>;
    /// Forgets these dataflows (running or archived); unknown ids are ignored.
    fn remove_dataflows(&self, ids: &[Uuid]) -> Result<(), StoreError>;
    /// Forgets these requests; unknown ids are ignored.
    fn remove_requests(&self, ids: &[Uuid]) -> Result<(), StoreError>;
    /// Forgets these builds; unknown ids are ignored.
    fn remove_builds(&self, ids: &[Uuid]) -> Result<(), StoreError>;
    /// Inserts or replaces a join code.
    fn put_join_code(&self, code: &JoinCodeRecord) -> Result<(), StoreError>;
    /// Every stored join code. Blocking: call it off the async runtime.
    fn join_codes(&self) -> Result<Vec<JoinCodeRecord>, StoreError>;
    /// Forgets these join codes; unknown ids are ignored.
    fn remove_join_codes(&self, ids: &[String]) -> Result<(), StoreError>;
    /// Inserts or replaces an issued certificate.
    fn put_cert(&self, cert: &CertRecord) -> Result<(), StoreError>;
    /// Every issued certificate. Blocking: call it off the async runtime.
    fn certs(&self) -> Result<Vec<CertRecord>, StoreError>;
    /// Forgets these certificates (by fingerprint); unknown ones are ignored.
    fn remove_certs(&self, fingerprints: &[String]) -> Result<(), StoreError>;
    /// Inserts or replaces a machine's maintenance state (cordon, locks, claim, drain).
    fn put_maintenance(&self, record: &MachineMaintenance) -> Result<(), StoreError>;
    /// Every machine's maintenance state. Blocking: call it off the async runtime.
    fn maintenance(&self) -> Result<Vec<MachineMaintenance>, StoreError>;
    /// Forgets these machines' maintenance state (by name); unknown ones are ignored.
    fn remove_maintenance(&self, machines: &[String]) -> Result<(), StoreError>;
    /// Blocks until every write queued so far is durable; an error when one of the writes
    /// committed since the last `sync` failed. What must be stored before it is answered
    /// (an enrollment, a revocation) calls it off the async runtime.
    fn sync(&self) -> Result<(), StoreError>;
}

/// A [`Store`] in memory: lost when the coordinator exits.
#[derive(Debug, Default)]
pub struct MemoryStore {
    dataflows: Mutex<BTreeMap<Uuid, DataflowRecord>>,
    machines: Mutex<BTreeMap<String, MachineRecord>>,
    requests: Mutex<BTreeMap<Uuid, RequestRecord>>,
    builds: Mutex<BTreeMap<Uuid, BuildRecord>>,
    join_codes: Mutex<BTreeMap<String, JoinCodeRecord>>,
    certs: Mutex<BTreeMap<String, CertRecord>>,
    maintenance: Mutex<BTreeMap<String, MachineMaintenance>>,
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

    fn put_machine(&self, machine: &MachineRecord) -> Result<(), StoreError> {
        self.machines
            .lock()?
            .insert(machine.name.clone(), machine.clone());
        Ok(())
    }

    fn machines(&self) -> Result<Vec<MachineRecord>, StoreError> {
        Ok(self.machines.lock()?.values().cloned().collect())
    }

    fn put_request(&self, request: &RequestRecord) -> Result<(), StoreError> {
        self.requests.lock()?.insert(request.id, request.clone());
        Ok(())
    }

    fn requests(&self) -> Result<Vec<RequestRecord>, StoreError> {
        Ok(self.requests.lock()?.values().cloned().collect())
    }

    fn put_build(&self, build: &BuildRecord) -> Result<(), StoreError> {
        self.builds.lock()?.insert(build.id, build.clone());
        Ok(())
    }

    fn builds(&self) -> Result<Vec<BuildRecord>, StoreError> {
        Ok(self.builds.lock()?.values().cloned().collect())
    }

    fn remove_dataflows(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        let mut dataflows = self.dataflows.lock()?;
        ids.iter().for_each(|id| {
            dataflows.remove(id);
        });
        Ok(())
    }

    fn remove_requests(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        let mut requests = self.requests.lock()?;
        ids.iter().for_each(|id| {
            requests.remove(id);
        });
        Ok(())
    }

    fn remove_builds(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        let mut builds = self.builds.lock()?;
        ids.iter().for_each(|id| {
            builds.remove(id);
        });
        Ok(())
    }

    fn put_join_code(&self, code: &JoinCodeRecord) -> Result<(), StoreError> {
        self.join_codes
            .lock()?
            .insert(code.id.clone(), code.clone());
        Ok(())
    }

    fn join_codes(&self) -> Result<Vec<JoinCodeRecord>, StoreError> {
        Ok(self.join_codes.lock()?.values().cloned().collect())
    }

    fn remove_join_codes(&self, ids: &[String]) -> Result<(), StoreError> {
        let mut codes = self.join_codes.lock()?;
        ids.iter().for_each(|id| {
            codes.remove(id);
        });
        Ok(())
    }

    fn put_cert(&self, cert: &CertRecord) -> Result<(), StoreError> {
        self.certs
            .lock()?
            .insert(cert.fingerprint.clone(), cert.clone());
        Ok(())
    }

    fn certs(&self) -> Result<Vec<CertRecord>, StoreError> {
        Ok(self.certs.lock()?.values().cloned().collect())
    }

    fn remove_certs(&self, fingerprints: &[String]) -> Result<(), StoreError> {
        let mut certs = self.certs.lock()?;
        fingerprints.iter().for_each(|f| {
            certs.remove(f);
        });
        Ok(())
    }

    fn put_maintenance(&self, record: &MachineMaintenance) -> Result<(), StoreError> {
        self.maintenance
            .lock()?
            .insert(record.machine.clone(), record.clone());
        Ok(())
    }

    fn maintenance(&self) -> Result<Vec<MachineMaintenance>, StoreError> {
        Ok(self.maintenance.lock()?.values().cloned().collect())
    }

    fn remove_maintenance(&self, machines: &[String]) -> Result<(), StoreError> {
        let mut records = self.maintenance.lock()?;
        machines.iter().for_each(|m| {
            records.remove(m);
        });
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
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
        let mut record = DataflowRecord::new(
            Uuid::new_v4(),
            "demo".into(),
            descriptor,
            "/".into(),
            BTreeMap::new(),
        );
        store.put_dataflow(&record).expect("put");
        record.status = DataflowStatus::Finished;
        store.put_dataflow(&record).expect("put");
        let all = store.dataflows().expect("read");
        assert_eq!(all, vec![record.clone()]);
        store.remove_dataflows(&[record.id]).expect("remove");
        assert!(store.dataflows().expect("read").is_empty());
    }

    pub(crate) fn join_code(id: &str) -> JoinCodeRecord {
        JoinCodeRecord {
            id: id.into(),
            secret_hash: "ab".repeat(32),
            created_ms: 1_000,
            expires_ms: 2_000,
            uses_allowed: 2,
            uses: 0,
            machine: Some("robot".into()),
            labels: [("gpu".to_owned(), "true".to_owned())].into(),
            revoked: false,
        }
    }

    pub(crate) fn cert(fingerprint: &str) -> CertRecord {
        CertRecord {
            fingerprint: fingerprint.into(),
            machine_id: "robot".into(),
            issued_ms: 1_500,
            join_code: "0a1b2c3d".into(),
            revoked_ms: None,
        }
    }

    #[test]
    fn memory_store_keeps_join_codes_and_certificates() {
        let store = MemoryStore::new();
        let mut code = join_code("0a1b2c3d");
        store.put_join_code(&code).expect("put");
        code.uses = 1;
        store.put_join_code(&code).expect("put");
        assert_eq!(store.join_codes().expect("read"), vec![code.clone()]);
        store.remove_join_codes(&[code.id.clone()]).expect("remove");
        assert!(store.join_codes().expect("read").is_empty());
        let mut c = cert("cd");
        store.put_cert(&c).expect("put");
        c.revoked_ms = Some(9);
        store.put_cert(&c).expect("put");
        assert_eq!(store.certs().expect("read"), vec![c.clone()]);
        store.sync().expect("sync");
        store.remove_certs(&[c.fingerprint]).expect("remove");
        assert!(store.certs().expect("read").is_empty());
    }

    #[test]
    fn a_join_code_is_revoked_then_used_then_expired() {
        let mut code = join_code("0a1b2c3d");
        assert_eq!(code.state(1_999), JoinCodeState::Valid);
        assert_eq!(code.state(2_000), JoinCodeState::Expired);
        code.uses = 2;
        assert_eq!(code.state(1_500), JoinCodeState::Used);
        assert_eq!(code.state(2_500), JoinCodeState::Used);
        code.revoked = true;
        assert_eq!(code.state(1_500), JoinCodeState::Revoked);
    }
}
