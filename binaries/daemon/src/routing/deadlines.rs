//! Input timeouts (`inputs.<id>.input_timeout`): an input that received no message for its timeout
//! is closed, and its node gets `InputClosed` for it, as if its upstream had closed it.
//!
//! Each clock starts when the start barrier is released and restarts with every message queued on
//! the input. An upstream node that restarts does not reset it: if the new instance takes longer
//! than the timeout to send, the input closes. A closed input stays closed for the rest of the
//! dataflow (messages for it are dropped), also when its upstream sends again.

use std::time::{Duration, Instant};

use adora_core::{DataId, NodeId};
use adora_message::daemon_to_node::NodeEvent;

use super::Routing;

/// The clock of one input with a timeout.
#[derive(Debug, Clone, Copy)]
pub(super) struct InputDeadline {
    /// `input_timeout`.
    pub timeout: Duration,
    /// The last message, or the start of the dataflow.
    pub last: Instant,
}

impl InputDeadline {
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            last: Instant::now(),
        }
    }
}

impl Routing {
    /// The shortest input timeout of the dataflow's local inputs, if any input has one.
    pub fn shortest_input_timeout(&self) -> Option<Duration> {
        self.nodes
            .values()
            .flat_map(|s| s.deadlines.values())
            .map(|d| d.timeout)
            .min()
    }

    /// Starts every input clock at `now` (the start barrier was released).
    pub fn start_input_clocks(&mut self, now: Instant) {
        for deadline in self
            .nodes
            .values_mut()
            .flat_map(|s| s.deadlines.values_mut())
        {
            deadline.last = now;
        }
    }

    /// Closes every open input whose timeout passed at `now`; returns them with their timeouts.
    pub fn expire_inputs(&mut self, now: Instant) -> Vec<(NodeId, DataId, Duration)> {
        let expired: Vec<(NodeId, DataId, Duration)> = self
            .nodes
            .iter()
            .filter(|(_, s)| !s.exited && !s.remote)
            .flat_map(|(node, s)| {
                s.deadlines
                    .iter()
                    .filter(|(input, d)| {
                        s.open_inputs.contains(*input) && now.duration_since(d.last) >= d.timeout
                    })
                    .map(|(input, d)| (node.clone(), input.clone(), d.timeout))
            })
            .collect();
        for (node, input, _) in &expired {
            self.push_control(node, Some(input), |id| NodeEvent::InputClosed {
                id: id.clone(),
            });
        }
        expired
    }
}
