//! Remote messages straight into the receivers' lanes: the subscription's Zenoh callback writes
//! a message of another machine's node into the lanes of its local receivers and rings a
//! receiver's bell only when it sleeps, as a local sender would. Neither the subscription task
//! nor the daemon's actor nor the receiver's events connection is on the way.
//!
//! The daemon creates these lanes with the local ones when the dataflow starts (an input from a
//! node on another machine, no `input_timeout`, a `queue_size` a lane holds; see
//! `routing/lanes.rs`), and a [`LaneFeed`] per subscribed output. The receiver reads them like
//! any lane (the remote node is their sender, numbered per receiver across its lanes).
//!
//! A payload of 4 KiB or more is copied once into a sample of the daemon's pool of remote copies
//! ([`RemotePool`]) and the lanes get its handle, as from a local sender, with the same holder
//! words (`adora_shm::holders`): the feed sets a lane's bit before pushing, clears it for an
//! entry the full lane evicted, and the receiver clears it when it drops the sample, so the
//! sample goes back to the pool without the actor. Only when the daemon delivers it too
//! (receivers without a lane) does the feed hand it to the actor, which holds it until those
//! receivers are done. What a receiver's instance took and never dropped the actor releases
//! when it ends (`Routing::take_remote_taken`).
//!
//! What a lane cannot carry goes through the daemon **for good** (like a local sender after a
//! closed lane), so that the order of every input holds: the end of the output (`Closed`: the
//! daemon tells its receivers the input closed), a lane the daemon closed (a move, a receiver
//! gone for good), a sample the pool could not give. A message that some lanes took before
//! another was found closed goes to the daemon with those receivers named (`served`), which it
//! skips.
//!
//! The feed also counts what went missing on the way (the output's sequence; see
//! [`Streams`]) for every message it sees, those it hands to the daemon included, whose
//! sequence it strips: the daemon does not count them again.

use std::sync::{Arc, Mutex, MutexGuard};

use adora_core::{DataId, NodeId, SHM_THRESHOLD};
use adora_message::{
    daemon_to_daemon::{RemoteKind, Sequence},
    stats::RemoteDropReason,
    DataRef, LaneEntry, SegmentFile, SharedRef,
};
use adora_shm::{Bell, Lane, Pushed, SamplePool, SampleToken, LANE_SLOT_BYTES};

use super::{links::Streams, Payload};

/// Messages gone missing before one, by reason (see `links::missing_before`).
pub(crate) type Missing = [(RemoteDropReason, u64); 2];

/// One local input fed by a remote output.
pub(crate) struct FeedLane {
    pub receiver: NodeId,
    pub input: DataId,
    pub lane: Arc<Lane>,
    /// The receiver's bell (the daemon's own descriptor of it).
    pub bell: Option<Arc<Bell>>,
    /// The lane's holder bit in the samples of this feed (the receiver's `InputLaneRef::bit`)
    /// and its number in the daemon's pool (for `SamplePool::release_taken`).
    pub holder: (u32, u32),
    /// The number of the last entry the remote sender pushed into any lane of this receiver
    /// (shared by the feeds of all its outputs).
    pub seq: Arc<Mutex<u64>>,
}

/// Where a message went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fed {
    /// Every lane took it.
    Lanes,
    /// The daemon delivers it, to its local receivers but those named.
    Daemon { served: Vec<(NodeId, DataId)> },
    /// Copied into the daemon's pool; the lanes of `served` took its handle (they hold it
    /// through its holder words): the daemon delivers it to its other local receivers.
    Shared {
        shared: SharedRef,
        served: Vec<(NodeId, DataId)>,
    },
}

/// What [`LaneFeed::feed`] did with a message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub fed: Fed,
    /// Messages that went missing before it (`None`: it had no sequence).
    pub missing: Option<Missing>,
}

/// The daemon's pool of copies of remote messages (4 KiB and more), shared by the actor and the
/// feeds. A sample is reused once its lanes' receivers dropped it (holder words) and the actor
/// released it (every receiver it delivered the sample to dropped it).
#[derive(Clone)]
pub(crate) struct RemotePool(Arc<Mutex<SamplePool>>);

