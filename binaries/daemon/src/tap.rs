//! Taps (issue 21): copies of local nodes' outputs for a recorder (`adora record`, `adora run
//! --record`) or `adora topic`. Observation is a tap, not a copy of everything: a node's control
//! connection asks [`Taps::matching`] for each message it routes, which costs one atomic load
//! while no tap exists, and copies the payload only for an output somebody taps.
//!
//! Backpressure: a tap buffers at most [`TAP_BUFFER_MESSAGES`] messages and [`TAP_BUFFER_BYTES`]
//! bytes. A lossless tap (the default) that is full makes the *tapped node's control connection*
//! wait: the daemon stops reading that connection, so the node blocks in its next `send` once
//! its socket buffer is full. Other nodes, the other outputs' receivers and the daemon actor do
//! not wait. A lossy tap drops instead and counts every drop per output.
//!
//! Copies of messages that went node to node (lanes) come from the sender: it writes the copy of
//! an inline message into its *taps lane* ([`CopiesLane`]), which its control connection reads
//! every [`TAPS_LANE_PERIOD`] while a tap watches the node, so a tapped sender makes no system
//! call per message. A shared sample, or a copy that finds the lane full, comes on the control
//! socket as before, after a *mark* in the lane: the lane is read up to a mark only, and the
//! message says how many entries precede it (`taps_before`), which are taken first. So a tap
//! sees each output in order. Backpressure is unchanged: a lossless tap that is full stops the
//! reading of both, the lane fills up and the sender goes on to its socket.
//!
//! Towards a client ([`forward`]) a daemon sends batches of at most [`TAP_BATCH_BYTES`] and keeps
//! at most [`TAP_WINDOW`] cost units unacknowledged, so a slow client slows the tap down, and
//! through it (lossless) the tapped nodes.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, RwLock,
    },
    time::Duration,
};

use adora_core::{DataId, NodeId};
use adora_message::{
    daemon_to_coordinator::DaemonMessage,
    envelope::Envelope,
    tap::{message_cost, TapBatch, TappedMessage, TAP_BATCH_BYTES, TAP_WINDOW},
    DataRef, Metadata, TapCopy,
};
use adora_shm::{Entry, FileId, Lane, RegionCache};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::event::Reports;

/// Most messages one tap buffers before it applies backpressure (or drops, when lossy).
pub const TAP_BUFFER_MESSAGES: usize = 1024;

/// Most payload bytes one tap buffers before it applies backpressure (or drops, when lossy).
pub const TAP_BUFFER_BYTES: usize = 64 * 1024 * 1024;

/// How often a control connection reads its node's taps lane while a tap watches the node.
pub const TAPS_LANE_PERIOD: Duration = Duration::from_millis(1);

/// Most copies a lossless tap takes room for at once (see `Tap::deliver_many`).
const TAP_CHUNK: usize = 256;

/// A copy's share of a tap's byte budget, in KiB (at least 1, at most the whole budget).
fn budget_kib(len: usize) -> u32 {
    len.div_ceil(1024).clamp(1, TAP_BUFFER_BYTES / 1024) as u32
}

/// A copied message and its share of the tap's byte budget (released when it is dropped).
pub type Tapped = (TappedMessage, Option<OwnedSemaphorePermit>);

/// Messages dropped by a lossy tap, per `node/output`.
pub type DropCounts = Arc<Mutex<BTreeMap<String, u64>>>;

