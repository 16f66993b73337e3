//! [`RedbStore`]: the coordinator's state in one redb file.
//!
//! Layout: a `meta` table holding the schema version, and one table per record kind with the
//! record as JSON under its key. Tables added later to schema 1 (builds, join codes, issued
//! certificates) are created empty when an older file is opened. Finished dataflows move from `dataflows` to `archive` (their
//! results), so the hot table only holds live runs; the coordinator removes the ones its
//! [`Retention`](crate::Retention) lets go.
//!
//! Writes go through a channel to one writer thread that commits them in order, batching
//! whatever queued up meanwhile into one transaction: callers (the coordinator's actor) never
//! wait for the disk. Reads are blocking and meant for startup, off the async runtime.

use std::{
    fs::OpenOptions,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex},
    thread::JoinHandle,
};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;

use uuid::Uuid;

use adora_message::maintenance::MachineMaintenance;

use crate::{
    now_ms,
    retention::{build_expired, REQUEST_RETENTION},
    BuildRecord, CertRecord, DataflowRecord, JoinCodeRecord, MachineRecord, RequestRecord, Store,
    StoreError,
};
#[cfg(test)]
use {crate::retention::BUILD_RETENTION, redb::ReadableTableMetadata, std::time::Duration};

/// Version of the table layout and record encoding. Bump it on incompatible changes; a file
/// with another version is refused on open.
pub const SCHEMA_VERSION: u32 = 1;

const META: TableDefinition<'_, &str, u32> = TableDefinition::new("meta");
const DATAFLOWS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("dataflows");
const ARCHIVE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("archive");
const MACHINES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("machines");
const REQUESTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("requests");
const BUILDS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("builds");
const JOIN_CODES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("join_codes");
const CERTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("certs");
const MAINTENANCE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("maintenance");
const SCHEMA_KEY: &str = "schema_version";

/// A table of records keyed by id.
type Table = TableDefinition<'static, &'static str, &'static [u8]>;

enum Write {
    Dataflow(DataflowRecord),
    Machine(MachineRecord),
    Request(RequestRecord),
    Build(BuildRecord),
    JoinCode(JoinCodeRecord),
    Cert(CertRecord),
    Maintenance(MachineMaintenance),
    /// Removes these keys from these tables.
    Remove(&'static [Table], Vec<String>),
    /// Answered once everything queued before it is committed: with the error of a commit that
    /// failed since the previous flush, if one did.
    Flush(mpsc::Sender<writer::FlushResult>),
}

/// A [`Store`] in a redb file (mode 0600; missing parent directories are created 0700).
pub struct RedbStore {
    path: PathBuf,
    /// The database: `None` while the writer reopens it after a failed commit.
    db: Arc<Mutex<Option<Database>>>,
    writes: Mutex<Option<mpsc::Sender<Write>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

fn db_error(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Database(e.into())
}

impl RedbStore {
    /// Opens (or creates) the store at `path`. Blocking. A file that is not a valid store —
    /// corrupted, truncated, another schema version — is refused with an error naming it and
    /// is never modified or replaced.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io(dir))?;
            }
        }
        let existed = path.exists();
        if !existed {
            // Created empty with its final mode; redb initialises an empty file.
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io(path))?;
        } else {
            let meta = std::fs::metadata(path).map_err(io(path))?;
            if meta.len() == 0 {
                // redb would initialise an empty file: an existing empty file is a truncation,
                // not a new store.
                return Err(StoreError::Corrupted {
                    path: path.to_owned(),
                    detail: "the file is empty".into(),
                });
            }
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io(path))?;
            }
        }
        let db = open_database(path, existed)?;
        check_schema(&db, path)?;
        verify_records(&db, path)?;
        prune(&db)?;
        let db = Arc::new(Mutex::new(Some(db)));
        let (tx, rx) = mpsc::channel();
        let writer = writer::Writer::new(db.clone(), path.to_owned());
        let writer = std::thread::Builder::new()
            .name("adora-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io(path))?;
        Ok(RedbStore {
            path: path.to_owned(),
            db,
            writes: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Blocks until every write queued so far is committed; an error when a commit since the
    /// previous flush failed.
    pub fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::channel();
        self.send(Write::Flush(tx))?;
        rx.recv()
            .map_err(|_| StoreError::WriterGone)?
            .map_err(StoreError::Commit)
    }

    fn send(&self, write: Write) -> Result<(), StoreError> {
        self.writes
            .lock()?
            .as_ref()
            .ok_or(StoreError::WriterGone)?
            .send(write)
            .map_err(|_| StoreError::WriterGone)
    }

    fn read_all<T: DeserializeOwned>(
        &self,
        tables: &[TableDefinition<'_, &str, &[u8]>],
    ) -> Result<Vec<T>, StoreError> {
        let db = self.db.lock()?;
        let txn = db
            .as_ref()
            .ok_or(StoreError::Reopening)?
            .begin_read()
            .map_err(db_error)?;
        let mut out = Vec::new();
        for table in tables {
            let table = txn.open_table(*table).map_err(db_error)?;
            for entry in table.iter().map_err(db_error)? {
                let (_, value) = entry.map_err(db_error)?;
                out.push(serde_json::from_slice(value.value())?);
            }
        }
        Ok(out)
    }
}

impl Drop for RedbStore {
    /// Commits what is queued and stops the writer thread.
    fn drop(&mut self) {
        if let Ok(mut writes) = self.writes.lock() {
            writes.take();
        }
        if let Some(writer) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = writer.join();
        }
    }
}

/// Opens the file, turning every failure (including a panic of redb on a damaged file) into a
/// typed error. redb repairs a file after a crash (kill -9) on its own; a file whose content does
/// not check out is refused.
fn open_database(path: &Path, existed: bool) -> Result<Database, StoreError> {
    let corrupted = |detail: String| StoreError::Corrupted {
        path: path.to_owned(),
        detail,
    };
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut builder = Database::builder();
        builder.set_check_integrity_on_open(existed);
        if existed {
            builder.open(path)
        } else {
            builder.create(path)
        }
    }));
    match result {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => Err(StoreError::InUse {
            path: path.to_owned(),
        }),
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(source)))) => {
            if source.kind() == std::io::ErrorKind::UnexpectedEof
                || source.kind() == std::io::ErrorKind::InvalidData
            {
                Err(corrupted(source.to_string()))
            } else {
                Err(StoreError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
        }
        Ok(Err(e)) => Err(corrupted(e.to_string())),
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "redb panicked while reading it".into());
            Err(corrupted(detail))
        }
    }
}

