//! Stopping some nodes of a running dataflow while the others go on (`adora cluster drain` stops
//! the nodes pinned to a drained machine): each gets `Stop`, then SIGTERM and SIGKILL after the
//! grace periods, like a whole dataflow's stop; its restart policy does not bring it back, its
//! receivers get `InputClosed` as for any node that ended, and its result is `Finished`.

use adora_core::NodeId;
use tokio::sync::mpsc;

use super::Dataflow;
use crate::{
    config::DaemonConfig,
    event::{Escalation, Event},
    spawn,
};

impl Dataflow {
    /// Stops `nodes` (those that run here); the others keep running.
    pub fn stop_nodes(
        &mut self,
        nodes: &[NodeId],
        events: &mpsc::Sender<Event>,
        config: &DaemonConfig,
    ) {
        let mut stopped = Vec::new();
        for node in nodes {
            let Some(rt) = self.nodes.get_mut(node) else {
                continue;
            };
            if rt.stopped {
                continue;
            }
            rt.stopped = true;
            tracing::info!("stopping node `{node}` (the rest of the dataflow keeps running)");
            if rt.restarting {
                // Its next instance must not start: end it like an exit now.
                let restart = Event::RestartNode {
                    dataflow: self.spec.id,
                    node: node.clone(),
                };
                self.schedule(events, std::time::Duration::ZERO, restart);
            } else {
                self.routing.stop_one(node);
            }
            stopped.push(node.clone());
        }
        if !stopped.is_empty() {
            let escalate = Event::EscalateNodes {
                dataflow: self.spec.id,
                nodes: stopped,
                step: Escalation::Terminate,
            };
            self.schedule(events, config.stop_grace, escalate);
        }
    }

    /// Nodes stopped by [`Dataflow::stop_nodes`] that did not exit in time get `step`'s signal.
    pub fn escalate_nodes(
        &mut self,
        nodes: Vec<NodeId>,
        step: Escalation,
        events: &mpsc::Sender<Event>,
        config: &DaemonConfig,
    ) {
        let signal = step.signal();
        let mut left = Vec::new();
        for node in nodes {
            let Some(rt) = self.nodes.get_mut(&node) else {
                continue;
            };
            if let (true, Some(pid)) = (rt.running, rt.pid) {
                tracing::info!("node `{node}` did not stop in time; sending {signal}");
                rt.terminated_by = Some(signal);
                spawn::signal_group(pid, signal);
                left.push(node);
            }
        }
        if step == Escalation::Terminate && !left.is_empty() {
            let kill = Event::EscalateNodes {
                dataflow: self.spec.id,
                nodes: left,
                step: Escalation::Kill,
            };
            self.schedule(events, config.kill_grace, kill);
        }
    }
}
