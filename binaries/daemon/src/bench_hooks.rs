//! Hooks for the daemon's criterion benches (`benches/`): thin public wrappers around crate-private
//! types, so the hot paths can be measured without a socket. Not a stable API.

use adora_core::{DataId, Descriptor, NodeId};
use adora_message::{daemon_to_node::DaemonReply, DataRef, Metadata};
use tokio::sync::oneshot;

/// The routing state of one dataflow (queues, pending requests, shared samples in flight).
pub struct Routing(crate::routing::Routing);

impl Routing {
    /// Routing tables of a validated descriptor.
    pub fn new(descriptor: &Descriptor) -> Self {
        Routing(crate::routing::Routing::new(descriptor))
    }

    /// What the actor does for a node's `SendOutput`.
    pub fn send_output(
        &mut self,
        sender: &NodeId,
        output: &DataId,
        metadata: Metadata,
        data: DataRef,
    ) {
        self.0.send_output(sender, output, metadata, data);
    }

    /// What the actor does for a node's `NextEvents`: the reply arrives on the returned receiver
    /// as soon as there is something to deliver.
    pub fn next_events(&mut self, node: &NodeId) -> oneshot::Receiver<DaemonReply> {
        let (tx, rx) = oneshot::channel();
        self.0.next_events(node, tx);
        rx
    }

    /// What the actor does when a node's drops connection waits for released samples.
    pub fn next_freed(&mut self, node: &NodeId) -> oneshot::Receiver<DaemonReply> {
        let (tx, rx) = oneshot::channel();
        self.0.next_freed(node, tx);
        rx
    }

    /// What the actor does for a node's `ReportDropTokens`.
    pub fn report_dropped(&mut self, node: &NodeId, tokens: Vec<u64>) {
        self.0.report_dropped(node, tokens);
    }

    /// What the actor does before routing a batch of requests from one control connection.
    pub fn hold_wakes(&mut self) {
        self.0.hold_wakes();
    }

    /// What the actor does after routing that batch: waiting receivers get one reply each.
    pub fn release_wakes(&mut self) {
        self.0.release_wakes();
    }
}
