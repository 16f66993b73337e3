//! What routing counts per node: messages sent, received and dropped (in full input queues, or
//! missing between machines, with the reason).

use std::collections::BTreeMap;

use adora_core::{DataId, NodeId};
use adora_message::stats::RemoteDropReason;

use super::Routing;

/// Per-node message counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// Messages the node sent.
    pub sent: u64,
    /// Messages delivered to the node.
    pub received: u64,
    /// Messages dropped from its input queues or missing between machines, per input.
    pub dropped: BTreeMap<DataId, u64>,
    /// The part of `dropped` that went missing between machines, per input and reason.
    pub remote_dropped: BTreeMap<(DataId, RemoteDropReason), u64>,
}

impl Routing {
    /// Message counters of every node.
    pub fn counters(&self) -> BTreeMap<NodeId, NodeCounters> {
        let mut counters = self.daemon_counters();
        self.add_lane_counters(&mut counters);
        counters
    }

    /// What the daemon counted itself (without the lanes).
    fn daemon_counters(&self) -> BTreeMap<NodeId, NodeCounters> {
        self.nodes
            .iter()
            .filter(|(_, s)| !s.remote)
            .map(|(id, s)| {
                let dropped = s
                    .queues
                    .iter()
                    .map(|(i, q)| (i.clone(), q.dropped()))
                    .filter(|(_, d)| *d > 0)
                    .collect();
                (
                    id.clone(),
                    NodeCounters {
                        sent: s.sent,
                        received: s.received,
                        dropped,
                        remote_dropped: s.remote_dropped.clone(),
                    },
                )
            })
            .collect()
    }

    /// `n` messages of `sender/output` (a node on another machine) went missing on their way
    /// here: every local input it feeds counts them as dropped, with the reason (the node sees
    /// them in its drop count with its next events).
    pub fn count_remote_drops(
        &mut self,
        sender: &NodeId,
        output: &DataId,
        reason: RemoteDropReason,
        n: u64,
    ) {
        let Some(receivers) = self.nodes.get(sender).and_then(|s| s.routes.get(output)) else {
            return;
        };
        for (node, input) in receivers.clone().iter() {
            let Some(state) = self.nodes.get_mut(node) else {
                continue;
            };
            if let Some(queue) = state.queues.get_mut(input) {
                queue.count_missing(n);
                *state
                    .remote_dropped
                    .entry((input.clone(), reason))
                    .or_default() += n;
            }
        }
    }
}
