//! A node moving between daemons (`adora node move`): it becomes local here (its new instance
//! gets queues and routes) or remote (its old instance left; nothing downstream is told).
//! Either way its outputs stay open: receivers keep waiting for them, from wherever they come.

use std::{sync::Arc, time::Duration};

use adora_core::{descriptor::InputSource, Descriptor, NodeId};
use adora_message::{daemon_to_node::NodeEvent, DataRef, Metadata};

use super::{deadlines::InputDeadline, Receiver, Routing};
use crate::queue::{InputQueue, Queued};

impl Routing {
    /// `node` runs here from now on: queues for its inputs and routes to them from their
    /// senders (local or remote) and timers. Returns the timer intervals that are new to this
    /// dataflow here (a ticker must be started for them).
    pub fn make_local(&mut self, descriptor: &Descriptor, node: &NodeId) -> Vec<Duration> {
        let Some(spec) = descriptor.nodes.iter().find(|n| &n.id == node) else {
            return Vec::new();
        };
        let state = self.nodes.entry(node.clone()).or_default();
        if !state.remote {
            return Vec::new();
        }
        state.remote = false;
        state.exited = false;
        state.stop_delivered = false;
        state.stop_queued = false;
        state.has_inputs = !spec.inputs.is_empty();
        let mut new_timers = Vec::new();
        for (input_id, input) in &spec.inputs {
            let state = self.nodes.get_mut(node).expect("inserted above");
            let queue = InputQueue::new(input.queue_size());
            state.queues.insert(input_id.clone(), queue);
            state.open_inputs.insert(input_id.clone());
            if let Some(timeout) = input.input_timeout() {
                let deadline = InputDeadline::new(timeout);
                state.deadlines.insert(input_id.clone(), deadline);
            }
            let receiver = (node.clone(), input_id.clone());
            match input.resolve() {
                Ok(InputSource::Node { node: from, output }) => {
                    if let Some(sender) = self.nodes.get_mut(&from) {
                        let routes = sender.routes.entry(output).or_insert_with(|| [].into());
                        *routes = with(routes, receiver);
                    }
                }
                Ok(InputSource::Timer(t)) => {
                    state.timer_inputs.insert(input_id.clone());
                    match self.timers.get_mut(&t.interval) {
                        Some(routes) => *routes = with(routes, receiver),
                        None => {
                            self.timers.insert(t.interval, [receiver].into());
                            new_timers.push(t.interval);
                        }
                    }
                }
                Err(e) => tracing::warn!("ignoring input {input_id} of {node}: {e}"),
            }
        }
        new_timers
    }

    /// `node`'s instance here is gone for good (it moved away): its queued inputs and held
    /// samples are released and no message is routed to it any more; samples it sent that are
    /// still in flight are unlinked by their last release. Its outputs stay open and keep
    /// their receivers (messages of the new instance arrive from the other machine); nobody
    /// gets `InputClosed`.
    pub fn make_remote(&mut self, node: &NodeId) {
        let Some(state) = self.nodes.get_mut(node) else {
            return;
        };
        if state.remote {
            return;
        }
        let mut queued: Vec<Queued> = state.control.drain(..).collect();
        for q in state.queues.values_mut() {
            queued.extend(q.drain());
        }
        let held = state.end_instance();
        state.queues.clear();
        state.open_inputs.clear();
        state.deadlines.clear();
        state.timer_inputs.clear();
        state.freed.clear();
        state.has_inputs = false;
        state.stop_delivered = false;
        state.stop_queued = false;
        state.exited = false;
        state.remote = true;
        for sample in self.samples.values_mut() {
            if &sample.owner == node && !sample.daemon_owned {
                sample.orphaned = true;
            }
        }
        for q in queued {
            self.release_event(q.event);
        }
        self.release_held(held);
        for sender in self.nodes.values_mut() {
            for routes in sender.routes.values_mut() {
                if routes.iter().any(|(n, _)| n == node) {
                    *routes = routes.iter().filter(|(n, _)| n != node).cloned().collect();
                }
            }
        }
        for routes in self.timers.values_mut() {
            if routes.iter().any(|(n, _)| n == node) {
                *routes = routes.iter().filter(|(n, _)| n != node).cloned().collect();
            }
        }
    }

