//! Lifetimes of shared-memory samples in flight: every receiver holds a reference; when the last
//! one is released the sample goes back to its owner's pool (pushed to the owner's drops
//! connection), to the daemon's own pool (copies of remote messages), or is unlinked when its
//! owner is gone.

use adora_core::NodeId;
use adora_message::{
    daemon_to_node::{DaemonReply, NodeEvent},
    DataRef,
};

use super::{Routing, Waiter};

impl super::NodeRouting {
    /// What its drops connection gets next: released samples first, then released lanes.
    fn freed_reply(&mut self) -> Option<DaemonReply> {
        if !self.freed.is_empty() {
            return Some(DaemonReply::FreedSamples(std::mem::take(&mut self.freed)));
        }
        (!self.released_lanes.is_empty())
            .then(|| DaemonReply::LanesReleased(std::mem::take(&mut self.released_lanes)))
    }

    /// Hands what is pending to its drops connection if that waits.
    pub(super) fn push_freed(&mut self) {
        if self.freed_waiter.is_some() {
            if let (Some(reply), Some(w)) = (self.freed_reply(), self.freed_waiter.take()) {
                let _ = w.send(reply);
            }
        }
    }
}

impl Routing {
    /// Takes the tokens of released samples owned by the daemon (see `daemon_freed`).
    pub fn take_daemon_freed(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.daemon_freed)
    }

    pub(super) fn release_event(&mut self, event: NodeEvent) {
        if let NodeEvent::Input {
            data: DataRef::Shared(s),
            ..
        } = event
        {
            self.release_ref(s.token);
        }
    }

    pub(super) fn release_ref(&mut self, token: u64) {
        let Some(sample) = self.samples.get_mut(&token) else {
            return;
        };
        sample.refs = sample.refs.saturating_sub(1);
        if sample.refs > 0 {
            return;
        }
        let Some(sample) = self.samples.remove(&token) else {
            return;
        };
        match self.nodes.get_mut(&sample.owner) {
            _ if sample.daemon_owned => self.daemon_freed.push(token),
            // Its sender's instance is gone: the sweep of ended pools removes the segment once
            // no lane holds it either (`dataflow/pools.rs`).
            _ if sample.orphaned => {}
            Some(owner) if owner.remote => self.daemon_freed.push(token),
            Some(owner) if !owner.exited => {
                owner.freed.push(token);
                owner.push_freed();
            }
            // The owner is gone: the same.
            _ => {}
        }
    }

    /// The node's drops connection waits for released samples to push to it.
    pub fn next_freed(&mut self, node: &NodeId, waiter: Waiter) {
        let Some(state) = self.nodes.get_mut(node) else {
            let _ = waiter.send(DaemonReply::FreedSamples(Vec::new()));
            return;
        };
        if let Some(reply) = state.freed_reply() {
            let _ = waiter.send(reply);
        } else if state.exited {
            let _ = waiter.send(DaemonReply::FreedSamples(Vec::new()));
        } else {
            state.freed_waiter = Some(waiter);
        }
    }

    /// A node dropped shared samples it had received.
    pub fn report_dropped(&mut self, node: &NodeId, tokens: Vec<u64>) {
        for token in tokens {
            let held = self.nodes.get_mut(node).and_then(|s| {
                let count = s.held.get_mut(&token)?;
                *count -= 1;
                if *count == 0 {
                    s.held.remove(&token);
                }
                Some(())
            });
            // Not delivered by the daemon: nothing of the daemon's to release (a lane's
            // receiver clears its holder bit in the sample instead).
            if held.is_some() {
                self.release_ref(token);
            }
        }
    }

    pub(super) fn release_held(&mut self, held: Vec<(u64, usize)>) {
        for (token, count) in held {
            for _ in 0..count {
                self.release_ref(token);
            }
        }
    }

    /// Whether the daemon still holds the sample in segment `os_id` (queued or delivered and
    /// not dropped).
    pub fn holds_sample(&self, os_id: &str) -> bool {
        self.samples.values().any(|s| s.os_id == os_id)
    }

    /// Shared samples still referenced by some receiver.
    #[cfg(test)]
    pub fn samples_in_flight(&self) -> usize {
        self.samples.len()
    }
}
