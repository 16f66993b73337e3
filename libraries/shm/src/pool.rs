//! The sender side: a pool of shared-memory regions that are written once, sent as a handle and
//! reused once every receiver has dropped them.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use crate::holders::{self, HOLDERS_BYTES};
use crate::region::{unlink_existing, FileId, ShmRegion};
use crate::{Error, Result};

/// New regions are created with a size rounded up to a multiple of this (one page on most Linux
/// machines), so that samples of slightly different lengths can share regions.
pub const REGION_SIZE_GRANULE: usize = 4096;

/// A free region is reused for a sample only if it is at most this many times the (rounded)
/// sample length; a much larger region would waste memory, so a new one is created instead.
pub const MAX_REUSE_OVERSIZE: usize = 4;

/// Most free regions a pool keeps mapped for reuse; beyond it the oldest free one is unlinked.
pub const MAX_FREE_REGIONS: usize = 16;

/// Most bytes of free regions a pool keeps for reuse; beyond it the oldest free ones are
/// unlinked. A single region larger than this is unlinked as soon as it is free.
pub const MAX_FREE_BYTES: usize = 256 * 1024 * 1024;

/// How many names a pool tries when creating a region before giving up: names taken by
/// leftovers (e.g. of a previous run of the same node) are skipped.
pub const MAX_CREATE_ATTEMPTS: usize = 64;

/// Identifies one in-flight sample. The high 32 bits are a random per-process salt and the low
/// 32 bits a per-process counter, so tokens from different nodes differ with high probability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SampleToken(pub u64);

impl SampleToken {
    /// A token not handed out before by this process (until the 32-bit counter wraps).
    fn next() -> SampleToken {
        static SALT: OnceLock<u32> = OnceLock::new();
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let salt = *SALT.get_or_init(process_salt);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        SampleToken((u64::from(salt) << 32) | u64::from(count))
    }
}

/// 32 random bits from the kernel, or (if /dev/urandom is unreadable) a mix of pid and time.
fn process_salt() -> u32 {
    let mut bytes = [0u8; 4];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_ok() {
        return u32::from_ne_bytes(bytes);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Fold the 128-bit time and mix in the pid so two processes started together differ.
    let folded = (nanos as u64) ^ ((nanos >> 64) as u64);
    let mixed = (folded ^ u64::from(std::process::id()).rotate_left(32))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 32) as u32
}

/// What travels on the wire for a sample: enough for a receiver to map and read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleHandle {
    /// Name of the shared-memory segment holding the payload.
    pub os_id: String,
    /// Payload length in bytes (the segment may be larger).
    pub len: usize,
    /// Identifies this sample until the daemon reports it dropped by every receiver.
    pub token: SampleToken,
    /// The file behind `os_id`, for [`crate::RegionCache::get_file`].
    pub file: FileId,
}

/// The free regions of a pool, shared (weakly) with its unsent samples so that dropping a
/// [`SampleMut`] can return its region. Unlinks every region it still holds when dropped.
#[derive(Default)]
struct FreeRegions {
    /// Oldest freed first.
    regions: VecDeque<ShmRegion>,
    bytes: usize,
}

impl FreeRegions {
    /// Adds a region for reuse, unlinking the oldest ones beyond the limits.
    fn push(&mut self, region: ShmRegion) {
        if region.size() > MAX_FREE_BYTES {
            discard(region);
            return;
        }
        self.bytes += region.size();
        self.regions.push_back(region);
        while self.regions.len() > MAX_FREE_REGIONS || self.bytes > MAX_FREE_BYTES {
            let Some(oldest) = self.regions.pop_front() else {
                break;
            };
            self.bytes -= oldest.size();
            discard(oldest);
        }
    }

    /// Removes and returns the smallest free region that can hold `len` bytes without wasting
    /// more than [`MAX_REUSE_OVERSIZE`] times the space. Among equal sizes the most recently
    /// freed one wins: its pages are the most likely to be warm.
    fn take_fitting(&mut self, len: usize) -> Option<ShmRegion> {
        let max_size = region_size_for(len).saturating_mul(MAX_REUSE_OVERSIZE);
        let (index, _) = self
            .regions
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, r)| r.size() >= len.saturating_add(HOLDERS_BYTES) && r.size() <= max_size)
            .min_by_key(|(_, r)| r.size())?;
        let region = self.regions.remove(index)?;
        self.bytes -= region.size();
        Some(region)
    }
}

impl Drop for FreeRegions {
    fn drop(&mut self) {
        for region in self.regions.drain(..) {
            discard(region);
        }
    }
}

