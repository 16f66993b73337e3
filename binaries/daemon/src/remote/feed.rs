//! Remote messages straight into the receivers' lanes: the subscription's Zenoh callback writes
//! an inline message of another machine's node into the lanes of its local receivers and rings
//! a receiver's bell only when it sleeps, as a local sender would. Neither the subscription task
//! nor the daemon's actor nor the receiver's events connection is on the way.
//!
//! The daemon creates these lanes with the local ones when the dataflow starts (an input from a
//! node on another machine, no `input_timeout`, a `queue_size` a lane holds; see
//! `routing/lanes.rs`), and a [`LaneFeed`] per subscribed output. The receiver reads them like
//! any lane (the remote node is their sender, numbered per receiver across its lanes).
//!
//! What a lane cannot carry goes through the daemon **for good** (like a local sender after a
//! closed lane), so that the order of every input holds: a payload of 4 KiB or more (the daemon
//! copies it into shared memory), the end of the output (`Closed`: the daemon tells its receivers
//! the input closed), a lane the daemon closed (a move, a receiver gone for good). A message that
//! some lanes took before another was found closed goes to the daemon with those receivers
//! named (`served`), which it skips.
//!
//! The feed also counts what went missing on the way (the output's sequence; see
//! [`Streams`]) for every message it sees, those it hands to the daemon included, whose
//! sequence it strips: the daemon does not count them again.

use std::sync::{Arc, Mutex, MutexGuard};

use adora_core::{DataId, NodeId, SHM_THRESHOLD};
use adora_message::{
    daemon_to_daemon::{RemoteKind, Sequence},
    stats::RemoteDropReason,
    DataRef, LaneEntry,
};
use adora_shm::{Bell, Lane, Pushed, LANE_SLOT_BYTES};

use super::{links::Streams, Payload};

/// Messages gone missing before one, by reason (see `links::missing_before`).
pub(crate) type Missing = [(RemoteDropReason, u64); 2];

/// One local input fed by a remote output.
pub(crate) struct FeedLane {
    pub receiver: NodeId,
    pub input: DataId,
    pub lane: Arc<Lane>,
    /// The receiver's bell (`None`: it could not be opened; the receiver finds the message
    /// when it wakes for something else).
    pub bell: Option<Bell>,
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
}

/// The lanes fed by one subscribed output (see the module's documentation).
pub(crate) struct LaneFeed {
    state: Mutex<FeedState>,
}

struct FeedState {
    lanes: Vec<FeedLane>,
    /// Local receivers without a lane (an `input_timeout`, a long queue) get every message
    /// from the daemon: what the lanes took goes there too, with them named.
    daemon_too: bool,
    streams: Streams,
    /// Everything goes through the daemon from now on.
    off: bool,
}

