//! Update locks (`AdoraNode::update_lock`): while a node holds one, maintenance of its machine
//! (`adora cluster upgrade`, `adora cluster drain`) waits. The lock is recorded by the
//! coordinator before `update_lock` returns; it is released when the guard is dropped, or when
//! the node exits, whichever comes first.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use adora_message::node_to_daemon::NodeRequest;

use crate::{drops::ControlChannel, error::NodeError};

/// Numbers of this process's locks (unique within the node).
static NEXT_LOCK: AtomicU64 = AtomicU64::new(1);

/// Longest reason sent (bytes); the coordinator refuses longer ones.
const MAX_REASON_LEN: usize = adora_message::maintenance::MAX_REASON_LEN;

/// A held update lock; dropping it releases the lock.
#[must_use = "the lock is released as soon as this guard is dropped"]
pub struct UpdateLock {
    control: Arc<ControlChannel>,
    lock: u64,
    reason: String,
    released: bool,
}

impl std::fmt::Debug for UpdateLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateLock")
            .field("lock", &self.lock)
            .field("reason", &self.reason)
            .field("released", &self.released)
            .finish()
    }
}

impl UpdateLock {
    /// Takes a lock through the node's control connection; blocks until the daemon answers.
    pub(crate) fn take(control: Arc<ControlChannel>, reason: &str) -> Result<Self, NodeError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > MAX_REASON_LEN {
            return Err(NodeError::UpdateLock(format!(
                "a lock's reason must be 1 to {MAX_REASON_LEN} bytes long"
            )));
        }
        let lock = NEXT_LOCK.fetch_add(1, Ordering::Relaxed);
        let request = NodeRequest::TakeUpdateLock {
            lock,
            reason: reason.to_owned(),
        };
        control
            .request_lock(&request)?
            .map_err(NodeError::UpdateLock)?;
        Ok(Self {
            control,
            lock,
            reason: reason.to_owned(),
            released: false,
        })
    }

    /// Why it was taken.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Releases the lock now (dropping the guard does the same).
    pub fn release(mut self) -> Result<(), NodeError> {
        self.released = true;
        self.control
            .send(&NodeRequest::ReleaseUpdateLock { lock: self.lock })
    }
}

impl Drop for UpdateLock {
    fn drop(&mut self) {
        if !self.released {
            // Best effort: if the daemon is gone, so is the lock (a node's locks end with it).
            if let Err(e) = self
                .control
                .send(&NodeRequest::ReleaseUpdateLock { lock: self.lock })
            {
                tracing::debug!("could not release update lock `{}`: {e}", self.reason);
            }
        }
    }
}
