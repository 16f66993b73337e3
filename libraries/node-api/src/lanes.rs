//! The node's side of its lanes (`adora_shm::Lane`): local messages go from the sender's
//! [`OutputLanes`] straight into the receiver's [`InputLanes`], without the daemon.
//!
//! - A sender pushes each message into the lane of every local receiver of the output and rings
//!   a receiver's bell only when that receiver sleeps. It tells the daemon only what the daemon
//!   must know: a shared payload (the daemon counts who holds it), receivers the lanes did not
//!   serve (another machine, a closed lane), and entries a full lane dropped that held a sample.
//!   While a tap watches an output, the daemon wants a copy of each message too (a flag in the
//!   output's lanes): the sender writes it into its taps lane, which the daemon reads every
//!   millisecond, or sends it on its control socket (a shared sample, a full taps lane). See
//!   [`TapsLane`] for how the daemon keeps the two in order.
//! - Once a lane of an output is closed (by the daemon: a move) or an entry does not fit,
//!   the output goes through the daemon for good; the receiver takes what its lane queued
//!   before whatever the daemon delivers later, so the order of an input never changes.
//! - A receiver takes its lanes' entries before every batch the daemon answers with, and sleeps
//!   on its bell and its events connection at once.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use adora_core::{DataId, NodeId};
use adora_message::{
    daemon_to_node::NodeEvent, node_to_daemon::NodeRequest, DataRef, LaneEntry, Metadata,
    NodeLanes, TapCopy, Timestamp,
};
use adora_shm::{Batch, Bell, Lane, Pushed, SamplePool, SampleToken};

use crate::{
    drops::{ControlChannel, DropReports},
    error::NodeError,
    node::lock_pool,
};

/// The lanes of one output.
struct Output {
    /// Its place in the configuration's outputs (written into its samples for the daemon).
    number: u32,
    lanes: Vec<OutputLane>,
    daemon_copy: bool,
    /// A lane was closed or an entry did not fit: everything goes through the daemon now.
    closed: bool,
}

struct OutputLane {
    receiver: NodeId,
    input: DataId,
    lane: Lane,
    bell: Arc<Bell>,
    /// Index of the receiving node in [`OutputLanes::seqs`].
    receiver_index: usize,
    /// The node's number for this lane (see [`OutputLanes::numbers`]).
    number: u32,
}

impl Output {
    /// The (receiver, input) of each lane whose bit is set in `bits`.
    fn served(&self, bits: u64) -> Vec<(NodeId, DataId)> {
        (self.lanes.iter().enumerate())
            .filter(|(i, _)| bits & 1u64.checked_shl(*i as u32).unwrap_or(0) != 0)
            .map(|(_, l)| (l.receiver.clone(), l.input.clone()))
            .collect()
    }
}

/// The lanes of a node's outputs.
#[derive(Default)]
pub(crate) struct OutputLanes {
    outputs: BTreeMap<DataId, Output>,
    /// Per receiving node: the number of the last entry pushed to any of its lanes.
    seqs: Vec<u64>,
    /// Lane name → the node's number for it, for the daemon's `LanesReleased`.
    numbers: HashMap<String, u32>,
    /// Where copies for a tap go (see `NodeLanes::taps`); `None`: the control connection.
    taps: Option<TapsLane>,
    /// The encoded entry being sent (its memory kept from one message to the next).
    encoded: Vec<u8>,
}

/// The node's taps lane: the copies of its inline lane messages for a tap, numbered from 1.
///
/// The daemon reads the lane every millisecond, and reads the node's socket whenever it has
/// something: a copy written into the lane after a tapped message went on the socket could be
/// read first. So a tapped message sent on the socket is announced by a *mark* in the lane (an
/// empty entry), which the daemon does not read past before it has read the message, and the
/// message says how many entries precede it (`taps_before`). A mark that does not fit (the lane
/// is full) keeps every copy on the socket until one fits.
struct TapsLane {
    lane: Lane,
    /// The number of the last entry written.
    pushed: u64,
    /// A tapped message went on the socket without a mark: copies go there too until a mark
    /// fits.
    unmarked: bool,
}