impl RemotePool {
    /// A pool whose segments are named `{prefix}N`.
    pub fn new(prefix: String) -> Self {
        RemotePool(Arc::new(Mutex::new(SamplePool::new(prefix))))
    }

    fn lock(&self) -> MutexGuard<'_, SamplePool> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies `payload` into a sample (the pool is not held during the copy); `None`, with a
    /// warning, when there is no shared memory for it.
    pub fn copy(&self, payload: &Payload) -> Option<SharedRef> {
        let allocated = self.lock().allocate(payload.len());
        let mut sample = match allocated {
            Ok(sample) => sample,
            Err(e) => {
                tracing::warn!("no shared memory for a remote message ({e}); delivering it inline");
                return None;
            }
        };
        payload.copy_to(&mut sample);
        let handle = self.lock().send(sample);
        Some(SharedRef {
            os_id: handle.os_id,
            len: handle.len,
            token: handle.token.0,
            file: SegmentFile {
                dev: handle.file.dev,
                ino: handle.file.ino,
            },
        })
    }

    /// The actor is done with these samples (the receivers it delivered them to dropped them).
    pub fn release(&self, tokens: impl IntoIterator<Item = u64>) {
        let mut pool = self.lock();
        for token in tokens {
            pool.release(SampleToken(token));
        }
    }

    /// Receivers' instances ended: `(lane number, position)` — what each lane handed out before
    /// the position is no longer held by it (`SamplePool::release_taken`).
    pub fn release_taken(&self, taken: impl IntoIterator<Item = (u32, u64)>) {
        let mut pool = self.lock();
        for (lane, before) in taken {
            pool.release_taken(lane, before);
        }
    }

    /// Samples somebody still holds (reclaims the others first).
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight()
    }
}

/// The lanes fed by one subscribed output (see the module's documentation).
pub(crate) struct LaneFeed {
    state: Mutex<FeedState>,
}

struct FeedState {
    lanes: Vec<FeedLane>,
    pool: RemotePool,
    /// Local receivers without a lane (an `input_timeout`, a long queue) get every message
    /// from the daemon: what the lanes took goes there too, with them named.
    daemon_too: bool,
    streams: Streams,
    /// Everything goes through the daemon from now on.
    off: bool,
    /// The entry being pushed, encoded (its memory kept from one message to the next).
    encoded: Vec<u8>,
}

impl LaneFeed {
    pub fn new(lanes: Vec<FeedLane>, daemon_too: bool, pool: RemotePool) -> Self {
        LaneFeed {
            state: Mutex::new(FeedState {
                off: lanes.is_empty(),
                lanes,
                pool,
                daemon_too,
                streams: Streams::default(),
                encoded: Vec::new(),
            }),
        }
    }

    /// How many lanes it feeds.
    pub fn lanes(&self) -> usize {
        self.state().lanes.len()
    }

    fn state(&self) -> MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts what went missing before this message and writes it into the lanes if they can
    /// take it.
    pub fn feed(
        &self,
        kind: &RemoteKind,
        sequence: Option<Sequence>,
        payload: &Payload,
    ) -> Outcome {
        let mut state = self.state();
        let closed = matches!(kind, RemoteKind::Closed);
        let missing = sequence.map(|now| state.streams.see(now, closed));
        let fed = state.push(kind, payload);
        Outcome { fed, missing }
    }
}

