//! What a dataflow run on this daemon leaves behind: the wire [`DataflowOutcome`] (how every node
//! ended) plus the local figures `adora run` reports.

use std::collections::BTreeMap;

use adora_core::NodeId;
use adora_message::control::{DataflowOutcome, NodeResult};

use crate::routing::NodeCounters;

/// The result of a dataflow run.
#[derive(Debug, Clone, Default)]
pub struct DataflowResult {
    /// How every node ended (the same type the coordinator reports).
    pub outcome: DataflowOutcome,
    /// Message counters of every node.
    pub counters: BTreeMap<NodeId, NodeCounters>,
    /// How often each node was restarted by its restart policy.
    pub restarts: BTreeMap<NodeId, u32>,
}

impl DataflowResult {
    /// Nodes that failed, with their result.
    pub fn failures(&self) -> impl Iterator<Item = (&NodeId, &NodeResult)> {
        self.outcome.failures()
    }

    /// True when no node failed.
    pub fn is_success(&self) -> bool {
        self.outcome.is_success()
    }
}

impl std::fmt::Display for DataflowResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.outcome.fmt(f)
    }
}