impl TapsLane {
    /// Writes a copy of `entry` (sent on `output`) into the lane; `false`: it goes on the socket
    /// (after [`Self::mark`]).
    fn copy(&mut self, output: &DataId, entry: &[u8]) -> bool {
        if self.unmarked {
            return false;
        }
        let seq = self.pushed + 1;
        let pushed = TapCopy::encode(output, entry).is_ok_and(|c| self.lane.try_push(&c, seq));
        if pushed {
            self.pushed = seq;
        }
        pushed
    }

    /// A tapped message is about to go on the socket: marks its place in the lane.
    fn mark(&mut self) {
        let seq = self.pushed + 1;
        self.unmarked = !self.lane.try_push(&[], seq);
        if !self.unmarked {
            self.pushed = seq;
        }
    }
}

impl OutputLanes {
    /// Opens the lanes named in the node's configuration. An output whose lanes cannot be
    /// opened goes through the daemon (which routes to every receiver it has).
    pub(crate) fn open(config: &NodeLanes) -> Self {
        let mut bells: BTreeMap<PathBuf, Arc<Bell>> = BTreeMap::new();
        let mut receivers: Vec<&NodeId> = Vec::new();
        let mut outputs = BTreeMap::new();
        let mut numbers = HashMap::new();
        for (number, (output, lanes)) in (0u32..).zip(&config.outputs) {
            if lanes.lanes.len() > adora_shm::MAX_LANE_HOLDERS {
                continue; // the daemon path: `served` is a bit set
            }
            let opened: Result<Vec<OutputLane>, String> = lanes
                .lanes
                .iter()
                .map(|l| {
                    let bell = match bells.get(&l.bell) {
                        Some(b) => b.clone(),
                        None => {
                            let b = Arc::new(ringer(&l.bell)?);
                            bells.insert(l.bell.clone(), b.clone());
                            b
                        }
                    };
                    let lane = Lane::open(&l.lane).map_err(|e| e.to_string())?;
                    let receiver_index = match receivers.iter().position(|r| **r == l.receiver) {
                        Some(i) => i,
                        None => {
                            receivers.push(&l.receiver);
                            receivers.len() - 1
                        }
                    };
                    let number = numbers.len() as u32;
                    numbers.insert(l.lane.clone(), number);
                    Ok(OutputLane {
                        receiver: l.receiver.clone(),
                        input: l.input.clone(),
                        lane,
                        bell,
                        receiver_index,
                        number,
                    })
                })
                .collect();
            match opened {
                Ok(lanes) => {
                    let direct = Output {
                        number,
                        lanes,
                        daemon_copy: lanes_daemon_copy(config, output),
                        closed: false,
                    };
                    outputs.insert(output.clone(), direct);
                }
                Err(e) => tracing::warn!("output `{output}` goes through the daemon: {e}"),
            }
        }
        let open = |name: &Option<String>, what: &str| {
            name.as_ref().and_then(|name| match Lane::open(name) {
                Ok(lane) => Some(lane),
                Err(e) => {
                    tracing::warn!("{what} on the control connection: {e}");
                    None
                }
            })
        };
        Self {
            outputs,
            seqs: vec![0; receivers.len()],
            numbers,
            taps: open(&config.taps, "sending copies for taps").map(|lane| TapsLane {
                lane,
                pushed: 0,
                unmarked: false,
            }),
            encoded: Vec::new(),
        }
    }

    /// Lane name → the node's number for it (`SamplePool::release_taken`).
    pub(crate) fn numbers(&self) -> HashMap<String, u32> {
        self.numbers.clone()
    }

    /// How many entries went into the taps lane so far (`taps_before` of a request).
    pub(crate) fn taps_before(&self) -> u64 {
        self.taps.as_ref().map_or(0, |t| t.pushed)
    }