impl LaneFeed {
    pub fn new(lanes: Vec<FeedLane>, daemon_too: bool) -> Self {
        LaneFeed {
            state: Mutex::new(FeedState {
                off: lanes.is_empty(),
                lanes,
                daemon_too,
                streams: Streams::default(),
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
    ) -> (Fed, Option<Missing>) {
        let mut state = self.state();
        let closed = matches!(kind, RemoteKind::Closed);
        let missing = sequence.map(|now| state.streams.see(now, closed));
        (state.push(kind, payload), missing)
    }
}

impl FeedState {
    fn push(&mut self, kind: &RemoteKind, payload: &Payload) -> Fed {
        let daemon = Fed::Daemon { served: Vec::new() };
        if self.off {
            return daemon;
        }
        let entry = match kind {
            RemoteKind::Data { metadata } if payload.len() < SHM_THRESHOLD => LaneEntry {
                metadata: metadata.clone(),
                data: DataRef::Inline(payload.to_vec()),
            }
            .encode()
            .ok()
            .filter(|bytes| bytes.len() <= LANE_SLOT_BYTES),
            _ => None,
        };
        let Some(entry) = entry else {
            self.off = true;
            return daemon;
        };
        let mut served = Vec::with_capacity(self.lanes.len());
        for l in &self.lanes {
            let mut seq = l.seq.lock().unwrap_or_else(|e| e.into_inner());
            match l.lane.push(&entry, None, *seq + 1) {
                Pushed::Queued { wake, .. } => {
                    *seq += 1;
                    if let (true, Some(bell)) = (wake, &l.bell) {
                        if let Err(e) = bell.ring() {
                            tracing::debug!("{e}");
                        }
                    }
                    served.push((l.receiver.clone(), l.input.clone()));
                }
                Pushed::Closed | Pushed::TooLarge => self.off = true,
            }
        }
        if self.off || self.daemon_too {
            Fed::Daemon { served }
        } else {
            Fed::Lanes
        }
    }
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

    /// What the lane holds: (sender's number, first payload byte, payload length).
    pub(crate) fn taken(lane: &Lane) -> Vec<(u64, u8, usize)> {
        let mut entries: Vec<Entry> = Vec::new();
        lane.pop_all(&mut entries);
        entries
            .into_iter()
            .map(|e| {
                let entry = LaneEntry::decode(&e.bytes).expect("a lane entry");
                let DataRef::Inline(bytes) = entry.data else {
                    panic!("a shared sample in a fed lane")
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
                bell: Some(Bell::ringer(&path).expect("ringer")),
                seq: seq.clone(),
            })
            .collect();
        Fixture {
            _segments: segments,
            lanes,
            bell,
            feed: LaneFeed::new(fed, daemon_too),
        }
    }

    fn rings(bell: &mut std::fs::File) -> usize {
        let mut buf = [0u8; 64];
        bell.read(&mut buf).unwrap_or(0)
    }

    #[test]
    fn small_messages_go_into_the_lanes_and_the_rest_to_the_daemon_for_good() {
        let mut f = fixture(1);
        let (kind, payload) = message(1, 8);
        assert_eq!(
            f.feed.feed(&kind, sequence(0, 0), &payload),
            (Fed::Lanes, Some(none()))
        );
        // The receiver sleeps: the next message rings its bell, once.
        f.lanes[0].set_waiting();
        let (kind, payload) = message(2, 4095);
        assert_eq!(f.feed.feed(&kind, sequence(1, 0), &payload).0, Fed::Lanes);
        assert_eq!(rings(&mut f.bell), 1);
        // Two missing before 4: one dropped by the sending daemon, one lost on the way.
        let (kind, payload) = message(3, 100);
        let (fed, missing) = f.feed.feed(&kind, sequence(4, 1), &payload);
        assert_eq!(fed, Fed::Lanes);
        assert_eq!(
            missing,
            Some([
                (RemoteDropReason::SenderBacklog, 1),
                (RemoteDropReason::Link, 1)
            ])
        );
        assert_eq!(taken(&f.lanes[0]), [(1, 1, 8), (2, 2, 4095), (3, 3, 100)]);

        // 4 KiB and more: the daemon copies it into shared memory; it and everything after go
        // through the daemon, so that the input's order holds. Still counted here.
        let (kind, payload) = message(4, 4096);
        let daemon = Fed::Daemon { served: vec![] };
        assert_eq!(
            f.feed.feed(&kind, sequence(5, 1), &payload),
            (daemon, Some(none()))
        );
        let (kind, payload) = message(5, 8);
        let (fed, missing) = f.feed.feed(&kind, sequence(7, 1), &payload);
        assert_eq!(fed, Fed::Daemon { served: vec![] });
        assert_eq!(missing.expect("counted")[1], (RemoteDropReason::Link, 1));
        assert_eq!(taken(&f.lanes[0]), []);
        assert_eq!(rings(&mut f.bell), 0);
    }

    #[test]
    fn the_end_of_the_output_goes_to_the_daemon() {
        let f = fixture(1);
        let (kind, payload) = message(1, 8);
        f.feed.feed(&kind, sequence(0, 0), &payload);
        let end = Payload(ZBytes::from(Vec::<u8>::new()));
        let (fed, missing) = f.feed.feed(&RemoteKind::Closed, sequence(3, 3), &end);
        assert_eq!(fed, Fed::Daemon { served: vec![] });
        // 1 and 2 were dropped by the sending daemon before the end.
        assert_eq!(
            missing.expect("counted")[0],
            (RemoteDropReason::SenderBacklog, 2)
        );
        assert_eq!(taken(&f.lanes[0]), [(1, 1, 8)]);
    }

    #[test]
    fn a_message_some_lanes_took_before_one_was_closed_names_them_for_the_daemon() {
        let f = fixture(3);
        let (kind, payload) = message(1, 8);
        assert_eq!(f.feed.feed(&kind, None, &payload), (Fed::Lanes, None));
        // A move began: the daemon closed the lane of `in1`.
        f.lanes[1].close();
        let (kind, payload) = message(2, 8);
        let served = vec![("sink".into(), "in0".into()), ("sink".into(), "in2".into())];
        assert_eq!(f.feed.feed(&kind, None, &payload).0, Fed::Daemon { served });
        // One number per entry across the receiver's lanes, none for the closed one.
        assert_eq!(taken(&f.lanes[0]), [(1, 1, 8), (4, 2, 8)]);
        assert_eq!(taken(&f.lanes[1]), [(2, 1, 8)]);
        assert_eq!(taken(&f.lanes[2]), [(3, 1, 8), (5, 2, 8)]);
        // From then on, all of it through the daemon.
        let (kind, payload) = message(3, 8);
        assert_eq!(
            f.feed.feed(&kind, None, &payload).0,
            Fed::Daemon { served: vec![] }
        );
        assert!(f.lanes.iter().all(|l| !l.has_entries()));
    }

    #[test]
    fn with_a_receiver_without_a_lane_the_daemon_gets_every_message_too() {
        let f = fixture_with(1, true);
        let served = vec![("sink".into(), "in0".into())];
        for n in 0..3 {
            let (kind, payload) = message(n, 8);
            let fed = f.feed.feed(&kind, None, &payload).0;
            assert_eq!(
                fed,
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
