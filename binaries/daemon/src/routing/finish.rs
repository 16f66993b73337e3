//! `exit_when_nodes_finish`: timer inputs are a clock, not work. Once every other input of a node
//! has closed, its timer inputs close too, so its event stream ends and it can finish; a node
//! whose inputs are all timers is a source and is not affected.

use adora_core::NodeId;
use adora_message::daemon_to_node::NodeEvent;

use super::Routing;
use crate::queue::Queued;

impl Routing {
    /// With `exit_when_nodes_finish`: closes `node`'s timer inputs when only they are left open.
    pub(super) fn close_clock_inputs(&mut self, node: &NodeId) {
        if !self.exit_when_nodes_finish {
            return;
        }
        let Some(state) = self.nodes.get(node) else {
            return;
        };
        let has_data_inputs = state.queues.len() > state.timer_inputs.len();
        let only_clocks_left = !state.open_inputs.is_empty()
            && state
                .open_inputs
                .iter()
                .all(|i| state.timer_inputs.contains(i));
        if !has_data_inputs || !only_clocks_left || state.exited {
            return;
        }
        let clocks: Vec<_> = state.open_inputs.iter().cloned().collect();
        for input in clocks {
            let seq = self.next_seq();
            let Some(state) = self.nodes.get_mut(node) else {
                return;
            };
            state.open_inputs.remove(&input);
            let event = NodeEvent::InputClosed { id: input };
            state.control.push_back(Queued { seq, event });
        }
        self.wake(node);
    }
}
