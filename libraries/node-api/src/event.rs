//! The event stream: inputs, closed inputs, stop and errors, pulled from the daemon.

use std::{
    collections::{BTreeMap, VecDeque},
    io::BufReader,
    os::{fd::AsFd, unix::net::UnixStream},
    sync::Arc,
    time::{Duration, Instant},
};

use adora_core::DataId;
use adora_message::{
    codec::{read_frame, write_frame},
    daemon_to_node::{DaemonReply, NodeEvent},
    node_to_daemon::NodeRequest,
    DataRef, Metadata,
};
use adora_shm::{FileId, RegionCache, SharedSlice, ShmRegion};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::{
    data::{Data, Release},
    drops::DropReports,
    lanes::InputLanes,
};

/// How long a node with a `poll: spin` input busy-polls its lanes before it sleeps.
const SPIN_FOR: Duration = Duration::from_millis(10);
/// Lane checks between two looks at the events connection (a system call) while spinning.
const SPINS_PER_CHECK: u32 = 512;

/// Read buffer of the events connection (a batch of inline events usually fits).
const READ_BUFFER: usize = 64 * 1024;

/// An event delivered to the node.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A message on an input.
    Input {
        /// The input id.
        id: DataId,
        /// Sender's metadata: timestamp and parameters.
        metadata: Metadata,
        /// The payload.
        data: Data,
    },
    /// The input's sender finished; no more messages on it.
    InputClosed {
        /// The input id.
        id: DataId,
    },
    /// The dataflow is stopping: clean up and return.
    Stop,
    /// A runtime error that concerns this node (for example a shared sample that could not be mapped).
    Error(String),
    /// An upstream node exited and its restart policy restarts it: the inputs it feeds stay open.
    UpstreamRestarted {
        /// The upstream node.
        node: adora_core::NodeId,
        /// This node's inputs it feeds.
        inputs: Vec<DataId>,
    },
    /// An upstream node failed for good; `InputClosed` follows for the inputs it feeds.
    UpstreamFailed {
        /// The upstream node.
        node: adora_core::NodeId,
        /// This node's inputs it feeds.
        inputs: Vec<DataId>,
        /// Why it failed.
        reason: String,
    },
}

/// The stream of events for a node. `recv` blocks until an event arrives and returns `None` once
/// the stream has ended (all inputs closed, or the dataflow stopped).
pub struct EventStream {
    /// Buffered so that a reply is read with one system call (length prefix and body together);
    /// requests are written straight to the socket underneath.
    stream: BufReader<UnixStream>,
    drops: Arc<DropReports>,
    buffered: VecDeque<NodeEvent>,
    drop_counts: BTreeMap<DataId, u64>,
    regions: RegionCache,
    buf: Vec<u8>,
    ended: bool,
    /// A `NextEvents` request was sent and its reply not read yet (a wait that timed out, or
    /// events that came from the lanes meanwhile).
    requested: bool,
    /// The lanes of its local inputs (see `lanes.rs`).
    lanes: InputLanes,
    /// Shared samples taken from lanes that are released through a holder bit (token, bit), in
    /// the order of their events.
    lane_bits: VecDeque<(u64, u32)>,
}

/// What ended a wait for events.
enum Woken {
    /// The daemon's reply can be read.
    Reply,
    /// A lane has entries (or the bell rang).
    Lanes,
    /// The deadline passed.
    Timeout,
}

impl EventStream {
    pub(crate) fn new(
        stream: UnixStream,
        drops: Arc<DropReports>,
        (lanes, errors): (InputLanes, Vec<NodeEvent>),
    ) -> Self {
        Self {
            stream: BufReader::with_capacity(READ_BUFFER, stream),
            drops,
            buffered: errors.into(),
            drop_counts: BTreeMap::new(),
            regions: RegionCache::new(),
            buf: Vec::new(),
            ended: false,
            requested: false,
            lanes,
            lane_bits: VecDeque::new(),
        }
    }

    /// Blocks for the next event; `None` when the stream has ended.
    pub fn recv(&mut self) -> Option<Event> {
        self.next_before(None)
    }