/// The drops counted so far.
pub fn read_drops(counts: &DropCounts) -> BTreeMap<String, u64> {
    counts.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// One tap: which outputs, where their copies go.
#[derive(Clone)]
pub struct Tap {
    id: u64,
    dataflow: Uuid,
    /// `None`: every output of the dataflow's local nodes.
    outputs: Option<Arc<BTreeSet<(NodeId, DataId)>>>,
    lossy: bool,
    tx: mpsc::Sender<Tapped>,
    /// The byte budget, in KiB permits.
    budget: Arc<Semaphore>,
    dropped: DropCounts,
}

impl Tap {
    /// A tap of `outputs` (`None`: all) of dataflow `dataflow`, and the receiving end of its
    /// copies. It copies nothing until it is added to a daemon's [`Taps`].
    pub fn new(
        dataflow: Uuid,
        outputs: Option<BTreeSet<(NodeId, DataId)>>,
        lossy: bool,
    ) -> (Self, mpsc::Receiver<Tapped>) {
        let (tx, rx) = mpsc::channel(TAP_BUFFER_MESSAGES);
        let tap = Tap {
            id: 0,
            dataflow,
            outputs: outputs.map(Arc::new),
            lossy,
            tx,
            budget: Arc::new(Semaphore::new(TAP_BUFFER_BYTES / 1024)),
            dropped: DropCounts::default(),
        };
        (tap, rx)
    }

    /// The tapped dataflow.
    pub fn dataflow(&self) -> Uuid {
        self.dataflow
    }

    /// Messages dropped so far (only a lossy tap drops).
    pub fn dropped(&self) -> BTreeMap<String, u64> {
        read_drops(&self.dropped)
    }

    /// The tap's drop counts, shared: still readable once the tap itself is gone (a clone of
    /// the tap would keep its copies' channel open).
    pub fn drop_counts(&self) -> DropCounts {
        self.dropped.clone()
    }

    /// Whether the tap copies an output of `node` of `dataflow`.
    fn wants_node(&self, dataflow: Uuid, node: &NodeId) -> bool {
        self.dataflow == dataflow
            && self
                .outputs
                .as_ref()
                .is_none_or(|o| o.iter().any(|(n, _)| n == node))
    }

    /// Whether the tap copies `node/output` of `dataflow`.
    pub fn wants(&self, dataflow: Uuid, node: &NodeId, output: &DataId) -> bool {
        self.dataflow == dataflow
            && self
                .outputs
                .as_ref()
                .is_none_or(|o| o.iter().any(|(n, d)| n == node && d == output))
    }

    fn count_drop(&self, node: &NodeId, output: &DataId) {
        let mut dropped = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
        *dropped.entry(format!("{node}/{output}")).or_default() += 1;
    }

    /// Hands copies to the tap, in order: waits for room when lossless, drops and counts what
    /// finds no room when lossy. A lossless tap takes room for up to [`TAP_CHUNK`] copies at a
    /// time, so that a writer freeing one slot after the other wakes the sender once per chunk,
    /// not once per message.
    async fn deliver_many(&self, copies: Vec<TappedMessage>) {
        let mut copies = copies.into_iter().peekable();
        while copies.peek().is_some() {
            let chunk: Vec<TappedMessage> = copies.by_ref().take(TAP_CHUNK).collect();
            if self.lossy {
                for message in chunk {
                    let kib = budget_kib(message.data.len());
                    match self.budget.clone().try_acquire_many_owned(kib) {
                        Ok(permit) => self.offer(message, permit),
                        Err(_) => self.count_drop(&message.node, &message.output),
                    }
                }
                continue;
            }
            let kib: u32 = chunk.iter().map(|m| budget_kib(m.data.len())).sum();
            let Ok(permit) = (self.budget.clone())
                .acquire_many_owned(kib.min(TAP_BUFFER_BYTES as u32 / 1024))
                .await
            else {
                return; // closed: the tap was removed
            };
            let Ok(slots) = self.tx.reserve_many(chunk.len()).await else {
                return; // the receiver is gone: the tap ended
            };
            // The chunk's budget comes back with its last copy, once the earlier ones are gone.
            let mut permit = Some(permit);
            let last = chunk.len() - 1;
            for (i, (message, slot)) in chunk.into_iter().zip(slots).enumerate() {
                slot.send((message, if i == last { permit.take() } else { None }));
            }
        }
    }

    /// A lossy tap's copy with its budget: queued, or dropped and counted when the queue is full.
    fn offer(&self, message: TappedMessage, permit: OwnedSemaphorePermit) {
        if let Err(mpsc::error::TrySendError::Full((message, _))) =
            self.tx.try_send((message, Some(permit)))
        {
            self.count_drop(&message.node, &message.output);
        }
    }

    /// Hands one copy to the tap: waits for room when lossless, drops and counts when lossy.
    /// `copy` makes the payload only once there is room for it.
    async fn deliver(
        &self,
        node: &NodeId,
        output: &DataId,
        metadata: &Metadata,
        len: usize,
        copy: impl FnOnce() -> Option<Vec<u8>>,
    ) {
        let kib = budget_kib(len);
        let permit = if self.lossy {
            match self.budget.clone().try_acquire_many_owned(kib) {
                Ok(p) => Some(p),
                Err(_) => return self.count_drop(node, output),
            }
        } else {
            match self.budget.clone().acquire_many_owned(kib).await {
                Ok(p) => Some(p),
                Err(_) => return, // closed: the tap was removed
            }
        };
        let Some(data) = copy() else {
            return;
        };
        let message = TappedMessage {
            node: node.clone(),
            output: output.clone(),
            metadata: metadata.clone(),
            data,
        };
        if self.lossy {
            if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send((message, permit)) {
                self.count_drop(node, output);
            }
        } else {
            // An error means the receiver is gone: the tap ended.
            let _ = self.tx.send((message, permit)).await;
        }
    }
}

struct Inner {
    /// How many taps exist: the hot path reads only this while it is zero.
    active: AtomicUsize,
    taps: RwLock<Vec<Tap>>,
    next_id: AtomicUsize,
    /// Credit of the taps forwarded to the coordinator, by `Tap` command id: (tap id, credit).
    forwarded: Mutex<HashMap<u64, (u64, Arc<Semaphore>)>>,
    /// The senders' taps lanes, by dataflow and node.
    lanes: Mutex<HashMap<Uuid, BTreeMap<NodeId, Arc<Lane>>>>,
    /// Changes whenever a tap is added or removed (control connections then look again whether
    /// their node is watched).
    changes: watch::Sender<()>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            active: AtomicUsize::new(0),
            taps: RwLock::default(),
            next_id: AtomicUsize::new(0),
            forwarded: Mutex::default(),
            lanes: Mutex::default(),
            changes: watch::channel(()).0,
        }
    }
}

