//! The routing state of one dataflow on this daemon: per-node input queues, pending event requests,
//! and reference counts of shared-memory samples in flight ([`samples`]).
//!
//! Everything here is synchronous and owned by the daemon actor; the only side effects are replies
//! on oneshot channels and unlinking orphaned shared-memory segments.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::Arc,
};

use adora_core::{descriptor::InputSource, DataId, Descriptor, NodeId};
use adora_message::{
    daemon_to_node::{DaemonReply, NodeEvent},
    stats::RemoteDropReason,
    DataRef,
};
use tokio::sync::oneshot;

use crate::queue::{InputQueue, Queued};

/// Reply slot of a pending `NextEvents` request, or of a drops connection waiting for released
/// samples to push.
pub(crate) type Waiter = oneshot::Sender<DaemonReply>;

/// A receiving input: which node and which of its inputs.
type Receiver = (NodeId, DataId);

/// The receivers of one output, shared so that routing a message does not copy the list.
type Receivers = Arc<[Receiver]>;

#[derive(Default)]
struct NodeRouting {
    queues: BTreeMap<DataId, InputQueue>,
    /// Events that are never dropped (InputClosed, Stop, Error), with their sequence numbers.
    control: VecDeque<Queued>,
    open_inputs: BTreeSet<DataId>,
    /// Inputs with an `input_timeout`, and when each last received a message.
    deadlines: BTreeMap<DataId, deadlines::InputDeadline>,
    /// Inputs fed by a timer (`exit_when_nodes_finish` closes them last).
    timer_inputs: BTreeSet<DataId>,
    has_inputs: bool,
    events_waiter: Option<Waiter>,
    freed: Vec<u64>,
    /// Lanes of its outputs whose receiver's instance ended, and where it stopped taking (see
    /// `DaemonReply::LanesReleased`), pushed on the drops connection like `freed`.
    released_lanes: Vec<(String, u64)>,
    freed_waiter: Option<Waiter>,
    /// Shared samples handed to the node and not yet reported dropped (token -> count).
    held: HashMap<u64, usize>,
    open_outputs: BTreeSet<DataId>,
    /// Where each of the node's outputs goes (outputs without a local receiver are absent).
    routes: HashMap<DataId, Receivers>,
    /// Sum of the drop counts last sent to the node: the per-input counts travel only when it changed.
    drops_reported: u64,
    stop_delivered: bool,
    stop_queued: bool,
    exited: bool,
    /// The node runs on another machine: it only appears here as a sender of remote messages.
    remote: bool,
    /// Messages sent / received, for statistics.
    sent: u64,
    received: u64,
    /// Messages of its inputs that went missing between machines (also in the queues' drop
    /// counts), per input and reason.
    remote_dropped: BTreeMap<(DataId, RemoteDropReason), u64>,
    /// In a move: the cut recorded (arriving) or applied (leaving), see [`cut`].
    cut: Option<cut::CutState>,
}

impl NodeRouting {
    /// The node's process is gone: end its pending requests (their connections are closed) and
    /// hand back the shared samples it held.
    fn end_instance(&mut self) -> Vec<(u64, usize)> {
        if let Some(w) = self.events_waiter.take() {
            let _ = w.send(DaemonReply::Events {
                events: Vec::new(),
                drop_counts: BTreeMap::new(),
            });
        }
        if let Some(w) = self.freed_waiter.take() {
            let _ = w.send(DaemonReply::FreedSamples(Vec::new()));
        }
        // The next instance starts without counts: send them again with its first reply.
        self.drops_reported = 0;
        self.held.drain().collect()
    }
}

/// Routing state of one dataflow.
/// A shared-memory sample in flight: who owns it and how many receivers still hold it.
struct SampleState {
    pub owner: NodeId,
    pub os_id: String,
    pub refs: usize,
    /// The instance that sent it is gone (restarted): unlink on release instead of recycling.
    pub orphaned: bool,
    /// A copy of a remote message in the daemon's own pool (whoever sent it, and even when
    /// that node now runs here after a move).
    pub daemon_owned: bool,
}

