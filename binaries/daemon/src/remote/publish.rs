//! The publisher of one local output read on other machines: a task that puts each message
//! into Zenoh.
//!
//! Messages come two ways. A sender whose output has a **publish lane** (a lane like a local
//! edge's, whose reader is this task: `routing/lanes.rs`) pushes every message into it and rings
//! the lane's bell only when this task sleeps, so a message for another machine costs no
//! socket write, no actor and no channel hop in the daemon. Everything else comes through the
//! daemon's actor on the task's queue: messages of outputs without such a lane, everything a
//! sender sends once its lanes closed (a move), the daemon's own messages (`send_stdout_as`) and
//! the output's end. The lane is always emptied before a queued message is published: the
//! sender uses the daemon's path only after its lane closed, so this keeps the order.
//!
//! Numbering (`Sequence`): the actor numbers what it queues (and counts what it drops); the
//! task numbers what it takes from the lane, and a full lane's evicted entries count as dropped
//! by the sender. What the lane took comes before anything queued, so a queued message's
//! numbers are shifted by the lane's.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use adora_message::{
    daemon_to_daemon::{append_checksum, encode_header, RemoteKind, Sequence},
    DataRef, LaneEntry,
};
use adora_shm::{release_lane, Batch, FileId, Lane, RegionCache, ShmRegion};
use bytes::Bytes;
use tokio::{net::unix::pipe, sync::mpsc};
use zenoh::{bytes::ZBytes, pubsub::Publisher};

use super::Outgoing;

/// A published output's lane, as the daemon created it for its sender.
pub(crate) struct PublishLane {
    pub lane: Arc<Lane>,
    /// The FIFO the sender rings when the task sleeps.
    pub bell: PathBuf,
    /// The lane's holder bit in the sender's shared samples (`adora_shm::release_lane`).
    pub bit: Option<u32>,
    /// The output's publishing instance (`Sequence::stream`), the one the actor numbers with.
    pub stream: u64,
    /// Set while the task takes entries and publishes them: the dataflow's shared memory stays
    /// until it is done (`Routing::publishing`).
    pub busy: Arc<AtomicBool>,
}

/// The task's side of a publish lane.
struct LaneReader {
    lane: Arc<Lane>,
    /// The task's own reading end of the bell.
    bell: pipe::Receiver,
    bit: Option<u32>,
    stream: u64,
    busy: Arc<AtomicBool>,
    regions: RegionCache,
    /// What the lane gave, its memory kept from one drain to the next.
    batch: Batch,
    /// Messages of earlier sender instances (a restarted sender numbers from 1 again).
    base: u64,
    /// The sender's number of the last entry taken.
    last: u64,
    /// Entries a full lane dropped before the task took them.
    dropped: u64,
}

