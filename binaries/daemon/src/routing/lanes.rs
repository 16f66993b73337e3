//! Lanes (`adora_shm::Lane`): the shared-memory rings of local edges, on which a node's message
//! goes straight to its local receivers without the daemon.
//!
//! The daemon creates them when the dataflow starts (one per local output → input edge that can
//! take one: no `input_timeout`, a `queue_size` a lane holds), one bell per receiving node, and
//! names them in the nodes' configurations. An input whose sender runs on another machine gets
//! a lane too, written by the subscription's Zenoh callback instead of a node
//! ([`Routing::remote_feed`], `remote/feed.rs`). From then on it only:
//! - **closes** lanes whose messages must pass through it again (a move, `AwaitRoom`, a receiver
//!   gone for good); a sender that meets a closed lane sends that output through the daemon from
//!   then on, so the order of every input is kept;
//! - **asks for copies** while a tap watches an output ([`Routing::watch_lanes`]): its lanes stay
//!   open and its sender also sends each message to the daemon, as for receivers on other
//!   machines, so recording does not slow the local receivers down;
//! - **tells a sender where a receiver's instance stopped** when it ends: a local sender's
//!   shared samples are held by its lanes through holder words in the samples themselves
//!   (`adora_shm::release_lane`), which the receivers clear without the daemon; what an ended
//!   instance took and never dropped, the sender releases itself (`LanesReleased`). The feeds
//!   of remote outputs hold the samples of the daemon's own pool the same way (the daemon is
//!   their sender): what an ended instance took from a feed's lane is released in that pool
//!   ([`Routing::take_remote_taken`]);
//! - **reads** the lanes' counters for the node figures; each sender's taps lane (copies of its
//!   inline messages for a tap) is read by its control connection (`node_conn`), which makes
//!   the copies.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc, Mutex},
};

use adora_core::{
    descriptor::{InputPoll, InputSource},
    DataId, Descriptor, NodeId,
};
use adora_message::{InputLaneRef, LaneRef, NodeLanes, OutputLanes};
use adora_shm::{Bell, Lane, LANE_MAX_SLOTS};

use super::{NodeCounters, Routing};
use crate::remote::{
    feed::{FeedLane, LaneFeed, RemotePool},
    PUBLISH_QUEUE,
};

mod publish;
pub(crate) use publish::publisher_of;
use publish::{is_publisher, publish_lanes_enabled};

/// The lanes of one dataflow on this daemon.
#[derive(Default)]
pub(crate) struct Lanes {
    /// (receiver, input) → its lane.
    inputs: BTreeMap<(NodeId, DataId), InputLane>,
    /// Receiving node → its bell, kept open for reading by the daemon so that ringing it never
    /// meets a FIFO without reader (`SIGPIPE` in the sender); open for writing too, so the
    /// feeds of remote outputs ring it through the same descriptor.
    bells: BTreeMap<NodeId, (PathBuf, Arc<Bell>)>,
    /// (sender, output) → whether receivers without a lane (on other machines, or local ones
    /// with an `input_timeout`, a `queue_size` above a lane's, a lane that could not be
    /// created) need its messages from the daemon too.
    daemon_copy: BTreeMap<(NodeId, DataId), bool>,
    /// Sender → its taps lane (`NodeLanes::taps`), read by its control connection.
    taps: BTreeMap<NodeId, Arc<Lane>>,
    /// (sender on another machine, local receiver) → the number of the last entry the
    /// sender's feeds pushed into the receiver's lanes (`remote/feed.rs`).
    remote_seqs: BTreeMap<(NodeId, NodeId), Arc<Mutex<u64>>>,
    /// A publish lane's key in `inputs` (see [`publisher_of`]) → set while its publisher takes
    /// entries from it and publishes them (`remote/publish.rs`).
    publishing: BTreeMap<(NodeId, DataId), Arc<AtomicBool>>,
}

/// Entries of a taps lane: the copies a sender may write between two reads (every millisecond
/// while tapped; beyond, it sends them on its socket). A written slot keeps its page of shared
/// memory, so this bounds what a tapped sender costs: 8 MiB.
const TAPS_CAPACITY: usize = 1024;

