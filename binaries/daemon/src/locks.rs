//! Update locks of this daemon's nodes (`AdoraNode::update_lock`): a node asks on its control
//! connection, the daemon asks the coordinator (which refuses while a maintenance operation has
//! the machine) and answers the node; a node's locks go when it releases them or exits.
//!
//! Without a coordinator (`adora run`) there is no maintenance to hold off: locks are granted
//! here. A coordinator that does not answer within [`LOCK_ANSWER_TIMEOUT`] fails the request; if
//! its grant arrives later, the lock is released again at once, so it never outlives the request.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use adora_core::NodeId;
use adora_message::{
    control::ControlError, daemon_to_coordinator::DaemonMessage, envelope::Envelope,
    maintenance::NodeLock,
};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::event::Reports;

/// How long a node waits for the coordinator to record its lock.
pub(crate) const LOCK_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One lock: the node's dataflow, the node, the lock's number within the node.
type Key = (Uuid, NodeId, u64);

/// The reply to a node's `TakeUpdateLock`.
pub(crate) type LockReply = oneshot::Sender<Result<(), String>>;

struct Pending {
    key: Key,
    reason: String,
    reply: LockReply,
}

/// The locks held by this daemon's nodes and the requests waiting for the coordinator.
#[derive(Default)]
pub(crate) struct Locks {
    held: BTreeMap<Key, String>,
    pending: HashMap<u64, Pending>,
    /// Requests the node was told failed (timed out), in case the coordinator grants them late.
    timed_out: HashMap<u64, Key>,
    next_request: u64,
    /// The link to the coordinator; `None` under `adora run`.
    coordinator: Option<Reports>,
}

impl Locks {
    /// Locks recorded by the coordinator reached through `reports`.
    pub fn with_coordinator(reports: Reports) -> Self {
        Self {
            coordinator: Some(reports),
            ..Self::default()
        }
    }

    /// A node asks for a lock. Returns the request number to time out when the coordinator was
    /// asked; `None` when it was answered at once.
    pub fn take(
        &mut self,
        dataflow: Uuid,
        node: NodeId,
        lock: u64,
        reason: String,
        reply: LockReply,
    ) -> Option<u64> {
        let key = (dataflow, node, lock);
        let Some(coordinator) = &self.coordinator else {
            self.held.insert(key, reason);
            let _ = reply.send(Ok(()));
            return None;
        };
        self.next_request += 1;
        let request = self.next_request;
        let message = DaemonMessage::TakeLock {
            request,
            lock: NodeLock {
                dataflow,
                node: key.1.clone(),
                lock,
                reason: reason.clone(),
            },
        };
        let _ = coordinator.send(Envelope::new(0, message));
        self.pending.insert(request, Pending { key, reason, reply });
        Some(request)
    }

    /// The coordinator answered a request.
    pub fn answered(&mut self, request: u64, result: Result<(), ControlError>) {
        let Some(pending) = self.pending.remove(&request) else {
            if let Some((dataflow, node, lock)) = self.timed_out.remove(&request) {
                if result.is_ok() {
                    tracing::info!(
                        "the update lock of node `{node}` was granted after its request timed out: releasing it"
                    );
                    self.report_released(dataflow, &node, vec![lock]);
                }
            }
            return;
        };
        match result {
            Ok(()) => {
                let key = pending.key.clone();
                self.held.insert(key.clone(), pending.reason);
                if pending.reply.send(Ok(())).is_err() {
                    // The node went away while waiting.
                    self.release(key.0, &key.1, key.2);
                }
            }
            Err(e) => {
                let _ = pending.reply.send(Err(e.message));
            }
        }
    }

    /// The coordinator did not answer in time.
    pub fn timed_out(&mut self, request: u64) {
        if let Some(pending) = self.pending.remove(&request) {
            self.timed_out.insert(request, pending.key);
            let _ = pending.reply.send(Err(format!(
                "the coordinator did not record the lock within {}s (is it reachable?)",
                LOCK_ANSWER_TIMEOUT.as_secs()
            )));
        }
    }

    /// A node released a lock.
    pub fn release(&mut self, dataflow: Uuid, node: &NodeId, lock: u64) {
        if self.held.remove(&(dataflow, node.clone(), lock)).is_some() {
            self.report_released(dataflow, node, vec![lock]);
        }
    }

    /// A node's process is gone: so are its locks.
    pub fn node_exited(&mut self, dataflow: Uuid, node: &NodeId) {
        let before = self.held.len();
        self.held
            .retain(|(d, n, _), _| !(*d == dataflow && n == node));
        if self.held.len() != before {
            tracing::info!("node `{node}` exited: its update locks are released");
            self.report_released(dataflow, node, Vec::new());
        }
    }

    fn report_released(&self, dataflow: Uuid, node: &NodeId, locks: Vec<u64>) {
        if let Some(coordinator) = &self.coordinator {
            let message = DaemonMessage::ReleaseLocks {
                dataflow,
                node: node.clone(),
                locks,
            };
            let _ = coordinator.send(Envelope::new(0, message));
        }
    }

    /// The locks held now, for the daemon's registration.
    pub fn reported(&self) -> Vec<NodeLock> {
        self.held
            .iter()
            .map(|((dataflow, node, lock), reason)| NodeLock {
                dataflow: *dataflow,
                node: node.clone(),
                lock: *lock,
                reason: reason.clone(),
            })
            .collect()
    }
}