impl LaneReader {
    fn new(l: PublishLane) -> std::io::Result<Self> {
        let bell = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&l.bell)?;
        Ok(Self {
            lane: l.lane,
            bell,
            bit: l.bit,
            stream: l.stream,
            busy: l.busy,
            regions: RegionCache::new(),
            batch: Batch::default(),
            base: 0,
            last: 0,
            dropped: 0,
        })
    }

    /// Waits until the lane has entries (its bell rang, or it had some already).
    async fn wait(&mut self) {
        self.lane.set_waiting();
        if !self.lane.has_entries() {
            match self.bell.readable().await {
                Ok(()) => {
                    // Consume the rings (until the FIFO is empty, which clears readiness).
                    let mut buf = [0u8; 64];
                    while self.bell.try_read(&mut buf).is_ok_and(|n| n > 0) {}
                }
                Err(e) => {
                    tracing::warn!("publish lane {}: {e}", self.lane.os_id());
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
        }
        self.lane.clear_waiting();
    }

    /// Publishes everything the lane holds, oldest first.
    async fn drain(&mut self, publisher: &Publisher<'static>) {
        let mut batch = std::mem::take(&mut self.batch);
        self.busy.store(true, Ordering::SeqCst);
        loop {
            batch.clear();
            if self.lane.take_into(&mut batch) == 0 {
                break;
            }
            for (entry, _, seq) in batch.iter() {
                let sequence = self.number(seq);
                match self.payload(entry) {
                    Some((kind, payload)) => put(publisher, kind, sequence, payload).await,
                    // Counted as dropped by the next message's numbers.
                    None => self.dropped += 1,
                }
            }
        }
        self.busy.store(false, Ordering::SeqCst);
        self.batch = batch;
    }

    /// The numbers of the entry the sender numbered `seq`, and of what went missing before it.
    fn number(&mut self, seq: u64) -> Sequence {
        // The sender numbers from 1; the entry is in shared memory it writes, so a 0 must not
        // underflow here.
        let seq = seq.max(1);
        if seq <= self.last {
            // A restarted sender: its numbering starts again at 1.
            self.base += self.last;
            self.last = 0;
        }
        self.dropped += seq - self.last - 1;
        self.last = seq;
        Sequence {
            stream: self.stream,
            seq: self.base + seq - 1,
            dropped: self.dropped,
        }
    }

    /// The message of `entry` and its bytes (a shared sample is lent to Zenoh, see [`Lent`]).
    fn payload(&mut self, entry: &[u8]) -> Option<(RemoteKind, Bytes)> {
        let LaneEntry { metadata, data } = match LaneEntry::decode(entry) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("publish lane {}: unreadable entry: {e}", self.lane.os_id());
                return None;
            }
        };
        let bytes = match data {
            DataRef::Inline(bytes) => Bytes::from(bytes),
            DataRef::Shared(shared) => {
                let file = FileId {
                    dev: shared.file.dev,
                    ino: shared.file.ino,
                };
                let region = match self.regions.get_file(&shared.os_id, file) {
                    Ok(region) => region,
                    Err(e) => {
                        let why = std::error::Error::source(&e).map(ToString::to_string);
                        tracing::warn!("cannot read a sample to publish it: {e} ({why:?})");
                        return None;
                    }
                };
                let len = shared.len.min(region.size());
                Bytes::from_owner(Lent {
                    region,
                    len,
                    bit: self.bit,
                })
            }
        };
        Some((RemoteKind::Data { metadata }, bytes))
    }

    /// A queued message's numbers, after what the lane took.
    fn shift(&self, sequence: Sequence) -> Sequence {
        Sequence {
            seq: sequence.seq + self.base + self.last,
            dropped: sequence.dropped + self.dropped,
            ..sequence
        }
    }
}

/// A sender's shared sample lent to Zenoh instead of copied: Zenoh copies the bytes into its
/// batches, and when it drops them the lane's hold on the sample ends (its holder bit), so the
/// sender's pool can reuse it.
struct Lent {
    region: Arc<ShmRegion>,
    len: usize,
    bit: Option<u32>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.region.as_slice()[..self.len]
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(bit) = self.bit {
            release_lane(&self.region, bit);
        }
    }
}

/// Publishes what the sender pushes into `lane` and what comes on `queue` until the queue's
/// senders are gone (see the module's documentation for the order).
pub(super) async fn run(
    publisher: &Publisher<'static>,
    key: &str,
    mut queue: mpsc::Receiver<Outgoing>,
    lane: Option<PublishLane>,
) {
    let mut lane = lane.and_then(|l| {
        let ring = l.lane.clone();
        LaneReader::new(l)
            .inspect_err(|e| {
                // Closed, the sender sends through the daemon from its next message on.
                tracing::warn!("{key}: cannot read its publish lane ({e}): the daemon takes it");
                ring.close();
            })
            .ok()
    });
    loop {
        let next = match &mut lane {
            Some(lane) => tokio::select! {
                next = queue.recv() => next,
                () = lane.wait() => {
                    lane.drain(publisher).await;
                    continue;
                }
            },
            None => queue.recv().await,
        };
        // The lane's entries come first: its sender uses the queue only once it closed.
        if let Some(lane) = &mut lane {
            lane.drain(publisher).await;
        }
        let Some((kind, sequence, payload, _budget)) = next else {
            return;
        };
        let sequence = lane.as_ref().map_or(sequence, |l| l.shift(sequence));
        put(publisher, kind, sequence, Bytes::from(payload)).await;
    }
}

/// Puts one message (its header and checksum as attachment).
async fn put(publisher: &Publisher<'static>, kind: RemoteKind, sequence: Sequence, payload: Bytes) {
    let mut header = encode_header(kind, sequence);
    append_checksum(&mut header, &payload);
    if let Err(e) = publisher
        .put(ZBytes::from(payload))
        .attachment(header)
        .await
    {
        tracing::warn!("cannot publish on {}: {e}", publisher.key_expr());
    }
}
