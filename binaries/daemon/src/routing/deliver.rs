//! Sending: a node's output (or a remote node's, or a timer tick) routed to the queues of its
//! local receivers, except those whose lanes already took it.

use adora_core::{DataId, NodeId};
use adora_message::{daemon_to_node::NodeEvent, DataRef, Metadata};

use super::{Receiver, Routing, SampleState};
use crate::queue::Queued;

impl Routing {
    /// Routes a node output to every receiver's queue.
    pub fn send_output(
        &mut self,
        sender: &NodeId,
        output: &DataId,
        metadata: Metadata,
        data: DataRef,
    ) {
        self.route(sender, output, metadata, data, None);
    }

    /// Routes a node output that the lanes of `served` already took to the output's other
    /// local receivers (unless `route_rest` is false); a shared payload is held by `served`
    /// until they drop it.
    pub fn send_output_direct(
        &mut self,
        sender: &NodeId,
        output: &DataId,
        (metadata, data): (Metadata, DataRef),
        (served, route_rest): (&[(NodeId, DataId)], bool),
    ) {
        if route_rest {
            return self.route(sender, output, metadata, data, Some(served));
        }
        let owner = self.is_local(sender).then_some(sender);
        self.deliver_to(&[], metadata, data, (owner, served));
    }

    /// Routes a message of a node on another machine (its payload, if shared, is in the
    /// daemon's own pool) to every local receiver's queue but those in `served` (their lanes
    /// took it, `remote/feed.rs`).
    pub fn send_remote_output(
        &mut self,
        sender: &NodeId,
        output: &DataId,
        (metadata, data): (Metadata, DataRef),
        served: &[(NodeId, DataId)],
    ) {
        let served = (!served.is_empty()).then_some(served);
        self.route_from(sender, output, metadata, data, (true, served));
    }

    fn route(
        &mut self,
        sender: &NodeId,
        output: &DataId,
        metadata: Metadata,
        data: DataRef,
        served: Option<&[(NodeId, DataId)]>,
    ) {
        self.route_from(sender, output, metadata, data, (false, served));
    }

    /// Routes an output of `sender` (`from_remote`: a node on another machine, whose payload is
    /// a copy in the daemon's pool) to its local receivers but those in `served`.
    fn route_from(
        &mut self,
        sender: &NodeId,
        output: &DataId,
        metadata: Metadata,
        data: DataRef,
        (from_remote, served): (bool, Option<&[(NodeId, DataId)]>),
    ) {
        let Some(state) = self.nodes.get_mut(sender) else {
            return;
        };
        if !state.open_outputs.contains(output) {
            tracing::warn!(
                "node `{sender}` sent on undeclared or closed output `{output}`; dropped"
            );
            if let DataRef::Shared(s) = &data {
                self.samples.insert(
                    s.token,
                    SampleState {
                        owner: sender.clone(),
                        os_id: s.os_id.clone(),
                        refs: 1,
                        orphaned: false,
                        daemon_owned: from_remote,
                    },
                );
                self.release_ref(s.token);
            }
            return;
        }
        // A message the lanes took is counted by them.
        if served.is_none() {
            state.sent += 1;
        }
        // An `Arc` clone, so that the routing table is not borrowed while queues change.
        let receivers = state.routes.get(output).cloned();
        self.deliver_to(
            receivers.as_deref().unwrap_or(&[]),
            metadata,
            data,
            ((!from_remote).then_some(sender), served.unwrap_or(&[])),
        );
    }

    /// Delivers a timer tick to every input subscribed to `interval`.
    pub fn timer_tick(&mut self, interval: std::time::Duration, metadata: Metadata) {
        let receivers = self.timers.get(&interval).cloned();
        let receivers = receivers.as_deref().unwrap_or(&[]);
        self.deliver_to(
            receivers,
            metadata,
            DataRef::Inline(Vec::new()),
            (None, &[]),
        );
    }

    /// A shared payload about to be delivered: one reference held while fanning out (released
    /// at the end of [`Self::deliver_to`]).
    fn register_sample(&mut self, data: &DataRef, owner: Option<&NodeId>) -> Option<u64> {
        let DataRef::Shared(s) = data else {
            return None;
        };
        let daemon_owned = owner.is_none();
        let owner = owner.cloned().unwrap_or_else(|| NodeId::from("adora"));
        // Lanes hold their samples in the samples themselves (holder words), those of a local
        // sender and the daemon's copies of remote messages alike: their receivers release
        // them without the daemon.
        self.samples.insert(
            s.token,
            SampleState {
                owner,
                os_id: s.os_id.clone(),
                refs: 1,
                orphaned: false,
                daemon_owned,
            },
        );
        Some(s.token)
    }

    /// Queues a message for `receivers` but those in `served` (their lanes took it: they only
    /// hold its shared payload); `owner` is the local node whose pool holds a shared payload
    /// (`None`: the daemon's own pool).
    pub(super) fn deliver_to(
        &mut self,
        receivers: &[Receiver],
        metadata: Metadata,
        data: DataRef,
        (owner, served): (Option<&NodeId>, &[(NodeId, DataId)]),
    ) {
        let token = self.register_sample(&data, owner);
        let mut evicted = Vec::new();
        let stamp = metadata.timestamp;
        // The message is moved into the last receiver's queue and cloned for the others.
        let mut message = Some((metadata, data));
        let last = receivers
            .iter()
            .rposition(|r| !served.contains(r))
            .unwrap_or(0);
        for (i, (node, input)) in receivers.iter().enumerate() {
            if served.iter().any(|(n, i)| n == node && i == input) {
                continue;
            }
            let seq = self.next_seq();
            let Some(state) = self.nodes.get_mut(node) else {
                continue;
            };
            if state.exited || !state.open_inputs.contains(input) {
                continue;
            }
            let Some(queue) = state.queues.get_mut(input) else {
                continue;
            };
            let timer = state.timer_inputs.contains(input);
            if !state
                .cut
                .as_mut()
                .is_none_or(|c| c.admit(input, stamp, timer))
            {
                continue;
            }
            let (metadata, data) = if i == last {
                message.take()
            } else {
                message.clone()
            }
            .expect("the message is only moved out for the last receiver");
            let event = NodeEvent::Input {
                id: input.clone(),
                metadata,
                data,
            };
            if let Some(deadline) = state.deadlines.get_mut(input) {
                deadline.last = std::time::Instant::now();
            }
            if let Some(old) = queue.push(Queued { seq, event }) {
                evicted.push(old);
            }
            if let Some(sample) = token.and_then(|t| self.samples.get_mut(&t)) {
                sample.refs += 1;
            }
            self.wake(node);
        }
        for old in evicted {
            self.release_event(old.event);
        }
        if let Some(t) = token {
            self.release_ref(t);
        }
    }
}
