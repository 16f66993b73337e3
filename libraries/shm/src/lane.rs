//! Lanes: the bounded ring of one local input in shared memory, written by the sending node and
//! read by the receiving node, so that a local message does not pass through the daemon.
//!
//! The daemon creates one lane per local (output → input) edge with [`Lane::create`] and tells
//! both nodes its name. The sender [`Lane::push`]es an encoded message; a full lane drops its
//! oldest entry, counts it and hands it back (its shared sample must be released). The receiver
//! takes everything queued with [`Lane::take_into`] (or [`Lane::pop_all`]). Before sleeping, the
//! receiver sets the lane's *waiting* flag and checks once more; the sender rings the receiver's
//! [`Bell`](crate::Bell) only when it finds that flag set, so a busy receiver costs the sender no
//! system call.
//!
//! An empty lane puts its next entry into its first slot again: a receiver that keeps up finds
//! every entry in the same few cache lines and pages, however deep its queue.
//!
//! A short lock in the lane (the pid of its holder) orders the two sides; a holder that died
//! (`kill -9` mid-write) is detected and its lock taken over. An entry becomes visible only when
//! its write is complete, so a sender killed mid-write never shows a torn message.
//!
//! The daemon [`Lane::close`]s a lane when the edge must go through it again (a tap, a move, a
//! receiver gone for good): the sender then sends that input's messages through the daemon; the
//! receiver still takes what was queued before, so nothing is lost and the order is kept.

use std::{
    ptr,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use crate::{Error, Result, ShmRegion};

/// Largest entry (encoded metadata and inline payload) a lane slot holds.
pub const LANE_SLOT_BYTES: usize = 8192 - SLOT_HEADER;
/// Most entries a lane holds (its input's `queue_size`); longer queues stay on the daemon's path.
pub const LANE_MAX_SLOTS: usize = 4096;

const MAGIC: u64 = u64::from_le_bytes(*b"ADLANE02");
const HEADER: usize = 128;
const SLOT_HEADER: usize = 32;
const SLOT_STRIDE: usize = SLOT_HEADER + LANE_SLOT_BYTES;
/// Lock attempts of the daemon before it gives up (about a millisecond).
const DAEMON_SPINS: u32 = 20_000;
/// Lock attempts between two checks that its holder is still alive.
const SPINS_PER_CHECK: u32 = 2000;

// Header offsets (each field 8-byte aligned; the mapping is page aligned).
const OFF_MAGIC: usize = 0;
const OFF_CAPACITY: usize = 8;
const OFF_LOCK: usize = 16;
const OFF_WAITING: usize = 20;
const OFF_CLOSED: usize = 24;
const OFF_COPY: usize = 28;
const OFF_HEAD: usize = 32;
const OFF_TAIL: usize = 40;
const OFF_DROPPED: usize = 48;
const OFF_DISCARDED: usize = 56;
const OFF_FIRST: usize = 64;

/// Figures of a lane: what went in, what was dropped to make room, what the receiver took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneCounters {
    /// Entries pushed.
    pub pushed: u64,
    /// Entries dropped (oldest first) because the lane was full.
    pub dropped: u64,
    /// Entries the receiver took.
    pub taken: u64,
}

/// What [`Lane::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued. `evicted`: the token of the shared sample of the oldest entry, dropped to make
    /// room (`Some(None)` when that entry had no sample).
    Queued {
        /// The dropped oldest entry, if one was dropped, and its sample token.
        evicted: Option<Option<u64>>,
        /// The receiver is asleep: ring its bell.
        wake: bool,
        /// The entry's position: entries are numbered from 0 as pushed, and those before
        /// [`Lane::queued_from`] are no longer in the lane.
        at: u64,
    },
    /// The daemon closed the lane: send through the daemon from now on.
    Closed,
    /// The entry is larger than a slot.
    TooLarge,
}

/// An entry taken from a lane: the encoded message, the token of its shared sample and the
/// sequence number its sender gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The encoded message.
    pub bytes: Vec<u8>,
    /// The shared sample it refers to, if any.
    pub token: Option<u64>,
    /// The sender's number for it (see [`Lane::push`]).
    pub seq: u64,
}