    /// Sends a message on `output`'s lanes if it has open ones; `None` when it did (what the
    /// daemon had to know was told), else the message back to send through the daemon.
    pub(crate) fn send(
        &mut self,
        (control, pool): (&ControlChannel, &Mutex<SamplePool>),
        output: &DataId,
        metadata: Metadata,
        data: DataRef,
    ) -> Result<Option<(Metadata, DataRef)>, NodeError> {
        let Some(out) = self.outputs.get_mut(output).filter(|o| !o.closed) else {
            return Ok(Some((metadata, data)));
        };
        if out.lanes.iter().any(|l| l.lane.is_closed()) {
            out.closed = true;
            return Ok(Some((metadata, data)));
        }
        let token = match &data {
            DataRef::Shared(s) => Some(s.token),
            DataRef::Inline(_) => None,
        };
        let entry = LaneEntry { metadata, data };
        let bytes = &mut self.encoded;
        entry
            .encode_into(bytes)
            .map_err(|e| NodeError::Protocol(format!("cannot encode a message: {e}")))?;
        let LaneEntry { metadata, data } = entry;
        // A shared sample is held by each lane that takes it (a bit in the sample, set before the
        // push) until its receiver drops it: nobody tells the daemon.
        let mut pool = token.map(|_| lock_pool(pool));
        if let (Some(pool), Some(t)) = (pool.as_mut(), token) {
            pool.for_output(SampleToken(t), out.number);
        }
        let mut served = 0u64; // a bit per lane that took it (beyond 64, the daemon path)
        let mut all_served = true;
        for (i, l) in out.lanes.iter().enumerate() {
            let bit = i as u32;
            if let (Some(pool), Some(t)) = (pool.as_mut(), token) {
                pool.hold_in_lane(SampleToken(t), bit);
            }
            // Numbered only once taken: a gap would hold the receiver's next entry back.
            let seq = self.seqs[l.receiver_index] + 1;
            match l.lane.push(bytes, token, seq) {
                Pushed::Queued { evicted, wake, at } => {
                    self.seqs[l.receiver_index] = seq;
                    served |= 1u64.checked_shl(bit).unwrap_or(0);
                    if let (Some(pool), Some(t)) = (pool.as_mut(), token) {
                        pool.pushed_to_lane(SampleToken(t), (l.number, bit), at);
                    }
                    if let (Some(pool), Some(Some(old))) = (pool.as_mut(), evicted) {
                        pool.release_lane(SampleToken(old), bit);
                    }
                    if wake {
                        if let Err(e) = l.bell.ring() {
                            tracing::warn!("{e}");
                        }
                    }
                }
                Pushed::Closed | Pushed::TooLarge => {
                    if let (Some(pool), Some(t)) = (pool.as_mut(), token) {
                        pool.release_lane(SampleToken(t), bit);
                    }
                    out.closed = true;
                    all_served = false;
                }
            }
        }
        let tapped = tap_on_socket(&mut self.taps, out, (output, &data, bytes), all_served);
        let daemon_copy = out.daemon_copy || tapped;
        if !daemon_copy && all_served {
            // Every receiver has it; a shared sample is held by the lanes alone.
            if let (Some(pool), Some(t)) = (pool.as_mut(), token) {
                pool.lanes_only(SampleToken(t));
            }
            return Ok(None);
        }
        drop(pool);
        // The daemon routes it to the receivers the lanes did not serve, and holds a shared
        // sample until they are done (its release of the token tells the pool).
        control.send(&NodeRequest::SendOutputDirect {
            output: output.clone(),
            metadata,
            data,
            served: out.served(served),
            taps_before: self.taps.as_ref().map_or(0, |t| t.pushed),
        })?;
        Ok(None)
    }
}

