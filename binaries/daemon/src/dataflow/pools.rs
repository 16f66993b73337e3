//! The sample pools of ended node instances. Each instance writes its shared samples into
//! segments named `{its pool prefix}{n}` (a prefix of its own, see [`pool_prefix`]). Receivers
//! release a sample through its holder words (`adora_shm::release_lane`), so when an instance
//! ends, some of its samples may still be queued in lanes or held by receivers: its pool is gone
//! and nobody else would remove them before the dataflow ends. The daemon does, once nobody
//! holds them: no lane (the holder words) and not the daemon itself (its routing, for samples it
//! delivers; a gone sender's `others` word says nothing any more). It looks [`SWEEP_EVERY`]
//! after the instance ended (its last messages may still be on their way into the routing) and
//! again as long as some are left.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use adora_core::NodeId;
use tokio::sync::mpsc;

use super::{shm_prefix, Dataflow};
use crate::event::Event;

/// How often the daemon looks again at the samples of ended instances still held.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// How often the sweep looks again while a publisher still has messages in its lane.
const PUBLISHING_RECHECK: Duration = Duration::from_millis(20);

/// The pool prefix of a new instance of `node`: unique to the instance (a number this daemon
/// never hands out twice), so that sweeping it never touches a later instance's samples.
pub(super) fn pool_prefix(dataflow: uuid::Uuid, node: &NodeId) -> String {
    static INSTANCES: AtomicU64 = AtomicU64::new(0);
    let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
    format!("{}{node}-{n}-", shm_prefix(dataflow))
}

impl Dataflow {
    /// The instance of `node` ended: its pool's leftovers are removed once nobody holds them, and
    /// it no longer holds the samples of ended senders it took from its lanes.
    pub(super) fn instance_ended(&mut self, node: &NodeId, events: &mpsc::Sender<Event>) {
        self.release_taken_from_ended(node);
        let Some(pool) = self.nodes.get_mut(node).and_then(|rt| rt.pool.take()) else {
            return;
        };
        if self.ended_pools.is_empty() {
            let dataflow = self.spec.id;
            self.schedule(events, SWEEP_EVERY, Event::SweepPools { dataflow });
        }
        self.ended_pools.push((node.clone(), pool));
    }

    /// `reader`'s instance ended: what it took from its lanes of senders whose instance ended
    /// too is released here (a live sender does it itself, told by `LanesReleased`, but an
    /// ended one cannot). What its lanes still queue stays held for its next instance.
    fn release_taken_from_ended(&self, reader: &NodeId) {
        for (sender, output, bit, lane) in self.routing.lanes_read_by(reader) {
            let pools = self.ended_pools.iter().filter(|(n, _)| *n == sender);
            let mut samples = pools.flat_map(|(_, prefix)| samples_of(prefix)).peekable();
            if samples.peek().is_none() {
                continue;
            }
            let Some(queued) = lane.queued_tokens() else {
                continue; // its lock is held: leave them (removed when the dataflow ends)
            };
            for region in samples {
                let held = adora_shm::holders(&region)
                    .is_some_and(|h| h.output == Some(output) && !queued.contains(&h.token));
                if held {
                    adora_shm::release_lane(&region, bit);
                }
            }
        }
    }

    /// Removes every segment of an ended instance's pool that no lane, receiver or daemon holds
    /// any more (a lane whose receiver is gone for good holds nothing); forgets a pool once
    /// nothing of it is left, and looks again later while some are.
    pub fn sweep_ended_pools(&mut self, events: &mpsc::Sender<Event>) {
        let routing = &self.routing;
        let gone = routing.lanes_gone();
        self.ended_pools.retain(|(sender, prefix)| {
            let mut left = false;
            for region in samples_of(prefix) {
                // Bits set on a sample that never went out on lanes (no output) mean nothing.
                let holders = adora_shm::holders(&region);
                if let Some((lanes, output)) = holders.and_then(|h| Some((h.lanes, h.output?))) {
                    for bit in (0..64).filter(|b| lanes & (1u64 << b) != 0) {
                        if gone.contains(&(sender.clone(), output, bit)) {
                            adora_shm::release_lane(&region, bit);
                        }
                    }
                }
                let name = region.os_id().to_owned();
                if routing.holds_sample(&name) || !adora_shm::lanes_released(&region) {
                    left = true;
                    continue;
                }
                drop(region);
                if let Err(e) = adora_shm::unlink(&name) {
                    tracing::debug!("cannot remove the released sample {name}: {e}");
                }
            }
            left
        });
        // Also, once every node ended, while a publisher has messages of theirs to take from its
        // lane: the dataflow ends once it took them (`Dataflow::is_finished`).
        let after = if self.nodes_ended() && self.routing.publishing() {
            Some(PUBLISHING_RECHECK)
        } else {
            (!self.ended_pools.is_empty()).then_some(SWEEP_EVERY)
        };
        if let Some(after) = after {
            let dataflow = self.spec.id;
            self.schedule(events, after, Event::SweepPools { dataflow });
        }
    }
}

/// The samples of pool `prefix` still in `/dev/shm`, mapped.
fn samples_of(prefix: &str) -> Vec<adora_shm::ShmRegion> {
    let names = adora_shm::list_segments(prefix).unwrap_or_default();
    // `{prefix}{n}` only: the prefix of another node could start the same way.
    (names.iter())
        .filter(|n| is_sample_of(n, prefix))
        .filter_map(|n| adora_shm::ShmRegion::open(n).ok())
        .collect()
}

/// Whether segment `name` is a sample of the pool `prefix` (`{prefix}{digits}`).
fn is_sample_of(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_prefix_is_unique_and_names_only_its_own_samples() {
        let id = uuid::Uuid::new_v4();
        let (a, b) = (
            pool_prefix(id, &"cam".into()),
            pool_prefix(id, &"cam".into()),
        );
        assert_ne!(a, b, "two instances of one node");
        assert!(is_sample_of(&format!("{a}12"), &a));
        assert!(!is_sample_of(&format!("{a}12"), &b));
        // Node `cam-7`'s samples start like those of instance 7 of `cam`.
        let other = format!("{}cam-7-0-3", shm_prefix(id));
        assert!(!is_sample_of(&other, &format!("{}cam-7-", shm_prefix(id))));
        assert!(!is_sample_of(&a, &a), "the prefix alone");
    }
}