/// Entries taken by [`Lane::take_into`], kept in one buffer.
#[derive(Debug, Default)]
pub struct Batch {
    bytes: Vec<u8>,
    /// Each entry's place in `bytes`, its sample's token and its sender's number.
    entries: Vec<(std::ops::Range<usize>, Option<u64>, u64)>,
}

impl Batch {
    /// Forgets the entries, keeping the memory for the next ones.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }

    /// The entries, oldest first: the encoded message, its sample's token and its sender's
    /// number (as in [`Entry`]).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Option<u64>, u64)> + '_ {
        (self.entries.iter()).map(|(at, token, seq)| (&self.bytes[at.clone()], *token, *seq))
    }
}

/// One mapping of a lane.
pub struct Lane {
    region: ShmRegion,
    capacity: u64,
    /// This process's id, the lock word of its holds (read once: `getpid` is a system call,
    /// and a lane is not used across a `fork`).
    pid: u32,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("os_id", &self.region.os_id())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// Holds a lane's lock; released on drop.
struct Locked<'a>(&'a Lane);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.0.word32(OFF_LOCK).store(0, Ordering::Release);
    }
}

impl Lane {
    /// Creates a lane of `capacity` entries (at least 1, at most [`LANE_MAX_SLOTS`]).
    pub fn create(os_id: &str, capacity: usize) -> Result<Lane> {
        let capacity = capacity.clamp(1, LANE_MAX_SLOTS);
        // Zero-filled and sparse: a slot costs memory only once it was written.
        let region = ShmRegion::create(os_id, HEADER + capacity * SLOT_STRIDE)?;
        let lane = Lane {
            region,
            capacity: capacity as u64,
            pid: std::process::id(),
        };
        lane.word64(OFF_CAPACITY)
            .store(capacity as u64, Ordering::Relaxed);
        lane.word64(OFF_MAGIC).store(MAGIC, Ordering::Release);
        Ok(lane)
    }

    /// Maps an existing lane.
    pub fn open(os_id: &str) -> Result<Lane> {
        let region = ShmRegion::open(os_id)?;
        let invalid = |reason| Error::InvalidOsId {
            os_id: os_id.to_owned(),
            reason,
        };
        if region.size() < HEADER {
            return Err(invalid("too small to be a lane"));
        }
        let mut lane = Lane {
            region,
            capacity: 0,
            pid: std::process::id(),
        };
        if lane.word64(OFF_MAGIC).load(Ordering::Acquire) != MAGIC {
            return Err(invalid("not a lane"));
        }
        let capacity = lane.word64(OFF_CAPACITY).load(Ordering::Relaxed);
        let fits = (lane.region.size() - HEADER) / SLOT_STRIDE;
        if capacity == 0 || capacity > fits as u64 {
            return Err(invalid("lane capacity does not fit its segment"));
        }
        lane.capacity = capacity;
        Ok(lane)
    }

    /// The segment's name.
    pub fn os_id(&self) -> &str {
        self.region.os_id()
    }