/// Whether a tap wants a copy of a message pushed into `out`'s lanes on the control socket. A
/// tap of the output (a recorder, `topic echo`) wants copies while it lasts: of an inline
/// message that needs nothing else of the daemon (`all_served`, no receiver elsewhere) through
/// the taps lane, of any other after a mark in it.
fn tap_on_socket(
    taps: &mut Option<TapsLane>,
    out: &Output,
    (output, data, entry): (&DataId, &DataRef, &[u8]),
    all_served: bool,
) -> bool {
    if !out.lanes.iter().any(|l| l.lane.copy_wanted()) {
        return false;
    }
    let copied = all_served
        && !out.daemon_copy
        && matches!(data, DataRef::Inline(_))
        && taps.as_mut().is_some_and(|t| t.copy(output, entry));
    if !copied {
        if let Some(taps) = taps {
            taps.mark();
        }
    }
    !copied
}

fn lanes_daemon_copy(config: &NodeLanes, output: &DataId) -> bool {
    config.outputs.get(output).is_some_and(|o| o.daemon_copy)
}

fn ringer(path: &Path) -> Result<Bell, String> {
    Bell::ringer(path).map_err(|e| format!("cannot open the bell {}: {e}", path.display()))
}

/// The lanes of a node's inputs and its bell.
#[derive(Default)]
pub(crate) struct InputLanes {
    lanes: Vec<InputLane>,
    /// Per sending node: the order of what it sent to this node.
    senders: Vec<SenderOrder>,
    bell: Option<Bell>,
    /// What the lane being read holds (its memory kept from one pass to the next).
    batch: Batch,
    /// Per sender: the entries taken in this pass (their memory kept too).
    fresh: Vec<Vec<Taken>>,
    /// An input says `poll: spin`.
    spin: bool,
}

struct InputLane {
    input: DataId,
    lane: Lane,
    /// Index in [`InputLanes::senders`].
    sender: usize,
    /// The holder bit of the lane in its samples (`InputLaneRef::bit`).
    bit: Option<u32>,
}

/// A sender numbers what it pushes to this node's lanes (all inputs together). Taking every lane
/// one after the other may see a later entry in one lane and miss an earlier one pushed
/// meanwhile to a lane already read: such an entry waits for the next pass, which sees the
/// earlier one unless a full lane dropped it.
#[derive(Default)]
struct SenderOrder {
    /// The number expected next (0: nothing taken yet).
    next: u64,
    /// Entries after a gap, from the previous pass.
    held: Vec<Taken>,
}

struct Taken {
    lane: usize,
    /// The entry, decoded (or why it could not be).
    entry: Result<LaneEntry, String>,
    /// Its shared sample (`adora_shm::Entry::token`).
    token: Option<u64>,
    /// Its sender's number.
    seq: u64,
    /// Held over from the previous pass: nothing earlier can still arrive.
    settled: bool,
}

impl InputLanes {
    /// Opens the lanes named in the node's configuration; what cannot be opened is reported as
    /// an error event (its messages would not arrive).
    pub(crate) fn open(config: &NodeLanes, errors: &mut Vec<NodeEvent>) -> Self {
        let mut lanes = Vec::new();
        let mut senders: Vec<&NodeId> = Vec::new();
        for (input, l) in &config.inputs {
            match Lane::open(&l.lane) {
                Ok(lane) => {
                    let sender = match senders.iter().position(|s| **s == l.sender) {
                        Some(i) => i,
                        None => {
                            senders.push(&l.sender);
                            senders.len() - 1
                        }
                    };
                    lanes.push(InputLane {
                        input: input.clone(),
                        lane,
                        sender,
                        bit: l.bit,
                    });
                }
                Err(e) => errors.push(NodeEvent::Error(format!(
                    "input `{input}`: cannot open its lane: {e}; its messages are lost"
                ))),
            }
        }
        let bell = match (&config.bell, lanes.is_empty()) {
            (Some(path), false) => match Bell::listen(path) {
                Ok(bell) => Some(bell),
                Err(e) => {
                    // Without a bell the node does not wake for lane messages while it sleeps
                    // on the daemon alone; it still finds them whenever it wakes.
                    errors.push(NodeEvent::Error(format!(
                        "cannot open the bell {}: {e}; local inputs arrive late",
                        path.display()
                    )));
                    None
                }
            },
            _ => None,
        };
        Self {
            senders: senders.iter().map(|_| SenderOrder::default()).collect(),
            spin: config.inputs.values().any(|l| l.spin) && !lanes.is_empty(),
            lanes,
            bell,
            batch: Batch::default(),
            fresh: Vec::new(),
        }
    }