    /// Waits at most `timeout` for the next event: `None` when none came in time or the stream
    /// has ended ([`Self::is_ended`] tells which). A wait that timed out loses nothing: the
    /// events come with a later call.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Event> {
        self.next_before(Some(Instant::now() + timeout))
    }

    /// The next event if one is already here, without waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.recv_timeout(Duration::ZERO)
    }

    /// Whether the stream has ended: no event will come any more.
    pub fn is_ended(&self) -> bool {
        self.ended && self.buffered.is_empty()
    }

    fn next_before(&mut self, deadline: Option<Instant>) -> Option<Event> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                return Some(self.convert(event));
            }
            if (self.lanes).take((&mut self.buffered, &mut self.lane_bits), &self.drops) > 0 {
                continue;
            }
            if self.ended {
                return None;
            }
            if !self.requested {
                self.request();
                continue; // a failed request ended the stream
            }
            match self.wait(deadline) {
                Woken::Reply => self.read_reply(),
                Woken::Lanes => {}
                Woken::Timeout => return None,
            }
        }
    }

    /// Waits for the daemon's reply or an entry in a lane, until `deadline`.
    fn wait(&mut self, deadline: Option<Instant>) -> Woken {
        if !self.stream.buffer().is_empty() {
            return Woken::Reply;
        }
        if self.lanes.bell().is_none() {
            return match deadline {
                None => Woken::Reply, // block in the read
                Some(d) if self.reply_ready(d) => Woken::Reply,
                Some(_) => Woken::Timeout,
            };
        }
        if self.lanes.spins() {
            if let Some(woken) = self.spin(deadline) {
                return woken;
            }
        }
        if !self.lanes.prepare_sleep() {
            return Woken::Lanes;
        }
        let woken = self.poll_both(deadline);
        self.lanes.woke();
        woken
    }

    /// `poll: spin`: busy-polls the lanes (and now and then the events connection) for at most
    /// [`SPIN_FOR`]; `None` when nothing came (sleep then).
    fn spin(&self, deadline: Option<Instant>) -> Option<Woken> {
        let mut until = Instant::now() + SPIN_FOR;
        if let Some(d) = deadline {
            until = until.min(d);
        }
        let mut i = 0u32;
        loop {
            if self.lanes.has_entries() {
                return Some(Woken::Lanes);
            }
            i = i.wrapping_add(1);
            if i.is_multiple_of(SPINS_PER_CHECK) {
                let mut fds = [PollFd::new(
                    self.stream.get_ref().as_fd(),
                    PollFlags::POLLIN,
                )];
                if poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0) {
                    return Some(Woken::Reply);
                }
                if Instant::now() >= until {
                    return None;
                }
            }
            std::hint::spin_loop();
        }
    }

    /// Sleeps on the events connection and the bell.
    fn poll_both(&self, deadline: Option<Instant>) -> Woken {
        let Some(bell) = self.lanes.bell() else {
            return Woken::Reply;
        };
        loop {
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(d) => poll_timeout(d.saturating_duration_since(Instant::now())),
            };
            let mut fds = [
                PollFd::new(self.stream.get_ref().as_fd(), PollFlags::POLLIN),
                PollFd::new(bell.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Ok(0) => return Woken::Timeout,
                Ok(_) => {
                    let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
                    return if ready(&fds[0]) {
                        Woken::Reply
                    } else {
                        Woken::Lanes
                    };
                }
                Err(nix::errno::Errno::EINTR) => continue,
                // Reading reports what is wrong with the socket.
                Err(_) => return Woken::Reply,
            }
        }
    }

    /// How many messages were dropped on `input` because its queue was full (oldest first): its
    /// lane's count plus the daemon's (an input may switch from its lane to the daemon's path).
    pub fn drop_count(&self, input: &DataId) -> u64 {
        self.drop_counts.get(input).copied().unwrap_or(0) + self.lanes.dropped(input)
    }

    /// Asks the daemon for the next events (the reply is read by [`Self::read_reply`]).
    fn request(&mut self) {
        let request = NodeRequest::NextEvents {
            dropped: self.drops.start_waiting(),
        };
        match write_frame(self.stream.get_mut(), &request) {
            Ok(()) => self.requested = true,
            Err(e) => {
                self.fetched(Err(e));
                self.drops.stop_waiting(self.ended);
            }
        }
    }

    /// Whether the reply to the outstanding request can be read now, waiting until `deadline`.
    /// The daemon writes a reply in one piece, so once its first byte is here reading it does
    /// not block for long.
    fn reply_ready(&mut self, deadline: Instant) -> bool {
        if !self.stream.buffer().is_empty() {
            return true;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = poll_timeout(left);
            let mut fds = [PollFd::new(
                self.stream.get_ref().as_fd(),
                PollFlags::POLLIN,
            )];
            match poll(&mut fds, timeout) {
                Ok(0) => return false,
                Ok(_) => return true,
                Err(nix::errno::Errno::EINTR) if !left.is_zero() => continue,
                Err(nix::errno::Errno::EINTR) => return false,
                // Reading reports what is wrong with the socket.
                Err(_) => return true,
            }
        }
    }

    /// Reads the reply to the outstanding request. What the lanes queued comes first: it was
    /// sent before anything the daemon delivers now.
    fn read_reply(&mut self) {
        let reply = read_frame::<DaemonReply>(&mut self.stream, &mut self.buf);
        (self.lanes).take((&mut self.buffered, &mut self.lane_bits), &self.drops);
        self.requested = false;
        self.fetched(reply);
        self.drops.stop_waiting(self.ended);
    }

    fn fetched(&mut self, reply: Result<DaemonReply, adora_message::codec::CodecError>) {
        match reply {
            Ok(DaemonReply::Events {
                events,
                drop_counts,
            }) => {
                self.drop_counts.extend(drop_counts);
                if events.is_empty() {
                    self.ended = true;
                }
                self.buffered.extend(events);
            }
            Ok(other) => {
                self.ended = true;
                self.buffered.push_back(NodeEvent::Error(format!(
                    "protocol error: unexpected reply {other:?}"
                )));
            }
            Err(e) => {
                // The daemon is gone: nothing more will arrive. Tell the node once, then end.
                self.ended = true;
                if !e.is_eof() {
                    self.buffered
                        .push_back(NodeEvent::Error(format!("lost the daemon connection: {e}")));
                }
            }
        }
    }

    /// The holder bit a shared sample taken from a lane is released through (`None`: it came
    /// through the daemon, or from a lane fed from another machine).
    fn lane_bit(&mut self, token: u64) -> Option<u32> {
        let at = self.lane_bits.iter().position(|(t, _)| *t == token)?;
        self.lane_bits.remove(at).map(|(_, bit)| bit)
    }

    fn convert(&mut self, event: NodeEvent) -> Event {
        match event {
            NodeEvent::Input { id, metadata, data } => {
                let data = match data {
                    DataRef::Inline(bytes) => Data::inline(bytes, metadata.type_info.clone()),
                    DataRef::Shared(shared) => {
                        let file = FileId {
                            dev: shared.file.dev,
                            ino: shared.file.ino,
                        };
                        let bit = self.lane_bit(shared.token);
                        let release = |region: &Arc<ShmRegion>| match bit {
                            Some(bit) => Release::Lane {
                                region: region.clone(),
                                bit,
                            },
                            None => Release::Daemon {
                                token: shared.token,
                                drops: self.drops.clone(),
                            },
                        };
                        let slice = (self.regions.get_file(&shared.os_id, file)).and_then(|r| {
                            let release = release(&r);
                            Ok((SharedSlice::new(r, shared.len)?, release))
                        });
                        match slice {
                            Ok((slice, release)) => {
                                Data::shared(slice, release, metadata.type_info.clone())
                            }
                            Err(e) => {
                                if bit.is_none() {
                                    // A lane's sample stays held: it cannot be mapped to
                                    // release it (the dataflow's end removes it).
                                    self.drops.dropped(shared.token);
                                }
                                return Event::Error(format!(
                                    "input `{id}`: cannot map shared sample {}: {e}",
                                    shared.os_id
                                ));
                            }
                        }
                    }
                };
                Event::Input { id, metadata, data }
            }
            NodeEvent::InputClosed { id } => Event::InputClosed { id },
            NodeEvent::Stop => Event::Stop,
            NodeEvent::Error(e) => Event::Error(e),
            NodeEvent::UpstreamRestarted { node, inputs } => {
                Event::UpstreamRestarted { node, inputs }
            }
            NodeEvent::UpstreamFailed {
                node,
                inputs,
                reason,
            } => Event::UpstreamFailed {
                node,
                inputs,
                reason,
            },
        }
    }
}

/// A poll timeout for `left`, rounded up: a wait of 0.3 ms must not become a busy poll of 0 ms.
fn poll_timeout(left: Duration) -> PollTimeout {
    let millis = left.as_micros().div_ceil(1000);
    PollTimeout::try_from(millis.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
}

impl Drop for EventStream {
    fn drop(&mut self) {
        // No `NextEvents` will carry the reports of samples dropped from now on.
        self.drops.flush_for_good();
    }
}

impl Iterator for EventStream {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.recv()
    }
}