    /// Queues a Stop event for `node` alone (its instance leaves this daemon).
    pub fn push_stop(&mut self, node: &NodeId) {
        if let Some(state) = self.nodes.get_mut(node) {
            if state.stop_queued || state.remote {
                return;
            }
            state.stop_queued = true;
        }
        self.push_control(node, None, |_| NodeEvent::Stop);
    }

    /// Drops a message of a muted node; a shared sample goes back to the node's pool.
    pub fn discard_output(&mut self, node: &NodeId, metadata: Metadata, data: DataRef) {
        self.deliver_to(&[], metadata, data, (Some(node), &[]));
    }

    /// Whether `node` runs on this daemon.
    pub fn is_local(&self, node: &NodeId) -> bool {
        self.nodes.get(node).is_some_and(|s| !s.remote)
    }
}

/// `routes` with `receiver` added (once).
fn with(routes: &Arc<[Receiver]>, receiver: Receiver) -> Arc<[Receiver]> {
    let mut list: Vec<Receiver> = routes.to_vec();
    if !list.contains(&receiver) {
        list.push(receiver);
    }
    list.into()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use adora_message::daemon_to_node::DaemonReply;
    use tokio::sync::oneshot;

    use super::*;

    const CHAIN: &str = r#"
nodes:
  - id: src
    path: src
    outputs: [out]
  - id: relay
    path: relay
    inputs: { in: src/out }
    outputs: [out]
  - id: sink
    path: sink
    inputs: { in: relay/out }
"#;

    fn inline() -> (Metadata, DataRef) {
        let metadata = Metadata::new(uhlc::HLC::default().new_timestamp());
        (metadata, DataRef::Inline(vec![1, 2, 3]))
    }

    /// What `node` gets on its next request, as `input-id` / `closed:input-id` / `stop`.
    fn events(r: &mut Routing, node: &str) -> Vec<String> {
        let (tx, mut rx) = oneshot::channel();
        r.next_events(&node.into(), tx);
        match rx.try_recv() {
            Ok(DaemonReply::Events { events, .. }) => events
                .into_iter()
                .map(|e| match e {
                    NodeEvent::Input { id, .. } => id.to_string(),
                    NodeEvent::InputClosed { id } => format!("closed:{id}"),
                    NodeEvent::Stop => "stop".into(),
                    other => format!("{other:?}"),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn a_node_moving_in_and_out_never_closes_its_receivers_inputs() {
        let d = Descriptor::parse(CHAIN, Path::new("t.yml")).expect("valid");
        // The sink's daemon: the relay runs elsewhere at first.
        let mut r = Routing::with_locality(&d, |n| n.as_str() == "sink");
        let (m, data) = inline();
        r.send_remote_output(&"relay".into(), &"out".into(), (m, data), &[]);
        assert_eq!(events(&mut r, "sink"), ["in"]);

        // The relay moves here: it gets `src/out` (remote) and still feeds the sink.
        assert!(r.make_local(&d, &"relay".into()).is_empty(), "no timers");
        assert!(r.is_local(&"relay".into()));
        let (m, data) = inline();
        r.send_remote_output(&"src".into(), &"out".into(), (m, data), &[]);
        assert_eq!(events(&mut r, "relay"), ["in"]);
        let (m, data) = inline();
        r.send_output(&"relay".into(), &"out".into(), m, data);
        assert_eq!(events(&mut r, "sink"), ["in"]);

        // It leaves again: stopped alone, then remote; the sink's input stays open and is fed
        // from the other machine.
        r.push_stop(&"relay".into());
        assert_eq!(events(&mut r, "relay"), ["stop"]);
        r.make_remote(&"relay".into());
        assert!(!r.is_local(&"relay".into()));
        let (m, data) = inline();
        r.send_remote_output(&"src".into(), &"out".into(), (m, data), &[]);
        assert!(
            events(&mut r, "relay").is_empty(),
            "no longer routed to the relay"
        );
        let (m, data) = inline();
        r.send_remote_output(&"relay".into(), &"out".into(), (m, data), &[]);
        assert_eq!(
            events(&mut r, "sink"),
            ["in"],
            "no InputClosed, still delivered"
        );
        assert!(r.is_output_open(&"relay".into(), &"out".into()));
    }
}