    /// Whether the node has lanes to wait on.
    pub(crate) fn bell(&self) -> Option<&Bell> {
        self.bell.as_ref()
    }

    /// Moves the queued entries into `events`: per sender in the order it sent them, senders
    /// merged by timestamp. Returns how many. A shared sample the receiver releases by clearing
    /// its lane's holder bit gets that bit in `bits` (with its token); the sample of an entry
    /// that cannot be decoded is released at once if it came without a bit.
    pub(crate) fn take(
        &mut self,
        (events, bits): (&mut VecDeque<NodeEvent>, &mut VecDeque<(u64, u32)>),
        drops: &DropReports,
    ) -> usize {
        self.fresh.resize_with(self.senders.len(), Vec::new);
        for (i, l) in self.lanes.iter().enumerate() {
            self.batch.clear();
            if l.lane.take_into(&mut self.batch) == 0 {
                continue;
            }
            // Decoded here, not with the lane locked: its sender would wait meanwhile.
            let taken = self.batch.iter().map(|(bytes, token, seq)| Taken {
                lane: i,
                entry: LaneEntry::decode(bytes).map_err(|e| e.to_string()),
                token,
                seq,
                settled: false,
            });
            self.fresh[l.sender].extend(taken);
        }
        let start = events.len();
        for (order, fresh) in self.senders.iter_mut().zip(&mut self.fresh) {
            let mut all = std::mem::take(&mut order.held);
            all.iter_mut().for_each(|t| t.settled = true);
            all.append(fresh);
            if !all.is_sorted_by_key(|t| t.seq) {
                all.sort_by_key(|t| t.seq);
            }
            let mut in_order = true;
            for t in all.drain(..) {
                // `seq < next`: the sender restarted and numbers from 1 again.
                in_order &= order.next == 0 || t.seq <= order.next || t.settled;
                if !in_order {
                    order.held.push(t);
                    continue;
                }
                order.next = t.seq + 1;
                events.push_back(event(&self.lanes[t.lane], t, drops, bits));
            }
            if order.held.is_empty() {
                order.held = all; // empty: its memory serves the next pass
            }
        }
        // Stable: events of one sender keep their order (their timestamps grow anyway). Only
        // what is out of order is sorted: a sorted batch of a thousand events cost a thousand
        // moves and a scratch buffer the allocator mapped and unmapped every time.
        if !events.range(start..).is_sorted_by_key(merge_order) {
            events.make_contiguous()[start..].sort_by_key(merge_order);
        }
        events.len() - start
    }

    /// Whether the node busy-polls its lanes before it sleeps (`poll: spin`).
    pub(crate) fn spins(&self) -> bool {
        self.spin
    }

    /// Whether a lane has entries (no lock taken).
    pub(crate) fn has_entries(&self) -> bool {
        self.lanes.iter().any(|l| l.lane.has_entries())
    }

    /// Whether entries wait for the next pass (do not sleep then).
    fn has_held(&self) -> bool {
        self.senders.iter().any(|s| !s.held.is_empty())
    }

    /// The node is about to sleep: `false` if an entry arrived meanwhile (do not sleep).
    pub(crate) fn prepare_sleep(&self) -> bool {
        if self.has_held() {
            return false;
        }
        // Rings of entries taken since are stale: the bell is drained here, before the
        // receiver announces it waits, rather than on waking up, where the system call would
        // delay the message that woke it. A ring after this is for an entry the check below
        // sees (or wakes the node once for nothing).
        if let Some(bell) = &self.bell {
            bell.quiet();
        }
        for l in &self.lanes {
            l.lane.set_waiting();
        }
        if self.lanes.iter().any(|l| l.lane.has_entries()) {
            self.woke();
            return false;
        }
        true
    }

