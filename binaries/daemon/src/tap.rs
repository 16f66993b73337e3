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
//! Towards a client ([`forward`]) a daemon sends batches of at most [`TAP_BATCH_BYTES`] and keeps
//! at most [`TAP_WINDOW`] cost units unacknowledged, so a slow client slows the tap down, and
//! through it (lossless) the tapped nodes.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, RwLock,
    },
};

use adora_core::{DataId, NodeId};
use adora_message::{
    daemon_to_coordinator::DaemonMessage,
    envelope::Envelope,
    tap::{message_cost, TapBatch, TappedMessage, TAP_BATCH_BYTES, TAP_WINDOW},
    DataRef, Metadata,
};
use adora_shm::{FileId, RegionCache};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::event::Reports;

/// Most messages one tap buffers before it applies backpressure (or drops, when lossy).
pub const TAP_BUFFER_MESSAGES: usize = 1024;

/// Most payload bytes one tap buffers before it applies backpressure (or drops, when lossy).
pub const TAP_BUFFER_BYTES: usize = 64 * 1024 * 1024;

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
        let kib = len.div_ceil(1024).clamp(1, TAP_BUFFER_BYTES / 1024) as u32;
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

#[derive(Default)]
struct Inner {
    /// How many taps exist: the hot path reads only this while it is zero.
    active: AtomicUsize,
    taps: RwLock<Vec<Tap>>,
    next_id: AtomicUsize,
    /// Credit of the taps forwarded to the coordinator, by `Tap` command id: (tap id, credit).
    forwarded: Mutex<HashMap<u64, (u64, Arc<Semaphore>)>>,
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
        id
    }

    /// Stops the tap `id`: its receiver ends once the copies in flight are taken.
    pub fn remove(&self, id: u64) {
        self.retain(|t| t.id != id);
    }

    /// A dataflow ended here: every tap of it ends.
    pub fn end_dataflow(&self, dataflow: Uuid) {
        self.retain(|t| t.dataflow != dataflow);
    }

    fn retain(&self, keep: impl Fn(&Tap) -> bool) {
        let mut taps = self.0.taps.write().unwrap_or_else(|p| p.into_inner());
        for tap in taps.iter().filter(|t| !keep(t)) {
            tap.budget.close();
        }
        taps.retain(keep);
        self.0.active.store(taps.len(), Ordering::Release);
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
