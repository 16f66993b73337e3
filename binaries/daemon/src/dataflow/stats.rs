//! What this daemon reports about each of its nodes of a dataflow with every heartbeat: status,
//! pid, restarts, last error and the routing counters. Process figures (CPU, memory, uptime) are
//! added by [`crate::process_stats`] outside the actor.

use adora_core::NodeId;
use adora_message::stats::{NodeStatus, RemoteDrops};

use super::Dataflow;
use adora_message::control::NodeResult;

/// One local node of a dataflow, as the actor sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeSnapshot {
    pub node: NodeId,
    pub status: NodeStatus,
    /// The pid of the running process (none once it exited).
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_error: Option<String>,
    pub sent: u64,
    pub received: u64,
    pub dropped: u64,
    /// The part of `dropped` missing between machines.
    pub remote_dropped: Vec<RemoteDrops>,
}

impl Dataflow {
    /// Every local node with its status and counters.
    pub(crate) fn node_snapshots(&self) -> Vec<NodeSnapshot> {
        let counters = self.routing.counters();
        self.nodes
            .iter()
            // An instance arriving or leaving in a move is not the node's instance (yet, now).
            .filter(|(id, _)| !self.moves.hides(id))
            .map(|(id, rt)| {
                let outcome = self.outcomes.get(id);
                let failed_reason = match outcome {
                    Some(NodeResult::Failed { reason, .. }) => Some(reason.clone()),
                    _ => None,
                };
                let status = if rt.running && self.pending.contains(id) {
                    NodeStatus::Starting
                } else if rt.running && self.stopping {
                    NodeStatus::Stopping
                } else if rt.running {
                    NodeStatus::Running
                } else if rt.restarting {
                    NodeStatus::Restarting
                } else if failed_reason.is_some() || rt.failure.is_some() {
                    NodeStatus::Failed
                } else {
                    NodeStatus::Finished
                };
                let c = counters.get(id);
                NodeSnapshot {
                    node: id.clone(),
                    status,
                    pid: rt.pid.filter(|_| rt.running),
                    restarts: rt.restart.as_ref().map_or(0, |t| t.total()),
                    last_error: rt.failure.clone().or(failed_reason),
                    sent: c.map_or(0, |c| c.sent),
                    received: c.map_or(0, |c| c.received),
                    dropped: c.map_or(0, |c| c.dropped.values().sum()),
                    remote_dropped: c.map_or_else(Vec::new, |c| {
                        c.remote_dropped
                            .iter()
                            .map(|((input, reason), count)| RemoteDrops {
                                input: input.clone(),
                                reason: *reason,
                                count: *count,
                            })
                            .collect()
                    }),
                }
            })
            .collect()
    }
}