    /// The node woke up (its bell is drained before it sleeps again).
    pub(crate) fn woke(&self) {
        for l in &self.lanes {
            l.lane.clear_waiting();
        }
    }

    /// Messages the lane of `input` dropped because it was full.
    pub(crate) fn dropped(&self, input: &DataId) -> u64 {
        self.lanes
            .iter()
            .filter(|l| &l.input == input)
            .map(|l| l.lane.counters().dropped)
            .sum()
    }
}

/// The event of an entry taken from `lane`. A shared sample released through the lane's holder
/// bit gets it in `bits`. An entry that cannot be decoded becomes an error event; its sample is
/// released if it goes back through the daemon, otherwise it stays held until the dataflow ends
/// (without the entry the receiver cannot find the sample).
fn event(
    lane: &InputLane,
    taken: Taken,
    drops: &DropReports,
    bits: &mut VecDeque<(u64, u32)>,
) -> NodeEvent {
    match taken.entry {
        Ok(LaneEntry { metadata, data }) => {
            if let (Some(token), Some(bit)) = (taken.token, lane.bit) {
                bits.push_back((token, bit));
            }
            NodeEvent::Input {
                id: lane.input.clone(),
                metadata,
                data,
            }
        }
        Err(e) => {
            if let (Some(token), None) = (taken.token, lane.bit) {
                drops.dropped(token);
            }
            let input = &lane.input;
            NodeEvent::Error(format!(
                "input `{input}`: a malformed message in its lane ({e}) was dropped"
            ))
        }
    }
}