/// Writes the schema version into a new file, or checks the one in an existing file.
/// Every table, in the order they are checked.
const TABLES: [(&str, Table); 8] = [
    ("dataflows", DATAFLOWS),
    ("finished dataflows", ARCHIVE),
    ("machines", MACHINES),
    ("requests", REQUESTS),
    ("builds", BUILDS),
    ("join codes", JOIN_CODES),
    ("certificates", CERTS),
    ("maintenance", MAINTENANCE),
];

/// Decodes every record of every table (read only): a store part of which cannot be read is
/// refused, not opened with part of its state (the coordinator would forget running dataflows
/// and pruning could drop the unreadable records).
fn verify_records(db: &Database, path: &Path) -> Result<(), StoreError> {
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), serde_json::Error> {
        serde_json::from_slice::<T>(bytes).map(drop)
    }
    let txn = db.begin_read().map_err(db_error)?;
    for (name, table) in TABLES {
        let table = match txn.open_table(table) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(db_error(e)),
        };
        for entry in table.iter().map_err(db_error)? {
            let (key, value) = entry.map_err(db_error)?;
            let bytes = value.value();
            let decoded = match name {
                "dataflows" | "finished dataflows" => decode::<DataflowRecord>(bytes),
                "machines" => decode::<MachineRecord>(bytes),
                "requests" => decode::<RequestRecord>(bytes),
                "builds" => decode::<BuildRecord>(bytes),
                "join codes" => decode::<JoinCodeRecord>(bytes),
                "certificates" => decode::<CertRecord>(bytes),
                _ => decode::<MachineMaintenance>(bytes),
            };
            if let Err(e) = decoded {
                return Err(StoreError::Corrupted {
                    path: path.to_owned(),
                    detail: format!("record `{}` of its {name} cannot be read: {e}", key.value()),
                });
            }
        }
    }
    Ok(())
}

/// True when the schema version is ours and every table exists: opening needs no write.
fn schema_current(db: &Database) -> Result<bool, StoreError> {
    let txn = db.begin_read().map_err(db_error)?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
        Err(e) => return Err(db_error(e)),
    };
    if meta.get(SCHEMA_KEY).map_err(db_error)?.map(|v| v.value()) != Some(SCHEMA_VERSION) {
        return Ok(false);
    }
    for (_, table) in TABLES {
        match txn.open_table(table) {
            Ok(_) => {}
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(db_error(e)),
        }
    }
    Ok(true)
}

fn check_schema(db: &Database, path: &Path) -> Result<(), StoreError> {
    if schema_current(db)? {
        return Ok(());
    }
    let txn = db.begin_write().map_err(db_error)?;
    let found = {
        let mut meta = txn.open_table(META).map_err(db_error)?;
        let found = meta.get(SCHEMA_KEY).map_err(db_error)?.map(|v| v.value());
        if found.is_none() {
            meta.insert(SCHEMA_KEY, SCHEMA_VERSION).map_err(db_error)?;
        }
        found
    };
    if let Some(found) = found.filter(|&v| v != SCHEMA_VERSION) {
        txn.abort().map_err(db_error)?;
        return Err(StoreError::SchemaMismatch {
            path: path.to_owned(),
            found,
            expected: SCHEMA_VERSION,
        });
    }
    for table in [
        DATAFLOWS,
        ARCHIVE,
        MACHINES,
        REQUESTS,
        BUILDS,
        JOIN_CODES,
        CERTS,
        MAINTENANCE,
    ] {
        txn.open_table(table).map_err(db_error)?;
    }
    txn.commit().map_err(db_error)
}

