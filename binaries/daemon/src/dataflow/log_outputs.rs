//! Logs as data: every stdout/stderr line of a node (`send_stdout_as`) or every log entry as a
//! JSON string (`send_logs_as`, see [`crate::node_logs`]) is also a message on one of its outputs,
//! a `Utf8` Arrow array of one string, timestamped by the daemon. The node's log reader makes the
//! message and copies it to the taps that want it (`adora record`, `adora topic`), like a node's
//! control connection does for the messages the node sends, before the actor routes it.
//!
//! These outputs stay open until the node's process has exited and its pipes are drained (its last
//! lines come after its control connection closed), then closes like its other outputs.

use adora_core::{DataId, NodeId};
use adora_message::{
    arrow_layout::{ArrowTypeInfo, TypeInfo},
    DataRef, Metadata, Timestamp,
};

use super::Dataflow;

impl Dataflow {
    /// The outputs on which `node`'s log lines and entries are sent.
    pub(crate) fn log_outputs(&self, node: &NodeId) -> Vec<DataId> {
        self.spec
            .descriptor
            .nodes
            .iter()
            .find(|n| &n.id == node)
            .map(|n| {
                [&n.send_stdout_as, &n.send_logs_as]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends one log line or entry of `node` on its log output `output` (dropped once that output
    /// is closed). Not a request of the node: it does not count for its health check.
    pub fn send_log_line(
        &mut self,
        node: &NodeId,
        output: &DataId,
        (metadata, data): (Metadata, DataRef),
    ) {
        if !self.routing.is_output_open(node, output) {
            return;
        }
        self.forward_remote(node, output, &metadata, &data);
        self.routing.send_output(node, output, metadata, data);
    }
}

/// The message of one log line or entry: one string, stamped `timestamp`.
pub(crate) fn log_message(text: &str, timestamp: Timestamp) -> (Metadata, DataRef) {
    let (info, payload) = ArrowTypeInfo::single_string(text);
    let metadata = Metadata {
        timestamp,
        type_info: TypeInfo::encode(&info),
        parameters: Default::default(),
    };
    (metadata, DataRef::Inline(payload))
}