struct InputLane {
    lane: Arc<Lane>,
    sender: NodeId,
    /// The sender runs on another machine: the subscription's feed writes into the lane.
    remote: bool,
    output: DataId,
    /// The input says `poll: spin`.
    spin: bool,
}

/// Whether this daemon gives local edges lanes (`ADORA_LOCAL_LANES=0` keeps every message on
/// the daemon's path, to compare).
pub(crate) fn lanes_enabled() -> bool {
    std::env::var("ADORA_LOCAL_LANES").map_or(true, |v| v != "0")
}

/// Whether inputs from nodes on other machines get lanes too (`ADORA_REMOTE_LANES=0` keeps
/// them on the daemon's path, to compare).
fn remote_lanes_enabled() -> bool {
    std::env::var("ADORA_REMOTE_LANES").map_or(true, |v| v != "0")
}

impl Routing {
    /// Creates the lanes of the local edges of `descriptor` whose sender and receiver run here;
    /// those of outputs `tapped` says are watched want copies. Segments are named
    /// `{prefix}~lane-N` and bells `{prefix}~bell-N` (removed with the dataflow's shared
    /// memory). An edge whose lane cannot be created stays on the daemon's path (with a warning).
    pub fn open_lanes(
        &mut self,
        descriptor: &Descriptor,
        prefix: &str,
        tapped: impl Fn(&NodeId, &DataId) -> bool,
    ) {
        let mut lanes = Lanes::default();
        let remote_lanes = remote_lanes_enabled();
        let mut published = std::collections::BTreeSet::new();
        for node in &descriptor.nodes {
            for (input_id, input) in &node.inputs {
                let Ok(InputSource::Node { node: from, output }) = input.resolve() else {
                    continue;
                };
                let local = |n: &NodeId| self.nodes.get(n).is_some_and(|s| !s.remote);
                let remote = self.nodes.get(&from).is_some_and(|s| s.remote);
                // A lane from a local sender, or one the feed of a remote one writes into.
                let laned = local(&from) || (remote && remote_lanes);
                if !laned {
                    continue;
                }
                if !local(&node.id) {
                    if !remote {
                        // Read on another machine: the output gets a publish lane.
                        published.insert((from, output));
                    }
                    continue;
                }
                let key = (from.clone(), output.clone());
                let fits = input.input_timeout().is_none() && input.queue_size() <= LANE_MAX_SLOTS;
                let spin = input.poll() == InputPoll::Spin;
                let edge = (from, output, spin, remote);
                let created = fits
                    && lanes
                        .create(prefix, &node.id, input_id, input.queue_size(), edge)
                        .inspect_err(|e| {
                            tracing::warn!(
                                "input `{input_id}` of `{}` goes through the daemon: cannot \
                                 create its lane: {e}",
                                node.id
                            )
                        })
                        .is_ok();
                // A receiver without a lane gets the output's messages from the daemon, so
                // every message goes there too (the lanes' receivers named as served).
                *lanes.daemon_copy.entry(key).or_default() |= !created;
            }
        }
        // As many messages wait for a slow link as on the daemon's path (the oldest is dropped
        // when the lane is full, counted by the publisher).
        for (sender, output) in published {
            let publisher = publisher_of(&sender, &output);
            let edge = (sender.clone(), output.clone(), false, false);
            let created = publish_lanes_enabled()
                && lanes
                    .create(prefix, &publisher, &output, PUBLISH_QUEUE, edge)
                    .inspect_err(|e| {
                        tracing::warn!("`{sender}/{output}` is published by the daemon: {e}")
                    })
                    .is_ok();
            if created {
                lanes.publishing.insert((publisher, output), Arc::default());
            } else {
                lanes.daemon_copy.insert((sender, output), true);
            }
        }
        lanes.open_sender_lanes(prefix);
        self.lanes = lanes;
        self.watch_lanes(tapped);
    }

