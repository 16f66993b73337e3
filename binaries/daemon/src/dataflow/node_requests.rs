//! What a node asks of its dataflow on its control and events connections: send an output, close
//! outputs, release shared samples, wait for events.

use adora_core::{DataId, NodeId};
use adora_message::{DataRef, Metadata};

use super::Dataflow;
use crate::routing::Waiter;

impl Dataflow {
    /// A local node sent a message: published to other machines first (routing may hand the
    /// sample back to its sender), then delivered to the local receivers.
    pub fn send_output(
        &mut self,
        node: &NodeId,
        output: &DataId,
        metadata: Metadata,
        data: DataRef,
    ) {
        self.touch(node);
        if self.moves.is_muted(node) {
            return self.drop_muted(node, metadata, data);
        }
        self.forward_remote(node, output, &metadata, &data);
        self.routing.send_output(node, output, metadata, data);
    }

    /// A local node sent a message that the lanes of `served` took: the rest of its receivers
    /// (other machines, taps, closed lanes) get it here.
    pub fn send_output_direct(
        &mut self,
        node: &NodeId,
        output: &DataId,
        (metadata, data): (Metadata, DataRef),
        served: &[(NodeId, DataId)],
    ) {
        self.touch(node);
        if self.moves.is_muted(node) {
            // Lanes close when a move starts; what the lanes took just before still counts
            // as held by them, but goes nowhere else.
            tracing::debug!("node `{node}` is muted: its message stays in its lanes");
            return self.routing.send_output_direct(
                node,
                output,
                (metadata, data),
                (served, false),
            );
        }
        // Its publish lane (if it has one) took it for the other machines.
        let publisher = crate::routing::publisher_of(node, output);
        if !served.iter().any(|(receiver, _)| *receiver == publisher) {
            self.forward_remote(node, output, &metadata, &data);
        }
        self.routing
            .send_output_direct(node, output, (metadata, data), (served, true));
    }

    /// A local node closed some of its outputs, here and on other machines.
    pub fn close_outputs(&mut self, node: &NodeId, outputs: &[DataId]) {
        self.touch(node);
        if self.moves.is_muted(node) {
            return; // its outputs live on in its other instance
        }
        let closed = self.routing.close_outputs(node, outputs);
        self.remote_closed(node, &closed);
    }

    /// A local node released shared samples it had received.
    pub fn dropped_samples(&mut self, node: &NodeId, tokens: Vec<u64>) {
        self.touch(node);
        self.routing.report_dropped(node, tokens);
        self.recycle_remote_samples();
    }

    /// A local node waits for its next events, reporting the samples it dropped since it last
    /// asked.
    pub fn next_events(&mut self, node: &NodeId, dropped: Vec<u64>, reply: Waiter) {
        self.touch(node);
        if !dropped.is_empty() {
            self.dropped_samples(node, dropped);
        }
        self.routing.next_events(node, reply);
    }
}
