//! The store's writer thread: it commits queued writes in order, one transaction per batch of
//! whatever queued up meanwhile. A commit that fails (a full disk, an I/O error) loses nothing:
//! its writes are kept and committed again, before anything newer, every [`RETRY_INTERVAL`]
//! until the store takes them. redb refuses every write after an I/O error until the database
//! is opened again, so a retry first reopens it (redb repairs the file on open).

use std::{
    path::PathBuf,
    sync::{mpsc, Arc, Mutex, PoisonError},
    time::Duration,
};

use redb::{Database, TableDefinition};
use serde::Serialize;

use super::{
    db_error, open_database, Write, ARCHIVE, BUILDS, CERTS, DATAFLOWS, JOIN_CODES, MACHINES,
    MAINTENANCE, REQUESTS,
};
use crate::StoreError;

/// How often writes that could not be committed are tried again.
pub(super) const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The answer of a flush: `Ok` once everything queued before it is committed.
pub(super) type FlushResult = Result<(), Arc<StoreError>>;

/// The writer thread's state.
pub(super) struct Writer {
    /// Shared with the store's readers; `None` after a failed commit, until reopened.
    db: Arc<Mutex<Option<Database>>>,
    path: PathBuf,
    /// The writes of commits that failed, oldest first.
    unwritten: Vec<Write>,
    /// Why the last attempt failed, while the store is failing.
    failing: Option<Arc<StoreError>>,
}

impl Writer {
    /// A writer for the database at `path`.
    pub fn new(db: Arc<Mutex<Option<Database>>>, path: PathBuf) -> Self {
        Writer {
            db,
            path,
            unwritten: Vec::new(),
            failing: None,
        }
    }

    /// Commits what arrives on `rx` until the store is dropped; then tries once more to commit
    /// what is still unwritten.
    pub fn run(mut self, rx: mpsc::Receiver<Write>) {
        loop {
            let next = if self.unwritten.is_empty() {
                match rx.recv() {
                    Ok(write) => Some(write),
                    Err(mpsc::RecvError) => return,
                }
            } else {
                match rx.recv_timeout(RETRY_INTERVAL) {
                    Ok(write) => Some(write),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return self.last_attempt(),
                }
            };
            let mut batch = std::mem::take(&mut self.unwritten);
            let mut flushes: Vec<mpsc::Sender<FlushResult>> = Vec::new();
            for write in next.into_iter().chain(rx.try_iter()) {
                match write {
                    Write::Flush(tx) => flushes.push(tx),
                    write => batch.push(write),
                }
            }
            let result = self.attempt(batch);
            for flush in flushes {
                let _ = flush.send(result.clone());
            }
        }
    }

    /// Commits `batch` (reopening the database first after a failure); on failure the batch
    /// is kept for the next attempt.
    fn attempt(&mut self, batch: Vec<Write>) -> FlushResult {
        if batch.is_empty() {
            return Ok(());
        }
        let mut db = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        if db.is_none() {
            *db = open_database(&self.path, true).ok();
        }
        let result = match db.as_ref() {
            Some(open) => commit(open, &batch),
            None => Err(StoreError::Reopening),
        };
        match result {
            Ok(()) => {
                if self.failing.take().is_some() {
                    tracing::info!(
                        "the coordinator store {} takes writes again: {} write(s) stored",
                        self.path.display(),
                        batch.len()
                    );
                }
                Ok(())
            }
            Err(e) => {
                // Dropped, so that the next attempt opens it again.
                *db = None;
                if self.failing.is_none() {
                    tracing::error!(
                        "cannot write the coordinator store {}: {e}; retrying every {:?}",
                        self.path.display(),
                        RETRY_INTERVAL
                    );
                }
                let e = Arc::new(e);
                self.failing = Some(e.clone());
                self.unwritten = batch;
                Err(e)
            }
        }
    }

    /// The store is closing: one more try for what is unwritten.
    fn last_attempt(mut self) {
        let batch = std::mem::take(&mut self.unwritten);
        let count = batch.len();
        if let Err(e) = self.attempt(batch) {
            tracing::error!(
                "{count} change(s) could not be written to the coordinator store {} before it \
                 closed: {e}",
                self.path.display()
            );
        }
    }
}

fn put<T: Serialize>(
    txn: &redb::WriteTransaction,
    table: TableDefinition<'_, &str, &[u8]>,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value)?;
    let mut table = txn.open_table(table).map_err(db_error)?;
    table.insert(key, bytes.as_slice()).map_err(db_error)?;
    Ok(())
}

/// Commits `batch` in one transaction.
fn commit(db: &Database, batch: &[Write]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(db_error)?;
    for write in batch {
        match write {
            Write::Dataflow(record) => {
                let key = record.id.to_string();
                let (to, from) = if record.status.is_done() {
                    (ARCHIVE, DATAFLOWS)
                } else {
                    (DATAFLOWS, ARCHIVE)
                };
                txn.open_table(from)
                    .map_err(db_error)?
                    .remove(key.as_str())
                    .map_err(db_error)?;
                put(&txn, to, &key, record)?;
            }
            Write::Machine(m) => put(&txn, MACHINES, &m.name, m)?,
            Write::Request(r) => put(&txn, REQUESTS, &r.id.to_string(), r)?,
            Write::Build(b) => put(&txn, BUILDS, &b.id.to_string(), b)?,
            Write::JoinCode(c) => put(&txn, JOIN_CODES, &c.id, c)?,
            Write::Cert(c) => put(&txn, CERTS, &c.fingerprint, c)?,
            Write::Maintenance(m) => put(&txn, MAINTENANCE, &m.machine, m)?,
            Write::Remove(tables, keys) => {
                for table in *tables {
                    let mut table = txn.open_table(*table).map_err(db_error)?;
                    for key in keys {
                        table.remove(key.as_str()).map_err(db_error)?;
                    }
                }
            }
            Write::Flush(_) => {}
        }
    }
    txn.commit().map_err(db_error)
}
