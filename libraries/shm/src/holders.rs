//! Who still holds a sent sample, written in the sample's own region: the last
//! [`HOLDERS_BYTES`] bytes of every region of a [`SamplePool`](crate::SamplePool) are words that
//! the sender and its receivers change atomically, so that a sample read through lanes goes
//! back to its sender's pool without a message to anyone.
//!
//! - `lanes`: bit `i` is set while lane `i` of the sample's output (its place in the sender's
//!   list of that output's lanes) holds the sample: queued in the lane, or taken by the receiver
//!   and not dropped yet. The sender sets it before pushing the handle; the receiver clears it
//!   when it drops the sample ([`release_lane`]); the sender clears it for an entry its full lane
//!   evicted, and for what a receiver's instance took and never dropped (it died: the daemon
//!   tells the sender where that instance stopped taking).
//! - `others`: 1 while the sender has not decided who else holds it, or the daemon holds it
//!   (it routes the sample to receivers without a lane, to a tap, to another machine); the
//!   daemon's release of the token clears it.
//! - `token` and `output`: the token it was sent with and the number of its output (its place
//!   in the sender's `NodeLanes::outputs`), for the daemon when the sender is gone
//!   ([`holders`]).
//!
//! The pool reuses a region once `lanes` and `others` are zero.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ShmRegion;

/// Bytes at the end of each pool region that hold its holder words.
pub const HOLDERS_BYTES: usize = 32;

/// Most lanes that can hold one sample: one bit each in the `lanes` word. An output with more
/// receivers' lanes goes through the daemon.
pub const MAX_LANE_HOLDERS: usize = u64::BITS as usize;

const LANES: usize = 0;
const OTHERS: usize = 1;
const TOKEN: usize = 2;
const OUTPUT: usize = 3;

/// Holder word `i` of `region` (`None`: too small or unaligned, not a pool region). These bytes
/// are outside every payload slice handed out (a sample's `len` leaves room for them, see
/// `SamplePool::allocate`), as [`ShmRegion::word`] requires.
fn word(region: &ShmRegion, i: usize) -> Option<&AtomicU64> {
    if i >= HOLDERS_BYTES / 8 {
        return None;
    }
    region.word(region.size().checked_sub(HOLDERS_BYTES)? + 8 * i)
}

/// What the holder words of a sample say, for the daemon (see [`holders`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holders {
    /// A bit per lane of its output that still holds it.
    pub lanes: u64,
    /// The token it was last sent with.
    pub token: u64,
    /// Its output's number in the sender's `NodeLanes::outputs` (`None`: not sent on lanes).
    pub output: Option<u32>,
}

/// The holder words of `region` (`None`: not a pool region).
pub fn holders(region: &ShmRegion) -> Option<Holders> {
    let load = |i| word(region, i).map(|w| w.load(Ordering::Acquire));
    Some(Holders {
        lanes: load(LANES)?,
        token: load(TOKEN)?,
        output: u32::try_from(load(OUTPUT)?).ok(),
    })
}

/// A receiver is done with a sample it took from the lane of holder bit `bit` (or the daemon,
/// for a receiver that is gone).
pub fn release_lane(region: &ShmRegion, bit: u32) {
    if let (Some(lanes), Some(mask)) = (word(region, LANES), 1u64.checked_shl(bit)) {
        lanes.fetch_and(!mask, Ordering::AcqRel);
    }
}

/// The region is being sent again under `token`: no lane holds it, `others` is set, no output.
pub(crate) fn reset(region: &ShmRegion, token: u64) {
    let store = |i, v| {
        if let Some(w) = word(region, i) {
            w.store(v, Ordering::Release);
        }
    };
    store(LANES, 0);
    store(TOKEN, token);
    store(OUTPUT, u64::MAX);
    store(OTHERS, 1);
}

/// The sample goes out on the lanes of output number `output`.
pub(crate) fn set_output(region: &ShmRegion, output: u32) {
    if let Some(w) = word(region, OUTPUT) {
        w.store(u64::from(output), Ordering::Release);
    }
}

/// Sets lane bit `bit` (before the handle is pushed into that lane).
pub(crate) fn hold_lane(region: &ShmRegion, bit: u32) {
    if let (Some(lanes), Some(mask)) = (word(region, LANES), 1u64.checked_shl(bit)) {
        lanes.fetch_or(mask, Ordering::AcqRel);
    }
}

/// Clears `others`: neither the sender nor the daemon holds it any more.
pub(crate) fn release_others(region: &ShmRegion) {
    if let Some(w) = word(region, OTHERS) {
        w.store(0, Ordering::Release);
    }
}

/// Whether no lane holds the sample any more (its receivers dropped it, or their instances
/// ended); `false` for a region without holder words. With a sender that is gone, this and the
/// daemon's own bookkeeping say whether anybody still needs it.
pub fn lanes_released(region: &ShmRegion) -> bool {
    word(region, LANES).is_some_and(|w| w.load(Ordering::Acquire) == 0)
}

/// Whether nobody holds the sample (a region without holder words never frees itself).
pub(crate) fn is_released(region: &ShmRegion) -> bool {
    let zero = |i| word(region, i).is_some_and(|w| w.load(Ordering::Acquire) == 0);
    zero(OTHERS) && zero(LANES)
}