    /// How many entries it holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    fn word64(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset + 8 <= HEADER && offset.is_multiple_of(8));
        // SAFETY: the header lies within the mapping (checked at create/open), the mapping is
        // page aligned so `offset` (a multiple of 8) is aligned for `AtomicU64`, and the memory is
        // only ever accessed atomically through these words, by every process mapping it.
        unsafe { &*(self.region.as_ptr().add(offset) as *const AtomicU64) }
    }

    fn word32(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= HEADER && offset.is_multiple_of(4));
        // SAFETY: as in `word64`, for a 4-byte aligned word of the header.
        unsafe { &*(self.region.as_ptr().add(offset) as *const AtomicU32) }
    }

    /// The slot of entry `seq` (the lock is held). Entries fill the slots in turn from the
    /// position `first` of the header, which an empty lane moves to its next entry
    /// ([`Self::restart_if_empty`]).
    fn slot(&self, seq: u64) -> *mut u8 {
        let first = self.word64(OFF_FIRST).load(Ordering::Relaxed);
        let index = (seq.wrapping_sub(first) % self.capacity) as usize;
        // SAFETY: `index < capacity` and the segment holds `capacity` slots after the header
        // (checked at create/open), so the offset stays within the mapping.
        unsafe { self.region.as_ptr().add(HEADER + index * SLOT_STRIDE) as *mut u8 }
    }

    /// An empty lane puts its next entry (`head`) into the first slot again (the lock is held).
    /// A receiver that keeps up then finds every entry in the same few cache lines and pages,
    /// where walking all the slots of a deep queue would touch a page nobody touched for
    /// `capacity` messages (or never: a page fault on both sides) with every message. No slot
    /// holds an entry then, so a holder killed right after leaves nothing misplaced.
    fn restart_if_empty(&self, head: u64, tail: u64) {
        if head == tail {
            self.word64(OFF_FIRST).store(head, Ordering::Relaxed);
        }
    }

    /// Takes the lock. A holder that no longer exists (killed mid-operation) loses it: every
    /// change it made before becomes visible only through `head`/`tail`, which it had not moved.
    fn lock(&self) -> Locked<'_> {
        loop {
            if let Some(locked) = self.lock_within(u32::MAX) {
                return locked;
            }
        }
    }

    /// [`Self::lock`], giving up after `max_spins` attempts (a holder that is alive but stopped,
    /// for example by a debugger, would block the caller for as long).
    fn lock_within(&self, max_spins: u32) -> Option<Locked<'_>> {
        let me = self.pid;
        let word = self.word32(OFF_LOCK);
        let mut spins = 0u32;
        loop {
            let holder =
                match word.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => return Some(Locked(self)),
                    Err(holder) => holder,
                };
            spins += 1;
            if spins >= max_spins {
                return None;
            }
            if spins.is_multiple_of(SPINS_PER_CHECK)
                && holder != 0
                && holder != me
                && !alive(holder)
            {
                if word
                    .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Some(Locked(self));
                }
            } else if spins.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Queues `entry` (and the token of the shared sample it refers to), dropping the oldest
    /// entry if the lane is full. `seq` travels with it: a sender numbers what it sends to one
    /// receiver across all of that receiver's lanes, so that the receiver can restore the order
    /// between its inputs.
    pub fn push(&self, entry: &[u8], token: Option<u64>, seq: u64) -> Pushed {
        if entry.len() > LANE_SLOT_BYTES {
            return Pushed::TooLarge;
        }
        let evicted = {
            let _lock = self.lock();
            if self.word32(OFF_CLOSED).load(Ordering::Relaxed) != 0 {
                return Pushed::Closed;
            }
            let (head, tail) = self.bounds();
            self.restart_if_empty(head, tail);
            let evicted = (head - tail >= self.capacity).then(|| {
                let (_, token, _) = self.read_slot_header(tail);
                self.word64(OFF_TAIL).store(tail + 1, Ordering::Relaxed);
                self.word64(OFF_DROPPED).fetch_add(1, Ordering::Relaxed);
                token
            });
            self.write_slot(head, entry, (token, seq));
            // Sequentially consistent with the receiver's `waiting` store and its check of
            // `head`: either it sees this entry or this side sees it waiting.
            self.word64(OFF_HEAD).store(head + 1, Ordering::SeqCst);
            (evicted, head)
        };
        let (evicted, at) = evicted;
        let wake = self.word32(OFF_WAITING).load(Ordering::SeqCst) != 0
            && self.word32(OFF_WAITING).swap(0, Ordering::SeqCst) != 0;
        Pushed::Queued { evicted, wake, at }
    }

    fn write_slot(&self, at: u64, entry: &[u8], (token, seq): (Option<u64>, u64)) {
        let slot = self.slot(at);
        let header = slot_header(entry.len(), token, seq);
        // SAFETY: the slot is `SLOT_STRIDE` bytes inside the mapping (`slot`), `entry` fits
        // (`LANE_SLOT_BYTES`), and the lock is held: no other process reads or writes this slot
        // until `head` is advanced past it.
        unsafe {
            ptr::copy_nonoverlapping(header.as_ptr(), slot, SLOT_HEADER);
            ptr::copy_nonoverlapping(entry.as_ptr(), slot.add(SLOT_HEADER), entry.len());
        }
    }

    fn read_slot_header(&self, seq: u64) -> (usize, Option<u64>, u64) {
        let mut header = [0u8; SLOT_HEADER];
        // SAFETY: the slot header lies inside the mapping and the lock is held (see `write_slot`).
        unsafe { ptr::copy_nonoverlapping(self.slot(seq), header.as_mut_ptr(), SLOT_HEADER) };
        parse_slot_header(&header)
    }

    /// Queues `entry`, numbered `seq` (its [`Entry::seq`]), only if the lane has room (nothing
    /// is dropped): `false` when it is full, closed or `entry` is larger than a slot. For a lane
    /// whose entries must never be lost.
    pub fn try_push(&self, entry: &[u8], seq: u64) -> bool {
        if entry.len() > LANE_SLOT_BYTES {
            return false;
        }
        let _lock = self.lock();
        let (head, tail) = self.bounds();
        if self.is_closed() || head - tail >= self.capacity {
            return false;
        }
        self.restart_if_empty(head, tail);
        self.write_slot(head, entry, (None, seq));
        self.word64(OFF_HEAD).store(head + 1, Ordering::SeqCst);
        true
    }

    /// Whether an entry is queued (no lock taken).
    pub fn has_entries(&self) -> bool {
        let head = self.word64(OFF_HEAD).load(Ordering::SeqCst);
        head != self.word64(OFF_TAIL).load(Ordering::SeqCst)
    }

    /// Takes every queued entry, oldest first, appending them to `out`. Returns how many.
    pub fn pop_all(&self, out: &mut Vec<Entry>) -> usize {
        self.take_with(|bytes, token, seq| {
            out.push(Entry {
                bytes: bytes.to_vec(),
                token,
                seq,
            })
        })
    }

    /// Takes every queued entry, oldest first, appending them to `batch`: their bytes go one
    /// after the other into the batch's buffer, which a receiver reuses from one call to the
    /// next (no allocation per entry). Returns how many.
    pub fn take_into(&self, batch: &mut Batch) -> usize {
        self.take_with(|bytes, token, seq| {
            let start = batch.bytes.len();
            batch.bytes.extend_from_slice(bytes);
            batch.entries.push((start..batch.bytes.len(), token, seq));
        })
    }

    /// Hands every queued entry to `f` where it lies (its bytes, its sample's token, its
    /// sender's number), oldest first, with the lane locked, then marks them taken.
    fn take_with(&self, mut f: impl FnMut(&[u8], Option<u64>, u64)) -> usize {
        if !self.has_entries() {
            return 0;
        }
        let _lock = self.lock();
        let (head, tail) = self.bounds();
        for seq in tail..head {
            let (len, token, sender_seq) = self.read_slot_header(seq);
            let len = len.min(LANE_SLOT_BYTES);
            // SAFETY: `len` is at most `LANE_SLOT_BYTES`, so the slice stays inside the slot; the
            // lock is held, so no other process writes this slot while `f` reads it, and the
            // entry was completely written before `head` passed it.
            let bytes = unsafe { std::slice::from_raw_parts(self.slot(seq).add(SLOT_HEADER), len) };
            f(bytes, token, sender_seq);
        }
        self.word64(OFF_TAIL).store(head, Ordering::SeqCst);
        (head - tail) as usize
    }

    /// Removes every queued entry without delivering it (its receiver is gone for good) and
    /// returns their sample tokens; they count neither as taken nor as dropped. `None` when the
    /// lock could not be had within about a millisecond (its holder is alive but stopped).
    pub fn discard_all(&self) -> Option<Vec<u64>> {
        self.queued_samples(true)
    }

    /// The tokens of the shared samples of the queued entries, without taking them (`None` as
    /// for [`Self::discard_all`]).
    pub fn queued_tokens(&self) -> Option<Vec<u64>> {
        self.queued_samples(false)
    }

    /// The daemon's look at the queued entries' samples, removing the entries if `discard`.
    fn queued_samples(&self, discard: bool) -> Option<Vec<u64>> {
        let _lock = self.lock_within(DAEMON_SPINS)?;
        let (head, tail) = self.bounds();
        let tokens = (tail..head)
            .filter_map(|at| self.read_slot_header(at).1)
            .collect();
        if discard {
            self.word64(OFF_DISCARDED)
                .fetch_add(head - tail, Ordering::Relaxed);
            self.word64(OFF_TAIL).store(head, Ordering::SeqCst);
        }
        Some(tokens)
    }

    /// The position of the oldest entry still queued (of the next one pushed, when none is):
    /// every entry before it was taken, dropped or discarded. `None` as for
    /// [`Self::discard_all`].
    pub fn queued_from(&self) -> Option<u64> {
        let _lock = self.lock_within(DAEMON_SPINS)?;
        Some(self.bounds().1)
    }

    /// `head` and `tail`, held to what a lane can be (the lock is held): a process that wrote
    /// garbage into the shared header must not make anyone loop over billions of entries.
    fn bounds(&self) -> (u64, u64) {
        let head = self.word64(OFF_HEAD).load(Ordering::Relaxed);
        let tail = self.word64(OFF_TAIL).load(Ordering::Relaxed);
        let tail = tail.clamp(head.saturating_sub(self.capacity), head);
        (head, tail)
    }

    /// The receiver is about to sleep: from now on a push tells it to wake up. Check
    /// [`Self::has_entries`] after this and before sleeping.
    pub fn set_waiting(&self) {
        self.word32(OFF_WAITING).store(1, Ordering::SeqCst);
    }

    /// The receiver is awake again.
    pub fn clear_waiting(&self) {
        self.word32(OFF_WAITING).store(0, Ordering::Relaxed);
    }

    /// Closes the lane: later pushes return [`Pushed::Closed`]; queued entries can still be taken.
    /// Returns whether it was open.
    pub fn close(&self) -> bool {
        // No lock: a push already past its check completes, as if it had come just before.
        self.word32(OFF_CLOSED).swap(1, Ordering::SeqCst) == 0
    }

    /// Whether the daemon closed the lane.
    pub fn is_closed(&self) -> bool {
        self.word32(OFF_CLOSED).load(Ordering::Acquire) != 0
    }

    /// Asks the sender to send the daemon a copy of every message it pushes here too (`on`), or
    /// no longer (a tap of the output started or ended).
    pub fn want_copy(&self, on: bool) {
        self.word32(OFF_COPY)
            .store(u32::from(on), Ordering::Release);
    }

    /// Whether the daemon wants a copy of every message pushed here.
    pub fn copy_wanted(&self) -> bool {
        self.word32(OFF_COPY).load(Ordering::Acquire) != 0
    }

    /// The lane's figures.
    pub fn counters(&self) -> LaneCounters {
        let pushed = self.word64(OFF_HEAD).load(Ordering::Acquire);
        let tail = self.word64(OFF_TAIL).load(Ordering::Acquire);
        let dropped = self.word64(OFF_DROPPED).load(Ordering::Acquire);
        let discarded = self.word64(OFF_DISCARDED).load(Ordering::Acquire);
        LaneCounters {
            pushed,
            dropped,
            taken: tail.saturating_sub(dropped + discarded),
        }
    }
}

/// A slot's header: length (u32), whether it has a token (u32), the token (u64), the sender's
/// sequence number (u64), 8 bytes reserved.
fn slot_header(len: usize, token: Option<u64>, seq: u64) -> [u8; SLOT_HEADER] {
    let mut header = [0u8; SLOT_HEADER];
    header[..4].copy_from_slice(&(len as u32).to_le_bytes());
    header[4] = u8::from(token.is_some());
    header[8..16].copy_from_slice(&token.unwrap_or(0).to_le_bytes());
    header[16..24].copy_from_slice(&seq.to_le_bytes());
    header
}

fn parse_slot_header(header: &[u8; SLOT_HEADER]) -> (usize, Option<u64>, u64) {
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let token = (header[4] != 0).then_some(word(8));
    (len, token, word(16))
}

/// Whether process `pid` exists (a process we may not signal exists too).
fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

#[cfg(test)]
mod tests;
