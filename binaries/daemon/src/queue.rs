//! Per-input queues: bounded, dropping the oldest message when full, counting the drops.

use std::collections::VecDeque;

use adora_message::daemon_to_node::NodeEvent;

/// A queued event with its arrival sequence number (used to merge queues in arrival order).
#[derive(Debug)]
pub(crate) struct Queued {
    pub seq: u64,
    pub event: NodeEvent,
}

/// The queue of one input of one node.
#[derive(Debug)]
pub(crate) struct InputQueue {
    capacity: usize,
    items: VecDeque<Queued>,
    dropped: u64,
}

impl InputQueue {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            items: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Pushes an event; returns the oldest event when it had to be dropped to make room.
    pub fn push(&mut self, item: Queued) -> Option<Queued> {
        let evicted = if self.items.len() >= self.capacity {
            self.dropped += 1;
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        evicted
    }

    /// Whether one more message fits without dropping the oldest.
    pub fn has_room(&self) -> bool {
        self.items.len() < self.capacity
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Counts messages that never reached this queue (lost between machines) as dropped.
    pub fn count_missing(&mut self, n: u64) {
        self.dropped = self.dropped.saturating_add(n);
    }

    pub fn drain(&mut self) -> impl Iterator<Item = Queued> + '_ {
        self.items.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64) -> Queued {
        Queued {
            seq,
            event: NodeEvent::Stop,
        }
    }

    #[test]
    fn drops_oldest_when_full_and_counts() {
        let mut q = InputQueue::new(2);
        assert!(q.push(item(1)).is_none());
        assert!(q.push(item(2)).is_none());
        assert_eq!(q.push(item(3)).map(|q| q.seq), Some(1));
        assert_eq!(q.push(item(4)).map(|q| q.seq), Some(2));
        assert_eq!(q.dropped(), 2);
        let left: Vec<u64> = q.drain().map(|q| q.seq).collect();
        assert_eq!(left, vec![3, 4]);
    }

    #[test]
    fn zero_capacity_is_treated_as_one() {
        let mut q = InputQueue::new(0);
        assert!(q.push(item(1)).is_none());
        assert!(q.push(item(2)).is_some());
    }
}
