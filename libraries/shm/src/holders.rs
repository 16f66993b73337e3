//! Who still holds a sent sample, written in the sample's own region: the last
//! [`HOLDERS_BYTES`] bytes of every region of a [`SamplePool`](crate::SamplePool) are two words
//! that the sender and its receivers change atomically, so that a sample read through lanes goes
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
//!
//! The pool reuses a region once both words are zero.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ShmRegion;

/// Bytes at the end of each pool region that hold its holder words.
pub const HOLDERS_BYTES: usize = 16;

/// The two holder words of `region` (`None`: too small or unaligned, not a pool region).
fn words(region: &ShmRegion) -> Option<(&AtomicU64, &AtomicU64)> {
    let size = region.size();
    let offset = size.checked_sub(HOLDERS_BYTES)?;
    if !offset.is_multiple_of(8) {
        return None;
    }
    // SAFETY: `offset + 16 <= size()`, so both words lie inside the mapping, which stays mapped
    // while `region` lives; the mapping is page aligned and `offset` a multiple of 8, so both are
    // aligned for `AtomicU64`. These bytes are outside every payload slice handed out (a sample's
    // `len` leaves room for them, see `SamplePool::allocate`) and are only accessed atomically.
    unsafe {
        let at = region.as_ptr().add(offset);
        Some((
            &*(at as *const AtomicU64),
            &*(at.add(8) as *const AtomicU64),
        ))
    }
}

/// A receiver is done with a sample it took from the lane of holder bit `bit`.
pub fn release_lane(region: &ShmRegion, bit: u32) {
    if let (Some((lanes, _)), Some(mask)) = (words(region), 1u64.checked_shl(bit)) {
        lanes.fetch_and(!mask, Ordering::AcqRel);
    }
}

/// Sets `others` (the daemon or the sender still holds it) and clears every lane bit: the
/// region is being sent again.
pub(crate) fn reset(region: &ShmRegion) {
    if let Some((lanes, others)) = words(region) {
        lanes.store(0, Ordering::Release);
        others.store(1, Ordering::Release);
    }
}

/// Sets lane bit `bit` (before the handle is pushed into that lane).
pub(crate) fn hold_lane(region: &ShmRegion, bit: u32) {
    if let (Some((lanes, _)), Some(mask)) = (words(region), 1u64.checked_shl(bit)) {
        lanes.fetch_or(mask, Ordering::AcqRel);
    }
}

/// Clears `others`: neither the sender nor the daemon holds it any more.
pub(crate) fn release_others(region: &ShmRegion) {
    if let Some((_, others)) = words(region) {
        others.store(0, Ordering::Release);
    }
}

/// Whether no lane holds the sample any more (its receivers dropped it, or their instances
/// ended); `false` for a region without holder words. With a sender that is gone, this and the
/// daemon's own bookkeeping say whether anybody still needs it.
pub fn lanes_released(region: &ShmRegion) -> bool {
    words(region).is_some_and(|(lanes, _)| lanes.load(Ordering::Acquire) == 0)
}

/// Whether nobody holds the sample (a region without holder words never frees itself).
pub(crate) fn is_released(region: &ShmRegion) -> bool {
    words(region).is_some_and(|(lanes, others)| {
        others.load(Ordering::Acquire) == 0 && lanes.load(Ordering::Acquire) == 0
    })
}