/// The taps of one daemon, shared by its actor and its node connections.
#[derive(Clone, Default)]
pub struct Taps(Arc<Inner>);

impl Taps {
    /// Starts copying for `tap`; returns its id (for [`Self::remove`]).
    pub fn add(&self, mut tap: Tap) -> u64 {
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed) as u64 + 1;
        tap.id = id;
        let mut taps = self.0.taps.write().unwrap_or_else(|p| p.into_inner());
        taps.push(tap);
        self.0.active.store(taps.len(), Ordering::Release);
        drop(taps);
        self.0.changes.send_replace(());
        id
    }

    /// Stops the tap `id`: its receiver ends once the copies in flight are taken.
    pub fn remove(&self, id: u64) {
        self.retain(|t| t.id != id);
    }

    /// A dataflow ended here: every tap of it ends.
    pub fn end_dataflow(&self, dataflow: Uuid) {
        self.retain(|t| t.dataflow != dataflow);
        self.lock_lanes().remove(&dataflow);
    }

    /// The taps lanes of `dataflow`'s senders (see [`CopiesLane`]).
    pub fn set_lanes(&self, dataflow: Uuid, lanes: BTreeMap<NodeId, Arc<Lane>>) {
        self.lock_lanes().insert(dataflow, lanes);
    }

    /// The taps lane of `node` of `dataflow`, if it has one.
    pub fn lane(&self, dataflow: Uuid, node: &NodeId) -> Option<Arc<Lane>> {
        self.lock_lanes().get(&dataflow)?.get(node).cloned()
    }

    fn lock_lanes(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, BTreeMap<NodeId, Arc<Lane>>>> {
        self.0.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a tap copies an output of `node` of `dataflow`.
    pub fn watches_node(&self, dataflow: Uuid, node: &NodeId) -> bool {
        if self.0.active.load(Ordering::Acquire) == 0 {
            return false;
        }
        let taps = self.0.taps.read().unwrap_or_else(|p| p.into_inner());
        taps.iter().any(|t| t.wants_node(dataflow, node))
    }

    /// Marks a change each time a tap is added or removed.
    pub fn changes(&self) -> watch::Receiver<()> {
        self.0.changes.subscribe()
    }

    fn retain(&self, keep: impl Fn(&Tap) -> bool) {
        let mut taps = self.0.taps.write().unwrap_or_else(|p| p.into_inner());
        for tap in taps.iter().filter(|t| !keep(t)) {
            tap.budget.close();
        }
        taps.retain(keep);
        self.0.active.store(taps.len(), Ordering::Release);
        drop(taps);
        self.0.changes.send_replace(());
    }

    /// The taps that want `node/output` of `dataflow` (none, without a lock, while no tap exists).
    pub fn matching(&self, dataflow: Uuid, node: &NodeId, output: &DataId) -> Vec<Tap> {
        if self.0.active.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        let taps = self.0.taps.read().unwrap_or_else(|p| p.into_inner());
        taps.iter()
            .filter(|t| t.wants(dataflow, node, output))
            .cloned()
            .collect()
    }

    /// Copies a message to every tap that wants it (see the module doc for who waits).
    pub async fn copy(
        &self,
        dataflow: Uuid,
        node: &NodeId,
        output: &DataId,
        metadata: &Metadata,
        data: &DataRef,
        regions: &mut Option<RegionCache>,
    ) {
        let taps = self.matching(dataflow, node, output);
        for tap in taps {
            let copy = || read_payload(data, regions, node, output);
            tap.deliver(node, output, metadata, data.len(), copy).await;
        }
    }

    /// Hands copies of `node`'s messages (owned payloads, in the order it sent them) to every
    /// tap that wants them (see the module doc for who waits).
    pub async fn copy_many(&self, dataflow: Uuid, node: &NodeId, mut copies: Vec<TappedMessage>) {
        let taps = self.watching(dataflow, node);
        let Some((last, others)) = taps.split_last() else {
            return;
        };
        for tap in others {
            let wanted = (copies.iter())
                .filter(|m| tap.wants(dataflow, node, &m.output))
                .cloned()
                .collect();
            tap.deliver_many(wanted).await;
        }
        copies.retain(|m| last.wants(dataflow, node, &m.output));
        last.deliver_many(copies).await;
    }

    /// The taps that want an output of `node` of `dataflow`.
    fn watching(&self, dataflow: Uuid, node: &NodeId) -> Vec<Tap> {
        if self.0.active.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        let taps = self.0.taps.read().unwrap_or_else(|p| p.into_inner());
        (taps.iter())
            .filter(|t| t.wants_node(dataflow, node))
            .cloned()
            .collect()
    }

    /// Adds `tap` now and returns the task that forwards its copies to the coordinator as the
    /// answers of command `command`, within the credit window, and ends with `TapEnd` once the
    /// tap ends.
    pub fn forward(
        &self,
        command: u64,
        tap: Tap,
        rx: mpsc::Receiver<Tapped>,
        reports: Reports,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let credit = Arc::new(Semaphore::new(TAP_WINDOW as usize));
        let dropped = tap.dropped.clone();
        let id = self.add(tap);
        self.lock_forwarded().insert(command, (id, credit.clone()));
        let taps = self.clone();
        async move {
            forward(command, rx, &credit, &dropped, &reports).await;
            taps.lock_forwarded().remove(&command);
            let dropped = read_drops(&dropped);
            let _ = reports.send(Envelope::new(command, DaemonMessage::TapEnd { dropped }));
        }
    }

    fn lock_forwarded(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (u64, Arc<Semaphore>)>> {
        self.0.forwarded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The link to the coordinator was lost: no client receives the forwarded taps any more.
    pub fn untap_all(&self) {
        let commands: Vec<u64> = self.lock_forwarded().keys().copied().collect();
        for command in commands {
            self.untap(command);
        }
    }

    /// The client handled `cost` units of the forwarded tap `command`.
    pub fn credit(&self, command: u64, cost: u64) {
        let forwarded = self.lock_forwarded();
        if let Some((_, credit)) = forwarded.get(&command) {
            let room = TAP_WINDOW as usize - credit.available_permits();
            credit.add_permits((cost as usize).min(room));
        }
    }

    /// The client of the forwarded tap `command` went away.
    pub fn untap(&self, command: u64) {
        let found = self.lock_forwarded().get(&command).cloned();
        if let Some((id, credit)) = found {
            credit.close();
            self.remove(id);
        }
    }
}

/// A node's taps lane, as its control connection reads it: copies taken from the lane wait here
/// until the tap gets them, in the order the node wrote them.
pub struct CopiesLane {
    lane: Arc<Lane>,
    /// Taken from the lane, not yet handed to the taps (they come after a request still unread).
    taken: VecDeque<Entry>,
    scratch: Vec<Entry>,
}

impl CopiesLane {
    /// Reads `lane`.
    pub fn new(lane: Arc<Lane>) -> Self {
        Self {
            lane,
            taken: VecDeque::new(),
            scratch: Vec::new(),
        }
    }

    /// How many entries the lane holds at most.
    pub fn capacity(&self) -> usize {
        self.lane.capacity()
    }

    /// Whether copies wait (in the lane or here).
    pub fn has_copies(&self) -> bool {
        !self.taken.is_empty() || self.lane.has_entries()
    }

    /// Hands the copies numbered up to `upto` to the taps that want them (a full lossless tap
    /// makes this wait), in order, or with `None` those before the first mark (a message on the
    /// socket not read yet); later ones stay for the next call. Copies nobody taps any more are
    /// dropped. Returns how many entries it took from the lane.
    pub async fn deliver(
        &mut self,
        taps: &Taps,
        (dataflow, node): (Uuid, &NodeId),
        upto: Option<u64>,
    ) -> usize {
        let mut taken = 0;
        if self.lane.has_entries() {
            taken = self.lane.pop_all(&mut self.scratch);
            self.taken.extend(self.scratch.drain(..));
        }
        let ready = |e: &Entry| match upto {
            Some(upto) => e.seq <= upto,
            None => !e.bytes.is_empty(),
        };
        let mut copies = Vec::new();
        while self.taken.front().is_some_and(ready) {
            let Some(entry) = self.taken.pop_front() else {
                break;
            };
            if entry.bytes.is_empty() {
                continue; // a mark: its message was read
            }
            match TapCopy::decode(&entry.bytes) {
                Ok(TapCopy {
                    output,
                    entry:
                        adora_message::LaneEntry {
                            metadata,
                            data: DataRef::Inline(data),
                        },
                }) => copies.push(TappedMessage {
                    node: node.clone(),
                    output,
                    metadata,
                    data,
                }),
                // A shared sample in the lane has no holder keeping it alive for the tap.
                Ok(_) => tracing::warn!("node `{node}` put a shared sample into its taps lane"),
                Err(e) => tracing::warn!("node `{node}` wrote a malformed copy for a tap ({e})"),
            }
        }
        if !copies.is_empty() {
            taps.copy_many(dataflow, node, copies).await;
        }
        taken
    }
}

/// The payload bytes of a message (a shared sample is read through `regions`).
fn read_payload(
    data: &DataRef,
    regions: &mut Option<RegionCache>,
    node: &NodeId,
    output: &DataId,
) -> Option<Vec<u8>> {
    match data {
        DataRef::Inline(bytes) => Some(bytes.clone()),
        DataRef::Shared(shared) => {
            let file = FileId {
                dev: shared.file.dev,
                ino: shared.file.ino,
            };
            match regions
                .get_or_insert_with(RegionCache::new)
                .get_file(&shared.os_id, file)
            {
                Ok(region) => Some(region.as_slice()[..shared.len.min(region.size())].to_vec()),
                Err(e) => {
                    tracing::warn!("cannot read `{node}/{output}` to tap it: {e}");
                    None
                }
            }
        }
    }
}

/// Sends batches of `rx` as `Tapped` answers of `command` while `credit` allows.
async fn forward(
    command: u64,
    mut rx: mpsc::Receiver<Tapped>,
    credit: &Arc<Semaphore>,
    dropped: &DropCounts,
    reports: &Reports,
) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.0.data.len();
        let mut messages = vec![first.0];
        while bytes < TAP_BATCH_BYTES {
            let Ok((message, _permit)) = rx.try_recv() else {
                break;
            };
            bytes += message.data.len();
            messages.push(message);
        }
        let cost: u64 = messages.iter().map(|m| message_cost(m.data.len())).sum();
        let cost = cost.min(TAP_WINDOW) as u32;
        match credit.acquire_many(cost).await {
            Ok(permit) => permit.forget(),
            Err(_) => return, // untapped
        }
        let dropped = read_drops(dropped);
        let batch = TapBatch { messages, dropped };
        if reports
            .send(Envelope::new(command, DaemonMessage::Tapped(batch)))
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