    /// The lanes a subscription to `sender/output` (a node on another machine) feeds, with the
    /// receivers' bells (payloads of 4 KiB and more are copied into `pool`); `None` when it has
    /// none or one is closed (a move began: everything goes through the daemon).
    pub fn remote_feed(
        &self,
        sender: &NodeId,
        output: &DataId,
        pool: RemotePool,
    ) -> Option<LaneFeed> {
        let lanes = &self.lanes;
        let holders = self.feed_holders();
        let mut fed = Vec::new();
        for (key @ (receiver, input), l) in &lanes.inputs {
            if !l.remote || &l.sender != sender || &l.output != output {
                continue;
            }
            if l.lane.is_closed() {
                return None;
            }
            let bell = lanes.bells.get(receiver).map(|(_, bell)| bell.clone());
            let seq = lanes.remote_seqs.get(&(sender.clone(), receiver.clone()))?;
            // Beyond the holder bits of its samples: the output goes through the daemon.
            let holder = *holders.get(key)?;
            fed.push(FeedLane {
                receiver: receiver.clone(),
                input: input.clone(),
                lane: l.lane.clone(),
                bell,
                seq: seq.clone(),
                holder,
            });
        }
        let daemon_too = lanes
            .daemon_copy
            .get(&(sender.clone(), output.clone()))
            .copied()
            .unwrap_or(false);
        (!fed.is_empty()).then(|| LaneFeed::new(fed, daemon_too, pool))
    }

    /// The senders' taps lanes, for their control connections (`Taps::set_lanes`).
    pub fn taps_lanes(&self) -> BTreeMap<NodeId, Arc<Lane>> {
        self.lanes.taps.clone()
    }

    /// The lanes to put in `node`'s configuration.
    pub fn node_lanes(&self, node: &NodeId) -> NodeLanes {
        let lanes = &self.lanes;
        let mut config = NodeLanes::default();
        let slots = self.holder_slots();
        let fed = self.feed_holders();
        for (key @ (receiver, input), l) in &lanes.inputs {
            let bit = match l.remote {
                false => slots.get(key).map(|(_, bit)| *bit),
                true => fed.get(key).map(|(bit, _)| *bit),
            };
            if receiver == node {
                let lane = InputLaneRef {
                    lane: l.lane.os_id().to_owned(),
                    sender: l.sender.clone(),
                    spin: l.spin,
                    bit,
                };
                config.inputs.insert(input.clone(), lane);
            }
            if &l.sender == node {
                let out = config
                    .outputs
                    .entry(l.output.clone())
                    .or_insert_with(|| OutputLanes {
                        lanes: Vec::new(),
                        daemon_copy: lanes
                            .daemon_copy
                            .get(&(node.clone(), l.output.clone()))
                            .copied()
                            .unwrap_or(false),
                    });
                let Some((bell, _)) = lanes.bells.get(receiver) else {
                    continue;
                };
                out.lanes.push(LaneRef {
                    receiver: receiver.clone(),
                    input: input.clone(),
                    lane: l.lane.os_id().to_owned(),
                    bell: bell.clone(),
                });
            }
        }
        if !config.inputs.is_empty() {
            config.bell = lanes.bells.get(node).map(|(path, _)| path.clone());
        }
        if !config.outputs.is_empty() {
            config.taps = lanes.taps.get(node).map(|l| l.os_id().to_owned());
        }
        config
    }

    /// Where each lane of a local sender sits in that sender's configuration: (receiver, input)
    /// → (its output's place in the sender's `NodeLanes::outputs`, its place in that output's
    /// lanes, which is its holder bit). [`Self::node_lanes`] lists them in this order.
    fn holder_slots(&self) -> HashMap<(NodeId, DataId), (u32, u32)> {
        let lanes = &self.lanes;
        let mut outputs: BTreeMap<&NodeId, std::collections::BTreeSet<&DataId>> = BTreeMap::new();
        for l in lanes.inputs.values() {
            outputs.entry(&l.sender).or_default().insert(&l.output);
        }
        let mut listed: HashMap<(&NodeId, &DataId), u32> = HashMap::new();
        let mut slots = HashMap::new();
        for ((receiver, input), l) in &lanes.inputs {
            if l.remote || !lanes.bells.contains_key(receiver) {
                continue;
            }
            let bit = listed.entry((&l.sender, &l.output)).or_default();
            let output = outputs[&l.sender].iter().position(|o| *o == &l.output);
            if let Some(output) = output.and_then(|o| u32::try_from(o).ok()) {
                slots.insert((receiver.clone(), input.clone()), (output, *bit));
            }
            *bit += 1;
        }
        slots
    }