/// Unmaps and unlinks a region that no receiver can still be handed.
fn discard(region: ShmRegion) {
    let os_id = region.os_id().to_owned();
    drop(region);
    // Nothing useful to do on failure: the daemon removes leftovers by prefix when the node ends.
    let _ = unlink_existing(&os_id);
}

/// Size of a new region for a `len`-byte sample and its holder words: rounded up to
/// [`REGION_SIZE_GRANULE`].
fn region_size_for(len: usize) -> usize {
    let len = len.saturating_add(HOLDERS_BYTES);
    len.checked_next_multiple_of(REGION_SIZE_GRANULE)
        .unwrap_or(len)
}

fn lock(free: &Mutex<FreeRegions>) -> MutexGuard<'_, FreeRegions> {
    // Every mutation leaves the list consistent, so a panic elsewhere does not invalidate it.
    free.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sender-side pool of one node. Creates segments named `{prefix}{counter}`.
///
/// Dropping the pool unlinks its free regions; in-flight ones are only unmapped, because
/// receivers may still open them (the daemon removes them by prefix when the node ends).
pub struct SamplePool {
    prefix: String,
    next_id: u64,
    free: Arc<Mutex<FreeRegions>>,
    in_flight: HashMap<SampleToken, InFlight>,
}

/// A sent sample: its region and where lanes took it.
struct InFlight {
    region: ShmRegion,
    /// (lane, holder bit, position in the lane) of each lane that took it (see
    /// [`SamplePool::pushed_to_lane`]).
    lanes: Vec<(u32, u32, u64)>,
}

impl std::fmt::Debug for SamplePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamplePool")
            .field("prefix", &self.prefix)
            .field("in_flight", &self.in_flight.len())
            .field("free_regions", &self.free_regions())
            .finish()
    }
}

impl SamplePool {
    /// An empty pool; no segment is created until the first [`allocate`](Self::allocate).
    pub fn new(prefix: impl Into<String>) -> SamplePool {
        SamplePool {
            prefix: prefix.into(),
            next_id: 0,
            free: Arc::default(),
            in_flight: HashMap::new(),
        }
    }

    /// A writable sample of exactly `len` bytes. Reuses the smallest free region that fits (see
    /// [`MAX_REUSE_OVERSIZE`]) before creating a new segment. The initial content is unspecified
    /// (a reused region still holds an earlier payload).
    pub fn allocate(&mut self, len: usize) -> Result<SampleMut> {
        let mut reused = lock(&self.free).take_fitting(len);
        if reused.is_none() && self.reclaim() > 0 {
            reused = lock(&self.free).take_fitting(len);
        }
        let region = match reused {
            Some(region) => region,
            None => self.create_region(region_size_for(len))?,
        };
        Ok(SampleMut {
            region: Some(region),
            len,
            free: Arc::downgrade(&self.free),
        })
    }

    /// Creates a segment under the next unused name.
    fn create_region(&mut self, size: usize) -> Result<ShmRegion> {
        for _ in 0..MAX_CREATE_ATTEMPTS {
            let os_id = format!("{}{}", self.prefix, self.next_id);
            self.next_id += 1;
            match ShmRegion::create(&os_id, size) {
                Err(Error::Create {
                    source: shared_memory::ShmemError::MappingIdExists,
                    ..
                }) => {} // a leftover holds this name: try the next one
                other => return other,
            }
        }
        Err(Error::NamesExhausted {
            prefix: self.prefix.clone(),
        })
    }

    /// Marks `sample` as sent: its region is kept in flight under a new token until
    /// [`release`](Self::release)d, and the handle to put on the wire is returned.
    ///
    /// A sample allocated from another pool is adopted by this one.
    pub fn send(&mut self, mut sample: SampleMut) -> SampleHandle {
        let region = sample
            .region
            .take()
            .expect("a SampleMut holds its region until it is sent or dropped");
        let token = SampleToken::next();
        let handle = SampleHandle {
            os_id: region.os_id().to_owned(),
            len: sample.len,
            token,
            file: region.file_id(),
        };
        holders::reset(&region, token.0);
        let lanes = Vec::new();
        self.in_flight.insert(token, InFlight { region, lanes });
        handle
    }

    /// The daemon is done with `token` (every receiver it handed the sample to dropped it): its
    /// region becomes free for reuse once no lane holds it either. Returns false (and does
    /// nothing) for tokens that are not in flight in this pool.
    pub fn release(&mut self, token: SampleToken) -> bool {
        let Some(sample) = self.in_flight.get(&token) else {
            return false;
        };
        holders::release_others(&sample.region);
        if holders::is_released(&sample.region) {
            self.free_now(token);
        }
        true
    }