/// Where an event taken from lanes goes among those of other senders: by its timestamp, an
/// entry that could not be decoded first.
fn merge_order(event: &NodeEvent) -> Option<Timestamp> {
    match event {
        NodeEvent::Input { metadata, .. } => Some(metadata.timestamp),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Removes the test's segments, also when it panics.
    struct Segments(String);

    impl Drop for Segments {
        fn drop(&mut self) {
            let _ = adora_shm::unlink_all(&self.0);
        }
    }

    fn taken(lane: &Lane) -> Vec<(u64, bool)> {
        let mut entries = Vec::new();
        lane.pop_all(&mut entries);
        entries
            .into_iter()
            .map(|e| (e.seq, e.bytes.is_empty()))
            .collect()
    }

    #[test]
    fn a_full_taps_lane_sends_copies_on_the_socket_until_a_mark_fits_again() {
        let segments = Segments(format!("adora-node-api-test-{}-taps-", std::process::id()));
        let name = format!("{}lane", segments.0);
        let reader = Lane::create(&name, 3).expect("create");
        let mut taps = TapsLane {
            lane: Lane::open(&name).expect("open"),
            pushed: 0,
            unmarked: false,
        };
        let output: DataId = "out".into();
        assert!(taps.copy(&output, b"entry"));
        taps.mark(); // a shared sample goes on the socket after entry 1
        assert_eq!((taps.pushed, taps.unmarked), (2, false));
        assert!(taps.copy(&output, b"entry"));
        assert!(!taps.copy(&output, b"entry"), "full");
        taps.mark(); // full: the copy goes on the socket without a mark before it
        assert_eq!((taps.pushed, taps.unmarked), (3, true));
        assert_eq!(taken(&reader), vec![(1, false), (2, true), (3, false)]);
        // Room again, but a copy written now could be read before the unmarked one on the
        // socket: copies stay on the socket until the next one there gets its mark.
        assert!(!taps.copy(&output, b"entry"));
        taps.mark();
        assert_eq!((taps.pushed, taps.unmarked), (4, false));
        assert!(taps.copy(&output, b"entry"));
        assert_eq!(taken(&reader), vec![(4, true), (5, false)]);
    }

    /// A receiving node with one lane (from sender `a`) and its bell, and the sender's side.
    fn receiver(segments: &Segments) -> (InputLanes, Lane, Bell) {
        let name = format!("{}lane", segments.0);
        let lane = Lane::create(&name, 8).expect("create");
        let bell_path = Bell::path(&format!("{}bell", segments.0));
        Bell::create(&bell_path).expect("bell");
        let lanes = InputLanes {
            lanes: vec![InputLane {
                input: "in".into(),
                lane,
                sender: 0,
                bit: Some(0),
            }],
            senders: vec![SenderOrder::default()],
            spin: false,
            bell: Some(Bell::listen(&bell_path).expect("listen")),
            batch: Batch::default(),
            fresh: Vec::new(),
        };
        let sender = Lane::open(&name).expect("open");
        (lanes, sender, Bell::ringer(&bell_path).expect("ringer"))
    }

    fn rung(bell: &Bell) -> bool {
        let mut fds = [nix::poll::PollFd::new(
            bell.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).expect("poll") > 0
    }

    /// Pushes a message as a sender does: rings only a receiver that said it waits.
    fn send(lane: &Lane, bell: &Bell, seq: u64) {
        let entry = LaneEntry {
            metadata: Metadata::new(uhlc::HLC::default().new_timestamp()),
            data: DataRef::Inline(vec![1]),
        };
        let bytes = entry.encode().expect("encodes");
        match lane.push(&bytes, None, seq) {
            Pushed::Queued { wake, .. } => {
                if wake {
                    bell.ring().expect("ring");
                }
            }
            other => panic!("not queued: {other:?}"),
        }
    }

    #[test]
    fn taken_entries_come_in_each_senders_order_and_senders_merged_by_time() {
        let segments = Segments(format!("adora-node-api-test-{}-merge-", std::process::id()));
        // Sender `a` writes the lanes of inputs `x` and `y`, sender `b` the lane of `z`.
        let mut lanes = InputLanes {
            lanes: Vec::new(),
            senders: vec![SenderOrder::default(), SenderOrder::default()],
            spin: false,
            bell: None,
            batch: Batch::default(),
            fresh: Vec::new(),
        };
        let mut writers = Vec::new();
        for (input, sender) in [("x", 0), ("y", 0), ("z", 1)] {
            let name = format!("{}{input}", segments.0);
            let lane = Lane::create(&name, 8).expect("create");
            writers.push(Lane::open(&name).expect("open"));
            let input = input.into();
            let bit = None;
            lanes.lanes.push(InputLane {
                input,
                lane,
                sender,
                bit,
            });
        }
        let hlc = uhlc::HLC::default();
        let push = |lane: &Lane, seq| {
            let entry = LaneEntry {
                metadata: Metadata::new(hlc.new_timestamp()),
                data: DataRef::Inline(vec![seq as u8]),
            };
            let bytes = entry.encode().expect("encodes");
            assert!(matches!(
                lane.push(&bytes, None, seq),
                Pushed::Queued { .. }
            ));
        };
        // In time: a1 on x, b1 on z, a2 on y, a3 on x.
        push(&writers[0], 1);
        push(&writers[2], 1);
        push(&writers[1], 2);
        push(&writers[0], 3);
        let (node, _daemon) = std::os::unix::net::UnixStream::pair().expect("pair");
        let drops = DropReports::new(Arc::new(ControlChannel::new(node)));
        // An event already waiting stays first.
        let mut events = VecDeque::from([NodeEvent::Stop]);
        let mut bits = VecDeque::new();
        assert_eq!(lanes.take((&mut events, &mut bits), &drops), 4);
        let order: Vec<String> = (events.iter().skip(1))
            .map(|e| match e {
                NodeEvent::Input {
                    id,
                    data: DataRef::Inline(bytes),
                    ..
                } => format!("{id}{}", bytes[0]),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(order, ["x1", "z1", "y2", "x3"]);
        assert!(matches!(events[0], NodeEvent::Stop));
    }

    #[test]
    fn a_malformed_entry_is_an_error_event_and_only_a_sample_without_a_bit_goes_back_to_the_daemon()
    {
        let segments = Segments(format!("adora-node-api-test-{}-bad-", std::process::id()));
        let mut lanes = InputLanes {
            lanes: Vec::new(),
            senders: vec![SenderOrder::default()],
            spin: false,
            bell: None,
            batch: Batch::default(),
            fresh: Vec::new(),
        };
        let mut writers = Vec::new();
        for (input, bit) in [("with_bit", Some(3)), ("without", None)] {
            let name = format!("{}{input}", segments.0);
            let lane = Lane::create(&name, 8).expect("create");
            writers.push(Lane::open(&name).expect("open"));
            let input = input.into();
            lanes.lanes.push(InputLane {
                input,
                lane,
                sender: 0,
                bit,
            });
        }
        let good = LaneEntry {
            metadata: Metadata::new(uhlc::HLC::default().new_timestamp()),
            data: DataRef::Inline(vec![7]),
        };
        let good = good.encode().expect("encodes");
        assert!(matches!(
            writers[0].push(&[0xff; 3], Some(41), 1),
            Pushed::Queued { .. }
        ));
        assert!(matches!(
            writers[1].push(&[0xff; 3], Some(42), 2),
            Pushed::Queued { .. }
        ));
        assert!(matches!(
            writers[0].push(&good, None, 3),
            Pushed::Queued { .. }
        ));
        let (node, _daemon) = std::os::unix::net::UnixStream::pair().expect("pair");
        let drops = DropReports::new(Arc::new(ControlChannel::new(node)));
        let (mut events, mut bits) = (VecDeque::new(), VecDeque::new());
        assert_eq!(lanes.take((&mut events, &mut bits), &drops), 3);
        let errors: Vec<&String> = (events.iter())
            .filter_map(|e| match e {
                NodeEvent::Error(e) => Some(e),
                _ => None,
            })
            .collect();
        assert_eq!(errors.len(), 2, "{events:?}");
        assert!(errors[0].starts_with("input `with_bit`: a malformed message in its lane"));
        assert!(errors[1].starts_with("input `without`: a malformed message in its lane"));
        assert!(
            matches!(&events[2], NodeEvent::Input { id, data: DataRef::Inline(b), .. } if id.as_str() == "with_bit" && b == &[7])
        );
        // The sample behind the bit stays held (nobody could find it); the other one is
        // reported dropped to the daemon, which holds it for this receiver.
        assert!(bits.is_empty());
        assert_eq!(drops.start_waiting(), vec![42]);
    }

    #[test]
    fn the_bell_is_drained_before_the_receiver_sleeps_not_when_it_wakes() {
        let segments = Segments(format!("adora-node-api-test-{}-bell-", std::process::id()));
        let (mut lanes, sender, ringer) = receiver(&segments);
        let (node, _daemon) = std::os::unix::net::UnixStream::pair().expect("pair");
        let drops = DropReports::new(Arc::new(ControlChannel::new(node)));
        let mut events = VecDeque::new();
        let mut bits = VecDeque::new();
        let events = (&mut events, &mut bits);

        assert!(lanes.prepare_sleep(), "nothing queued: it may sleep");
        send(&sender, &ringer, 1);
        let listener = lanes.bell().expect("a bell");
        assert!(rung(listener), "a sleeping receiver is rung");

        lanes.woke();
        assert!(rung(listener), "waking up leaves the ring for later");
        assert_eq!(lanes.take((&mut *events.0, &mut *events.1), &drops), 1);
        send(&sender, &ringer, 2); // while awake: no ring
        assert!(!lanes.prepare_sleep(), "an entry came meanwhile");
        assert!(
            !rung(lanes.bell().expect("a bell")),
            "drained before sleeping"
        );
        assert_eq!(lanes.take((&mut *events.0, &mut *events.1), &drops), 1);
        assert!(lanes.prepare_sleep());
        assert!(
            !rung(lanes.bell().expect("a bell")),
            "asleep with nothing pending"
        );
        send(&sender, &ringer, 3);
        assert!(
            rung(lanes.bell().expect("a bell")),
            "and woken by the next message"
        );
    }
}