    /// The holder bit and number of each lane a feed of a remote output writes into: (receiver,
    /// input) → (its place in the lanes of that output, which is its bit in the feed's samples;
    /// its place among all lanes, its number in the daemon's pool). [`Self::remote_feed`] lists
    /// them in this order; an output with more than [`adora_shm::MAX_LANE_HOLDERS`] has none
    /// (it goes through the daemon, as a local sender's would).
    fn feed_holders(&self) -> HashMap<(NodeId, DataId), (u32, u32)> {
        let inputs = &self.lanes.inputs;
        let mut listed: HashMap<(&NodeId, &DataId), u32> = HashMap::new();
        let mut holders = HashMap::new();
        for (number, (key, l)) in (0u32..).zip(inputs) {
            if l.remote {
                let bit = listed.entry((&l.sender, &l.output)).or_default();
                holders.insert(key.clone(), (*bit, number));
                *bit += 1;
            }
        }
        holders.retain(|key, _| {
            let l = &inputs[key];
            listed[&(&l.sender, &l.output)] as usize <= adora_shm::MAX_LANE_HOLDERS
        });
        holders
    }

    /// The lanes `node` reads from local senders: (sender, its output's number, the lane's
    /// holder bit, the lane) — see [`Self::holder_slots`].
    pub fn lanes_read_by(&self, node: &NodeId) -> Vec<(NodeId, u32, u32, Arc<Lane>)> {
        let slots = self.holder_slots();
        (self.lanes.inputs.iter())
            .filter(|((receiver, _), _)| receiver == node)
            .filter_map(|(key, l)| {
                let (output, bit) = slots.get(key)?;
                Some((l.sender.clone(), *output, *bit, l.lane.clone()))
            })
            .collect()
    }

    /// The lanes of local senders whose receiver is gone for good (no instance of it will take
    /// from or drop anything of them): (sender, its output's number, the lane's holder bit).
    pub fn lanes_gone(&self) -> std::collections::HashSet<(NodeId, u32, u32)> {
        let slots = self.holder_slots();
        (self.lanes.inputs.iter())
            .filter(|((receiver, _), _)| !is_publisher(receiver))
            .filter(|((receiver, _), _)| self.nodes.get(receiver).is_none_or(|s| s.exited))
            .filter_map(|(key, l)| {
                let (output, bit) = slots.get(key)?;
                Some((l.sender.clone(), *output, *bit))
            })
            .collect()
    }

    /// Closes the lanes of the outputs `which` selects: their messages pass through the daemon
    /// from the sender's next send on.
    pub fn close_lanes(&mut self, which: impl Fn(&NodeId, &DataId) -> bool) {
        for l in self.lanes.inputs.values() {
            if which(&l.sender, &l.output) && l.lane.close() {
                tracing::debug!("lane of {}/{} closed", l.sender, l.output);
            }
        }
    }

    /// Asks the senders of the outputs `watched` selects for a copy of every message they push
    /// into lanes (a tap wants them), and the others no longer. Called whenever taps change.
    pub fn watch_lanes(&mut self, watched: impl Fn(&NodeId, &DataId) -> bool) {
        for l in self.lanes.inputs.values() {
            l.lane.want_copy(watched(&l.sender, &l.output));
        }
    }

    /// What `node` took from its lanes so far, and whether entries wait in them now.
    pub fn lane_progress(&self, node: &NodeId) -> (u64, bool) {
        let mut taken = 0;
        let mut waiting = false;
        for ((receiver, _), l) in &self.lanes.inputs {
            if receiver == node {
                taken += l.lane.counters().taken;
                waiting |= l.lane.has_entries();
            }
        }
        (taken, waiting)
    }