    /// In-flight `token` goes out on the lanes of output number `output` (see
    /// [`holders`](crate::holders)).
    pub fn for_output(&mut self, token: SampleToken, output: u32) {
        if let Some(sample) = self.in_flight.get(&token) {
            holders::set_output(&sample.region, output);
        }
    }

    /// Lane `lane` (holder bit `bit`) is about to take in-flight `token`: it holds the sample
    /// until its receiver drops it. Call before pushing the handle into the lane.
    pub fn hold_in_lane(&mut self, token: SampleToken, bit: u32) {
        if let Some(sample) = self.in_flight.get(&token) {
            holders::hold_lane(&sample.region, bit);
        }
    }

    /// Lane `lane` took `token` at `position` (its [`Pushed::Queued`](crate::Pushed) `at`):
    /// remembered for [`Self::release_taken`].
    pub fn pushed_to_lane(&mut self, token: SampleToken, (lane, bit): (u32, u32), position: u64) {
        if let Some(sample) = self.in_flight.get_mut(&token) {
            sample.lanes.push((lane, bit, position));
        }
    }

    /// The lane of holder bit `bit` no longer holds `token` (the push failed, or the full lane
    /// evicted the entry).
    pub fn release_lane(&mut self, token: SampleToken, bit: u32) {
        if let Some(sample) = self.in_flight.get_mut(&token) {
            holders::release_lane(&sample.region, bit);
            sample.lanes.retain(|(_, b, _)| *b != bit);
        }
    }

    /// Nobody but the lanes that took `token` holds it: the daemon never sees it.
    pub fn lanes_only(&mut self, token: SampleToken) {
        if let Some(sample) = self.in_flight.get(&token) {
            holders::release_others(&sample.region);
        }
    }

    /// The receiver of lane `lane` ended having taken every entry before `before` (a position):
    /// what it took and never dropped is released. Entries from `before` on are still queued
    /// for its next instance.
    pub fn release_taken(&mut self, lane: u32, before: u64) {
        for sample in self.in_flight.values_mut() {
            sample.lanes.retain(|&(l, bit, at)| {
                let taken = l == lane && at < before;
                if taken {
                    holders::release_lane(&sample.region, bit);
                }
                !taken
            });
        }
    }

    /// Moves every in-flight sample nobody holds any more to the free list; returns how many.
    fn reclaim(&mut self) -> usize {
        let free: Vec<SampleToken> = (self.in_flight.iter())
            .filter(|(_, s)| holders::is_released(&s.region))
            .map(|(t, _)| *t)
            .collect();
        for token in &free {
            self.free_now(*token);
        }
        free.len()
    }

    fn free_now(&mut self, token: SampleToken) {
        if let Some(sample) = self.in_flight.remove(&token) {
            lock(&self.free).push(sample.region);
        }
    }

    /// Number of sent samples somebody still holds.
    pub fn in_flight(&mut self) -> usize {
        self.reclaim();
        self.in_flight.len()
    }

    /// Number of free regions kept for reuse.
    pub fn free_regions(&self) -> usize {
        lock(&self.free).regions.len()
    }
}

/// A writable sample of exactly `len` bytes, backed by a region of its pool.
///
/// Hand it to [`SamplePool::send`] to send it. Dropping it unsent returns its region to the pool's
/// free list (or unlinks the region if the pool is gone).
pub struct SampleMut {
    /// `Some` until taken by [`SamplePool::send`].
    region: Option<ShmRegion>,
    len: usize,
    free: Weak<Mutex<FreeRegions>>,
}

impl std::fmt::Debug for SampleMut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleMut")
            .field("os_id", &self.os_id())
            .field("len", &self.len)
            .finish()
    }
}

impl SampleMut {
    fn region(&self) -> &ShmRegion {
        self.region
            .as_ref()
            .expect("a SampleMut holds its region until it is sent or dropped")
    }

    /// Name of the segment the sample is written into.
    pub fn os_id(&self) -> &str {
        self.region().os_id()
    }

    /// Visible length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the sample has zero length.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Deref for SampleMut {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.region().as_slice()[..self.len]
    }
}

impl DerefMut for SampleMut {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        let region = self
            .region
            .as_mut()
            .expect("a SampleMut holds its region until it is sent or dropped");
        &mut region.as_mut_slice()[..len]
    }
}

impl Drop for SampleMut {
    fn drop(&mut self) {
        let Some(region) = self.region.take() else {
            return; // sent: the pool owns the region now
        };
        match self.free.upgrade() {
            Some(free) => lock(&free).push(region),
            None => discard(region), // never sent, so no receiver can know it
        }
    }
}

#[cfg(test)]
mod tests;