impl FeedState {
    fn push(&mut self, kind: &RemoteKind, payload: &Payload) -> Fed {
        let daemon = Fed::Daemon { served: Vec::new() };
        if self.off {
            return daemon;
        }
        let data = match kind {
            RemoteKind::Data { .. } if payload.len() < SHM_THRESHOLD => {
                Some(DataRef::Inline(payload.to_vec()))
            }
            RemoteKind::Data { .. } => self.pool.copy(payload).map(DataRef::Shared),
            RemoteKind::Closed => None,
        };
        let (RemoteKind::Data { metadata }, Some(data)) = (kind, data) else {
            self.off = true;
            return daemon;
        };
        let entry = LaneEntry {
            metadata: metadata.clone(),
            data,
        };
        let mut encoded = std::mem::take(&mut self.encoded);
        let fits = entry.encode_into(&mut encoded).is_ok() && encoded.len() <= LANE_SLOT_BYTES;
        let data = entry.data;
        if !fits {
            self.encoded = encoded;
            // Not for a lane: the daemon delivers it (the sample it is in, if any).
            self.off = true;
            return match data {
                DataRef::Shared(shared) => Fed::Shared {
                    shared,
                    served: Vec::new(),
                },
                DataRef::Inline(_) => daemon,
            };
        }
        let token = match &data {
            DataRef::Shared(shared) => Some(SampleToken(shared.token)),
            DataRef::Inline(_) => None,
        };
        let served = self.push_entry(&encoded, token);
        self.encoded = encoded;
        let daemon_too = self.off || self.daemon_too;
        match data {
            DataRef::Shared(shared) if daemon_too => Fed::Shared { shared, served },
            DataRef::Shared(_) => {
                // Held by its lanes alone: back to the pool once their receivers dropped it.
                if let Some(t) = token {
                    self.pool.lock().lanes_only(t);
                }
                Fed::Lanes
            }
            DataRef::Inline(_) if daemon_too => Fed::Daemon { served },
            DataRef::Inline(_) => Fed::Lanes,
        }
    }

    /// Pushes `entry` (with the sample `token`, if shared) into every lane; returns the inputs
    /// whose lanes took it. A lane holds the sample (its holder bit) while the entry is queued
    /// or taken and not dropped.
    fn push_entry(&mut self, entry: &[u8], token: Option<SampleToken>) -> Vec<(NodeId, DataId)> {
        // Locked only for shared samples: this one's, or an evicted entry's (also when this one
        // is inline).
        let mut guard = None;
        let mut served = Vec::with_capacity(self.lanes.len());
        for l in &self.lanes {
            let (bit, number) = l.holder;
            if let Some(t) = token {
                locked(&mut guard, &self.pool).hold_in_lane(t, bit);
            }
            let mut seq = l.seq.lock().unwrap_or_else(|e| e.into_inner());
            match l.lane.push(entry, token.map(|t| t.0), *seq + 1) {
                Pushed::Queued { wake, evicted, at } => {
                    *seq += 1;
                    if let Some(t) = token {
                        locked(&mut guard, &self.pool).pushed_to_lane(t, (number, bit), at);
                    }
                    // The oldest entry made room: its sample is not this lane's any more.
                    if let Some(Some(old)) = evicted {
                        locked(&mut guard, &self.pool).release_lane(SampleToken(old), bit);
                    }
                    if let (true, Some(bell)) = (wake, &l.bell) {
                        if let Err(e) = bell.ring() {
                            tracing::debug!("{e}");
                        }
                    }
                    served.push((l.receiver.clone(), l.input.clone()));
                }
                Pushed::Closed | Pushed::TooLarge => {
                    if let Some(t) = token {
                        locked(&mut guard, &self.pool).release_lane(t, bit);
                    }
                    self.off = true;
                }
            }
        }
        served
    }
}

/// `pool`, locked on first use and kept locked while `guard` lives.
fn locked<'a, 'p>(
    guard: &'a mut Option<MutexGuard<'p, SamplePool>>,
    pool: &'p RemotePool,
) -> &'a mut SamplePool {
    guard.get_or_insert_with(|| pool.lock())
}

#[cfg(test)]
pub(super) mod tests {
    use std::{io::Read, os::unix::fs::OpenOptionsExt};

    use adora_message::Metadata;
    use adora_shm::Entry;
    use zenoh::bytes::ZBytes;

    use super::*;

    /// Removes the test's segments and bells, also when it panics.
    struct Segments(String);

    impl Drop for Segments {
        fn drop(&mut self) {
            let _ = adora_shm::unlink_all(&self.0);
        }
    }