    /// An instance of `node` ended: the senders of its lanes release the samples it took and
    /// did not drop, told where it stopped taking (a local sender by `LanesReleased`, the
    /// daemon's pool of remote copies by [`Self::take_remote_taken`]). `for_good`: no instance
    /// follows, so its lanes close and what they queued is released too; otherwise the next
    /// instance finds the queued entries.
    pub(super) fn end_lane_instance(&mut self, node: &NodeId, for_good: bool) {
        let mut released: Vec<(NodeId, String, u64)> = Vec::new();
        let fed = self.feed_holders();
        for (key, l) in &self.lanes.inputs {
            if &key.0 != node {
                continue;
            }
            let before = if for_good {
                l.lane.close();
                l.lane.discard_all().map(|_| u64::MAX)
            } else {
                l.lane.queued_from()
            };
            let Some(before) = before else {
                // Releasing without knowing what is queued could hand a sample still in the
                // lane back to its sender: keep them (removed when the dataflow ends).
                tracing::warn!(
                    "a lane of `{node}` stays locked by its sender: the samples it took are \
                     released when the dataflow ends"
                );
                continue;
            };
            match (l.remote, fed.get(key)) {
                (false, _) => released.push((l.sender.clone(), l.lane.os_id().to_owned(), before)),
                (true, Some(&(_, number))) => self.remote_taken.push((number, before)),
                (true, None) => {} // no feed writes into it: nothing of the pool is in it
            }
        }
        for (sender, lane, before) in released {
            if let Some(state) = self.nodes.get_mut(&sender).filter(|s| !s.exited) {
                state.released_lanes.push((lane, before));
                state.push_freed();
            }
        }
    }

    /// Where the ended instances of receivers stopped taking from the lanes fed by remote
    /// outputs: (lane number, position), for `RemotePool::release_taken`.
    pub fn take_remote_taken(&mut self) -> Vec<(u32, u64)> {
        std::mem::take(&mut self.remote_taken)
    }

    /// Adds what the lanes counted to the figures routing counted itself.
    pub(super) fn add_lane_counters(&self, counters: &mut BTreeMap<NodeId, NodeCounters>) {
        let mut sent: BTreeMap<(&NodeId, &DataId), u64> = BTreeMap::new();
        for ((receiver, input), l) in &self.lanes.inputs {
            let c = l.lane.counters();
            if !l.remote {
                let max = sent.entry((&l.sender, &l.output)).or_default();
                *max = (*max).max(c.pushed);
            }
            if let Some(r) = counters.get_mut(receiver) {
                r.received += c.taken;
                if c.dropped > 0 {
                    *r.dropped.entry(input.clone()).or_default() += c.dropped;
                }
            }
        }
        for ((sender, _), n) in sent {
            if let Some(s) = counters.get_mut(sender) {
                s.sent += n;
            }
        }
    }
}

impl Lanes {
    /// A taps lane for every node that sends on lanes (without it, it sends copies for taps on
    /// its control connection).
    fn open_sender_lanes(&mut self, prefix: &str) {
        let senders: std::collections::BTreeSet<NodeId> = self
            .inputs
            .values()
            .filter(|l| !l.remote)
            .map(|l| l.sender.clone())
            .collect();
        for (i, sender) in senders.into_iter().enumerate() {
            match Lane::create(&format!("{prefix}~taps-{i}"), TAPS_CAPACITY) {
                Ok(lane) => {
                    self.taps.insert(sender, Arc::new(lane));
                }
                Err(e) => tracing::warn!("`{sender}` copies for taps on its socket: {e}"),
            }
        }
    }

    fn create(
        &mut self,
        prefix: &str,
        receiver: &NodeId,
        input: &DataId,
        capacity: usize,
        (sender, output, spin, remote): (NodeId, DataId, bool, bool),
    ) -> Result<(), String> {
        if !self.bells.contains_key(receiver) {
            let path = Bell::path(&format!("{prefix}~bell-{}", self.bells.len()));
            Bell::create(&path).map_err(|e| format!("bell {}: {e}", path.display()))?;
            let bell = Bell::listen(&path).map_err(|e| format!("bell {}: {e}", path.display()))?;
            self.bells.insert(receiver.clone(), (path, Arc::new(bell)));
        }
        let name = format!("{prefix}~lane-{}", self.inputs.len());
        let lane = Lane::create(&name, capacity).map_err(|e| e.to_string())?;
        if remote {
            self.remote_seqs
                .entry((sender.clone(), receiver.clone()))
                .or_default();
        }
        self.inputs.insert(
            (receiver.clone(), input.clone()),
            InputLane {
                lane: Arc::new(lane),
                sender,
                remote,
                output,
                spin,
            },
        );
        Ok(())
    }
}