/// Drops answered requests older than [`REQUEST_RETENTION`] and builds older than
/// [`BUILD_RETENTION`](crate::retention::BUILD_RETENTION) (a table added to schema 1: older files
/// simply get it empty). Finished dataflows are pruned by the coordinator, which knows its
/// [`Retention`](crate::Retention).
fn prune(db: &Database) -> Result<(), StoreError> {
    let now = now_ms();
    let cutoff = now.saturating_sub(REQUEST_RETENTION.as_millis() as u64);
    let txn = db.begin_write().map_err(db_error)?;
    {
        let mut requests = txn.open_table(REQUESTS).map_err(db_error)?;
        requests
            .retain(|_, v| {
                serde_json::from_slice::<RequestRecord>(v).is_ok_and(|r| r.at_ms >= cutoff)
            })
            .map_err(db_error)?;
        let mut builds = txn.open_table(BUILDS).map_err(db_error)?;
        builds
            .retain(|_, v| {
                serde_json::from_slice::<BuildRecord>(v)
                    .is_ok_and(|b| !build_expired(b.created_at_ms, now))
            })
            .map_err(db_error)?;
    }
    txn.commit().map_err(db_error)
}

impl Store for RedbStore {
    fn put_dataflow(&self, record: &DataflowRecord) -> Result<(), StoreError> {
        self.send(Write::Dataflow(record.clone()))
    }

    fn dataflows(&self) -> Result<Vec<DataflowRecord>, StoreError> {
        self.read_all(&[DATAFLOWS, ARCHIVE])
    }

    fn put_machine(&self, machine: &MachineRecord) -> Result<(), StoreError> {
        self.send(Write::Machine(machine.clone()))
    }

    fn machines(&self) -> Result<Vec<MachineRecord>, StoreError> {
        self.read_all(&[MACHINES])
    }

    fn put_request(&self, request: &RequestRecord) -> Result<(), StoreError> {
        self.send(Write::Request(request.clone()))
    }

    fn requests(&self) -> Result<Vec<RequestRecord>, StoreError> {
        self.read_all(&[REQUESTS])
    }

    fn put_build(&self, build: &BuildRecord) -> Result<(), StoreError> {
        self.send(Write::Build(build.clone()))
    }

    fn builds(&self) -> Result<Vec<BuildRecord>, StoreError> {
        self.read_all(&[BUILDS])
    }

    fn remove_dataflows(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        self.send(Write::Remove(&[DATAFLOWS, ARCHIVE], keys(ids)))
    }

    fn remove_requests(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        self.send(Write::Remove(&[REQUESTS], keys(ids)))
    }

    fn remove_builds(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        self.send(Write::Remove(&[BUILDS], keys(ids)))
    }

    fn put_join_code(&self, code: &JoinCodeRecord) -> Result<(), StoreError> {
        self.send(Write::JoinCode(code.clone()))
    }

    fn join_codes(&self) -> Result<Vec<JoinCodeRecord>, StoreError> {
        self.read_all(&[JOIN_CODES])
    }

    fn remove_join_codes(&self, ids: &[String]) -> Result<(), StoreError> {
        self.send(Write::Remove(&[JOIN_CODES], ids.to_vec()))
    }

    fn put_cert(&self, cert: &CertRecord) -> Result<(), StoreError> {
        self.send(Write::Cert(cert.clone()))
    }

    fn certs(&self) -> Result<Vec<CertRecord>, StoreError> {
        self.read_all(&[CERTS])
    }

    fn remove_certs(&self, fingerprints: &[String]) -> Result<(), StoreError> {
        self.send(Write::Remove(&[CERTS], fingerprints.to_vec()))
    }

    fn put_maintenance(&self, record: &MachineMaintenance) -> Result<(), StoreError> {
        self.send(Write::Maintenance(record.clone()))
    }

    fn maintenance(&self) -> Result<Vec<MachineMaintenance>, StoreError> {
        self.read_all(&[MAINTENANCE])
    }

    fn remove_maintenance(&self, machines: &[String]) -> Result<(), StoreError> {
        self.send(Write::Remove(&[MAINTENANCE], machines.to_vec()))
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.flush()
    }
}

/// Uuids as table keys.
fn keys(ids: &[Uuid]) -> Vec<String> {
    ids.iter().map(Uuid::to_string).collect()
}

#[cfg(test)]
mod tests;
mod writer;