    fn message(byte: u8, len: usize) -> (RemoteKind, Payload) {
        let metadata = Metadata::new(uhlc::HLC::default().new_timestamp());
        (
            RemoteKind::Data { metadata },
            Payload(ZBytes::from(vec![byte; len])),
        )
    }

    fn sequence(seq: u64, dropped: u64) -> Option<Sequence> {
        Some(Sequence {
            stream: 7,
            seq,
            dropped,
        })
    }

    /// What the lane holds: (sender's number, first payload byte, payload length), the payload
    /// inline or in a shared sample.
    pub(crate) fn taken(lane: &Lane) -> Vec<(u64, u8, usize)> {
        taken_and_dropped(lane, None)
    }

    /// The same, and with `bit`, its receiver drops the samples (clears its holder bit).
    fn taken_and_dropped(lane: &Lane, bit: Option<u32>) -> Vec<(u64, u8, usize)> {
        let mut entries: Vec<Entry> = Vec::new();
        lane.pop_all(&mut entries);
        let mut regions = adora_shm::RegionCache::default();
        entries
            .into_iter()
            .map(|e| {
                let entry = LaneEntry::decode(&e.bytes).expect("a lane entry");
                let bytes = match entry.data {
                    DataRef::Inline(bytes) => bytes,
                    DataRef::Shared(shared) => {
                        assert_eq!(e.token, Some(shared.token), "the lane holds its token");
                        let file = adora_shm::FileId {
                            dev: shared.file.dev,
                            ino: shared.file.ino,
                        };
                        let region = regions.get_file(&shared.os_id, file).expect("the sample");
                        if let Some(bit) = bit {
                            adora_shm::release_lane(&region, bit);
                        }
                        region.as_slice()[..shared.len].to_vec()
                    }
                };
                (e.seq, bytes.first().copied().unwrap_or(0), bytes.len())
            })
            .collect()
    }

    pub(crate) struct Fixture {
        _segments: Segments,
        pub lanes: Vec<Arc<Lane>>,
        /// The receivers' end of the bell (read: how often it rang).
        bell: std::fs::File,
        pub feed: LaneFeed,
        pool: RemotePool,
    }

    /// A feed of `inputs` lanes of 4 entries, all of receiver `sink`, one bell.
    pub(crate) fn fixture(inputs: usize) -> Fixture {
        fixture_with(inputs, false)
    }

