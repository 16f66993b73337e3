//! Logs as data (`send_stdout_as`): every stdout/stderr line of a node is also a message on one
//! of its outputs, a `Utf8` Arrow array of one string, timestamped by the daemon.
//!
//! The output stays open until the node's process has exited and its pipes are drained (its last
//! lines come after its control connection closed), then closes like its other outputs.

use adora_core::{DataId, NodeId};
use adora_message::{
    arrow_layout::{ArrowTypeInfo, TypeInfo},
    DataRef, Metadata, Timestamp,
};

use super::Dataflow;

impl Dataflow {
    /// The output on which `node`'s log lines are sent, if it has one.
    pub(crate) fn stdout_output(&self, node: &NodeId) -> Option<DataId> {
        self.spec
            .descriptor
            .nodes
            .iter()
            .find(|n| &n.id == node)
            .and_then(|n| n.send_stdout_as.clone())
    }

    /// Sends one log line of `node` on its `send_stdout_as` output (dropped once that output is
    /// closed). Not a request of the node: it does not count for its health check.
    pub fn send_log_line(&mut self, node: &NodeId, line: &str, timestamp: Timestamp) {
        let Some(output) = self.stdout_output(node) else {
            return;
        };
        if !self.routing.is_output_open(node, &output) {
            return;
        }
        let (info, payload) = ArrowTypeInfo::single_string(line);
        let metadata = Metadata {
            timestamp,
            type_info: TypeInfo::encode(&info),
            parameters: Default::default(),
        };
        let data = DataRef::Inline(payload);
        self.forward_remote(node, &output, &metadata, &data);
        self.routing.send_output(node, &output, metadata, data);
    }
}