pub(crate) struct Routing {
    nodes: BTreeMap<NodeId, NodeRouting>,
    timers: BTreeMap<std::time::Duration, Receivers>,
    samples: HashMap<u64, SampleState>,
    seq: u64,
    /// Released samples the daemon itself owns (copies of remote messages), for its pool.
    daemon_freed: Vec<u64>,
    /// Where ended receiver instances stopped taking from lanes that feeds of remote outputs
    /// write (lane number, position), for the same pool ([`lanes`]).
    remote_taken: Vec<(u32, u64)>,
    /// While a batch of requests is routed: the nodes to answer once it is done.
    held_wakes: Option<Vec<NodeId>>,
    /// The dataflow's `exit_when_nodes_finish` (see `finish.rs`).
    exit_when_nodes_finish: bool,
    /// Senders waiting for room in their receivers' queues (`room.rs`).
    room_waiters: Vec<room::RoomWaiter>,
    /// The shared-memory lanes of local edges (`lanes.rs`).
    lanes: lanes::Lanes,
}

impl Routing {
    /// Builds the routing tables of a validated descriptor where every node is local.
    pub fn new(descriptor: &Descriptor) -> Self {
        Self::with_locality(descriptor, |_| true)
    }

    /// Builds the routing tables when only the nodes `is_local` accepts run on this daemon: only
    /// they receive; the others only appear as senders (their messages arrive over Zenoh).
    pub fn with_locality(descriptor: &Descriptor, is_local: impl Fn(&NodeId) -> bool) -> Self {
        let mut nodes: BTreeMap<NodeId, NodeRouting> = BTreeMap::new();
        let mut routes: HashMap<(NodeId, DataId), Vec<Receiver>> = HashMap::new();
        let mut timers: BTreeMap<std::time::Duration, Vec<Receiver>> = BTreeMap::new();
        for node in &descriptor.nodes {
            let state = nodes.entry(node.id.clone()).or_default();
            state.open_outputs = node.outputs.iter().cloned().collect();
            state.remote = !is_local(&node.id);
            if state.remote {
                continue;
            }
            state.has_inputs = !node.inputs.is_empty();
            for (input_id, input) in &node.inputs {
                state
                    .queues
                    .insert(input_id.clone(), InputQueue::new(input.queue_size()));
                state.open_inputs.insert(input_id.clone());
                if let Some(timeout) = input.input_timeout() {
                    let deadline = deadlines::InputDeadline::new(timeout);
                    state.deadlines.insert(input_id.clone(), deadline);
                }
                let receiver = (node.id.clone(), input_id.clone());
                match input.resolve() {
                    Ok(InputSource::Node { node: from, output }) => {
                        routes.entry((from, output)).or_default().push(receiver)
                    }
                    Ok(InputSource::Timer(t)) => {
                        state.timer_inputs.insert(input_id.clone());
                        timers.entry(t.interval).or_default().push(receiver)
                    }
                    // The descriptor was validated before it got here.
                    Err(e) => tracing::warn!("ignoring input {input_id} of {}: {e}", node.id),
                }
            }
        }
        for ((from, output), receivers) in routes {
            // Inputs from undeclared nodes cannot pass validation; ignore them if they do.
            if let Some(state) = nodes.get_mut(&from) {
                state.routes.insert(output, receivers.into());
            }
        }
        Self {
            nodes,
            timers: timers.into_iter().map(|(t, r)| (t, r.into())).collect(),
            samples: HashMap::new(),
            seq: 0,
            daemon_freed: Vec::new(),
            remote_taken: Vec::new(),
            held_wakes: None,
            exit_when_nodes_finish: descriptor.exit_when_nodes_finish.unwrap_or(false),
            room_waiters: Vec::new(),
            lanes: lanes::Lanes::default(),
        }
    }