    /// The same, `daemon_too`: another local receiver has no lane.
    fn fixture_with(inputs: usize, daemon_too: bool) -> Fixture {
        let prefix = format!("adora-feed-test-{}", uuid::Uuid::new_v4().simple());
        let segments = Segments(prefix.clone());
        let path = Bell::path(&format!("{prefix}~bell"));
        Bell::create(&path).expect("bell");
        let bell = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&path)
            .expect("the bell's reading end");
        let seq = Arc::new(Mutex::new(0));
        let lanes: Vec<Arc<Lane>> = (0..inputs)
            .map(|i| Arc::new(Lane::create(&format!("{prefix}~lane-{i}"), 4).expect("lane")))
            .collect();
        let fed = lanes
            .iter()
            .enumerate()
            .map(|(i, lane)| FeedLane {
                receiver: "sink".into(),
                input: format!("in{i}").as_str().into(),
                lane: lane.clone(),
                bell: Some(Arc::new(Bell::ringer(&path).expect("ringer"))),
                seq: seq.clone(),
                holder: (i as u32, i as u32),
            })
            .collect();
        let pool = RemotePool::new(format!("{prefix}~remote-"));
        Fixture {
            _segments: segments,
            lanes,
            bell,
            feed: LaneFeed::new(fed, daemon_too, pool.clone()),
            pool,
        }
    }

    fn rings(bell: &mut std::fs::File) -> usize {
        let mut buf = [0u8; 64];
        bell.read(&mut buf).unwrap_or(0)
    }

    fn lanes(outcome: Outcome) -> Option<Missing> {
        assert_eq!(outcome.fed, Fed::Lanes);
        outcome.missing
    }

    #[test]
    fn small_messages_go_into_the_lanes_and_large_ones_in_a_sample_of_the_pool() {
        let mut f = fixture(1);
        let (kind, payload) = message(1, 8);
        assert_eq!(
            lanes(f.feed.feed(&kind, sequence(0, 0), &payload)),
            Some(none())
        );
        // The receiver sleeps: the next message rings its bell, once.
        f.lanes[0].set_waiting();
        let (kind, payload) = message(2, 4095);
        lanes(f.feed.feed(&kind, sequence(1, 0), &payload));
        assert_eq!(rings(&mut f.bell), 1);
        // Two missing before 4: one dropped by the sending daemon, one lost on the way.
        let (kind, payload) = message(3, 100);
        let missing = lanes(f.feed.feed(&kind, sequence(4, 1), &payload));
        assert_eq!(
            missing,
            Some([
                (RemoteDropReason::SenderBacklog, 1),
                (RemoteDropReason::Link, 1)
            ])
        );
        assert_eq!(taken(&f.lanes[0]), [(1, 1, 8), (2, 2, 4095), (3, 3, 100)]);

        // 4 KiB and more: copied once into the daemon's pool, the lane gets its handle and
        // holds it (its holder bit) until the receiver drops it; the daemon is not told.
        let (kind, payload) = message(4, 64 << 10);
        lanes(f.feed.feed(&kind, sequence(5, 1), &payload));
        assert_eq!(f.pool.in_flight(), 1);
        // Small ones after it still take the lane.
        let (kind, payload) = message(5, 8);
        lanes(f.feed.feed(&kind, sequence(6, 1), &payload));
        assert_eq!(taken(&f.lanes[0]), [(4, 4, 64 << 10), (5, 5, 8)]);
        assert_eq!(rings(&mut f.bell), 0);
        assert_eq!(f.pool.in_flight(), 1, "taken, not dropped yet");
    }

    #[test]
    fn a_sample_goes_back_to_the_pool_once_every_lane_let_go_of_it() {
        let f = fixture(2);
        let (kind, payload) = message(1, 4096);
        lanes(f.feed.feed(&kind, None, &payload));
        // Both lanes hold it: the first receiver's drop is not enough.
        taken_and_dropped(&f.lanes[0], Some(0));
        assert_eq!(f.pool.in_flight(), 1);
        taken_and_dropped(&f.lanes[1], Some(1));
        assert_eq!(f.pool.in_flight(), 0);
        // Reused for the next one: no new segment.
        let segments = || {
            adora_shm::list_segments(&f._segments.0)
                .expect("listed")
                .len()
        };
        let before = segments();
        lanes(f.feed.feed(&kind, None, &payload));
        assert_eq!(segments(), before);
    }

    #[test]
    fn a_full_lane_lets_go_of_the_samples_it_drops() {
        let f = fixture(1);
        for n in 0..6 {
            let (kind, payload) = message(n, 4096);
            lanes(f.feed.feed(&kind, None, &payload));
        }
        // The lane holds 4: the fifth and sixth dropped the first two, whose samples are free.
        assert_eq!(f.pool.in_flight(), 4);
        // Small messages that drop large ones let go of them too.
        for n in 0..3 {
            let (kind, payload) = message(n, 8);
            lanes(f.feed.feed(&kind, None, &payload));
        }
        assert_eq!(f.pool.in_flight(), 1);
        let seqs: Vec<u64> = taken(&f.lanes[0]).iter().map(|t| t.0).collect();
        assert_eq!(seqs, [6, 7, 8, 9]);
    }

    #[test]
    fn what_an_ended_receiver_took_goes_back_and_what_its_lane_queues_stays() {
        let f = fixture(1);
        let (kind, payload) = message(1, 4096);
        lanes(f.feed.feed(&kind, None, &payload));
        lanes(f.feed.feed(&kind, None, &payload));
        assert_eq!(taken(&f.lanes[0]).len(), 2);
        lanes(f.feed.feed(&kind, None, &payload));
        // The receiver died holding the two it took; the third waits for its next instance.
        let before = f.lanes[0].queued_from().expect("not locked");
        f.pool.release_taken([(0, before)]);
        assert_eq!(f.pool.in_flight(), 1);
        // Gone for good: everything.
        f.pool.release_taken([(0, u64::MAX)]);
        assert_eq!(f.pool.in_flight(), 0);
    }

    #[test]
    fn with_a_receiver_without_a_lane_the_daemon_holds_large_ones_too() {
        let f = fixture_with(1, true);
        let (kind, payload) = message(1, 4096);
        let outcome = f.feed.feed(&kind, None, &payload);
        let Fed::Shared { shared, served } = outcome.fed else {
            panic!("{outcome:?}");
        };
        assert_eq!(served, [("sink".into(), "in0".into())]);
        taken_and_dropped(&f.lanes[0], Some(0));
        assert_eq!(f.pool.in_flight(), 1, "the daemon still delivers it");
        f.pool.release([shared.token]);
        assert_eq!(f.pool.in_flight(), 0);
    }

    #[test]
    fn the_end_of_the_output_goes_to_the_daemon() {
        let f = fixture(1);
        let (kind, payload) = message(1, 8);
        lanes(f.feed.feed(&kind, sequence(0, 0), &payload));
        let end = Payload(ZBytes::from(Vec::<u8>::new()));
        let outcome = f.feed.feed(&RemoteKind::Closed, sequence(3, 3), &end);
        assert_eq!(outcome.fed, Fed::Daemon { served: vec![] });
        // 1 and 2 were dropped by the sending daemon before the end.
        let missing = outcome.missing.expect("counted");
        assert_eq!(missing[0], (RemoteDropReason::SenderBacklog, 2));
        assert_eq!(taken(&f.lanes[0]), [(1, 1, 8)]);
        // Everything after it goes to the daemon (it closed the input).
        let (kind, payload) = message(2, 8);
        let outcome = f.feed.feed(&kind, None, &payload);
        assert_eq!(outcome.fed, Fed::Daemon { served: vec![] });
    }

    #[test]
    fn a_message_some_lanes_took_before_one_was_closed_names_them_for_the_daemon() {
        let f = fixture(3);
        let (kind, payload) = message(1, 8);
        assert_eq!(lanes(f.feed.feed(&kind, None, &payload)), None);
        // A move began: the daemon closed the lane of `in1`.
        f.lanes[1].close();
        let (kind, payload) = message(2, 8);
        let served = vec![("sink".into(), "in0".into()), ("sink".into(), "in2".into())];
        let outcome = f.feed.feed(&kind, None, &payload);
        assert_eq!(outcome.fed, Fed::Daemon { served });
        // One number per entry across the receiver's lanes, none for the closed one.
        assert_eq!(taken(&f.lanes[0]), [(1, 1, 8), (4, 2, 8)]);
        assert_eq!(taken(&f.lanes[1]), [(2, 1, 8)]);
        assert_eq!(taken(&f.lanes[2]), [(3, 1, 8), (5, 2, 8)]);
        // From then on, all of it through the daemon, large ones uncopied.
        for size in [8, 64 << 10] {
            let (kind, payload) = message(3, size);
            let outcome = f.feed.feed(&kind, None, &payload);
            assert_eq!(outcome.fed, Fed::Daemon { served: vec![] });
        }
        assert!(f.lanes.iter().all(|l| !l.has_entries()));
    }

    #[test]
    fn with_a_receiver_without_a_lane_the_daemon_gets_every_message_too() {
        let f = fixture_with(1, true);
        let served = vec![("sink".into(), "in0".into())];
        for n in 0..3 {
            let (kind, payload) = message(n, 8);
            let outcome = f.feed.feed(&kind, None, &payload);
            assert_eq!(
                outcome.fed,
                Fed::Daemon {
                    served: served.clone()
                }
            );
        }
        assert_eq!(taken(&f.lanes[0]), [(1, 0, 8), (2, 1, 8), (3, 2, 8)]);
    }

    fn none() -> Missing {
        [
            (RemoteDropReason::SenderBacklog, 0),
            (RemoteDropReason::Link, 0),
        ]
    }
}