    /// Timer intervals the dataflow needs.
    pub fn timer_intervals(&self) -> Vec<std::time::Duration> {
        self.timers.keys().copied().collect()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A node asks for its next events.
    pub fn next_events(&mut self, node: &NodeId, waiter: Waiter) {
        let Some(state) = self.nodes.get_mut(node) else {
            let _ = waiter.send(DaemonReply::Events {
                events: Vec::new(),
                drop_counts: BTreeMap::new(),
            });
            return;
        };
        state.events_waiter = Some(waiter);
        self.wake(node);
    }

    /// From now on, pending `NextEvents` are answered only by [`Self::release_wakes`]: a batch of
    /// messages then reaches each receiver in one reply.
    pub fn hold_wakes(&mut self) {
        self.held_wakes.get_or_insert_with(Vec::new);
    }

    /// Answers the requests held since [`Self::hold_wakes`].
    pub fn release_wakes(&mut self) {
        for node in self.held_wakes.take().unwrap_or_default() {
            self.wake(&node);
        }
    }

    /// Answers a pending `NextEvents` of `node` if there is something to say.
    fn wake(&mut self, node: &NodeId) {
        if let Some(held) = &mut self.held_wakes {
            if !held.contains(node) {
                held.push(node.clone());
            }
            return;
        }
        let Some(state) = self.nodes.get_mut(node) else {
            return;
        };
        if state.events_waiter.is_none() {
            return;
        }
        let mut batch: Vec<Queued> = state.control.drain(..).collect();
        for q in state.queues.values_mut() {
            batch.extend(q.drain());
        }
        let ended = state.stop_delivered
            || (state.has_inputs && state.open_inputs.is_empty())
            || state.exited;
        if batch.is_empty() && !ended {
            return;
        }
        batch.sort_by_key(|q| q.seq);
        let mut events = Vec::with_capacity(batch.len());
        for q in batch {
            match &q.event {
                NodeEvent::Input { data, .. } => {
                    state.received += 1;
                    if let DataRef::Shared(s) = data {
                        *state.held.entry(s.token).or_default() += 1;
                    }
                }
                NodeEvent::Stop => state.stop_delivered = true,
                _ => {}
            }
            events.push(q.event);
        }
        // The counts are cumulative: send them again only when one of them grew.
        let dropped: u64 = state.queues.values().map(InputQueue::dropped).sum();
        let drop_counts = if dropped == state.drops_reported {
            BTreeMap::new()
        } else {
            state.drops_reported = dropped;
            state
                .queues
                .iter()
                .filter(|(_, q)| q.dropped() > 0)
                .map(|(id, q)| (id.clone(), q.dropped()))
                .collect()
        };
        if let Some(w) = state.events_waiter.take() {
            let _ = w.send(DaemonReply::Events {
                events,
                drop_counts,
            });
        }
        self.answer_room_waiters();
    }

    /// A node will not send on `outputs` again: close the corresponding inputs downstream.
    pub fn close_outputs(&mut self, node: &NodeId, outputs: &[DataId]) -> Vec<DataId> {
        let Some(state) = self.nodes.get_mut(node) else {
            return Vec::new();
        };
        let closed: Vec<DataId> = outputs
            .iter()
            .filter(|o| state.open_outputs.remove(*o))
            .cloned()
            .collect();
        let receivers: Vec<Receivers> = closed
            .iter()
            .filter_map(|output| state.routes.get(output).cloned())
            .collect();
        for (receiver, input) in receivers.iter().flat_map(|r| r.iter()) {
            self.push_control(receiver, Some(input), |id| NodeEvent::InputClosed {
                id: id.clone(),
            });
        }
        closed
    }

    fn push_control(
        &mut self,
        node: &NodeId,
        closing: Option<&DataId>,
        make: impl Fn(&DataId) -> NodeEvent,
    ) {
        let seq = self.next_seq();
        let Some(state) = self.nodes.get_mut(node) else {
            return;
        };
        if state.exited {
            return;
        }
        let event = match closing {
            Some(input) => {
                if !state.open_inputs.remove(input) {
                    return;
                }
                make(input)
            }
            None => make(&DataId::from("")),
        };
        state.control.push_back(Queued { seq, event });
        if closing.is_some() {
            self.close_clock_inputs(node);
        }
        self.wake(node);
    }

    /// Queues a Stop event for every node that has not exited. Returns how many were told.
    pub fn stop_all(&mut self) -> usize {
        let ids: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, s)| !s.exited && !s.stop_queued && !s.remote)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            if let Some(s) = self.nodes.get_mut(id) {
                s.stop_queued = true;
            }
            self.push_control(id, None, |_| NodeEvent::Stop);
        }
        ids.len()
    }

    /// Queues `Stop` for one local node (see `Dataflow::stop_nodes`).
    pub fn stop_one(&mut self, node: &NodeId) {
        let Some(state) = self.nodes.get_mut(node) else {
            return;
        };
        if state.exited || state.stop_queued || state.remote {
            return;
        }
        state.stop_queued = true;
        self.push_control(node, None, |_| NodeEvent::Stop);
    }

    /// The node process exited (or a restarted instance is replacing it): close its outputs,
    /// release everything it held and end its pending requests.
    pub fn node_exited(&mut self, node: &NodeId) {
        // What it (or another sender) reported in a lane comes before its end.
        let outputs: Vec<DataId> = match self.nodes.get(node) {
            Some(s) => s.open_outputs.iter().cloned().collect(),
            None => return,
        };
        self.close_outputs(node, &outputs);
        let Some(state) = self.nodes.get_mut(node) else {
            return;
        };
        state.exited = true;
        let mut queued: Vec<Queued> = state.control.drain(..).collect();
        for q in state.queues.values_mut() {
            queued.extend(q.drain());
        }
        let held = state.end_instance();
        for q in queued {
            self.release_event(q.event);
        }
        self.release_held(held);
        self.end_lane_instance(node, true);
        self.answer_room_waiters();
        // Samples this node owns that are still in flight are unlinked by their last release
        // (`release_ref` checks `exited`).
    }

    /// The node's process exited and its restart policy starts a new one: release what the old
    /// instance held and end its pending requests, but keep its queued inputs (for the new
    /// instance) and its outputs open (its receivers wait for it).
    pub fn node_restarting(&mut self, node: &NodeId) {
        let Some(state) = self.nodes.get_mut(node) else {
            return;
        };
        let held = state.end_instance();
        state.freed.clear();
        state.stop_delivered = false;
        for sample in self.samples.values_mut() {
            if &sample.owner == node {
                sample.orphaned = true;
            }
        }
        self.release_held(held);
        self.end_lane_instance(node, false);
    }

    /// Tells every local receiver of `node`'s outputs about it (`make` gets the receiver's inputs
    /// fed by `node`).
    pub fn notify_downstream(&mut self, node: &NodeId, make: impl Fn(Vec<DataId>) -> NodeEvent) {
        let mut per_receiver: BTreeMap<NodeId, Vec<DataId>> = BTreeMap::new();
        let routes = self.nodes.get(node).map(|s| s.routes.values());
        for (receiver, input) in routes.into_iter().flatten().flat_map(|r| r.iter()) {
            per_receiver
                .entry(receiver.clone())
                .or_default()
                .push(input.clone());
        }
        for (receiver, mut inputs) in per_receiver {
            inputs.sort();
            let event = make(inputs);
            self.push_control(&receiver, None, |_| event.clone());
        }
    }

    /// Whether `node` may still send on `output`.
    pub fn is_output_open(&self, node: &NodeId, output: &DataId) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|s| s.open_outputs.contains(output))
    }

    /// Whether `node` has a `NextEvents` request waiting for events (it is blocked in `recv`).
    pub fn is_waiting_for_events(&self, node: &NodeId) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|s| s.events_waiter.is_some())
    }
}

mod counters;
mod cut;
pub use counters::NodeCounters;
mod deadlines;
mod deliver;
mod finish;
mod lanes;
pub(crate) use lanes::{lanes_enabled, publisher_of};
mod locality;
mod room;
mod samples;
#[cfg(test)]
mod tests;
