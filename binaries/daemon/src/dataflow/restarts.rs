//! Restart policies in action: what happens when a node exits, and starting it again.

use std::time::{Duration, Instant};

use adora_core::{descriptor::RestartPolicy, NodeId};
use adora_message::{control::NodeResult, daemon_to_node::NodeEvent};
use tokio::sync::mpsc;

use super::Dataflow;
use crate::{event::Event, restart::RestartDecision};

/// How long a restart waits for the old instance's control connection to drain.
const DRAIN_RETRY: Duration = Duration::from_millis(50);

impl Dataflow {
    /// True when the node's policy could bring it back after an exit (so its outputs stay open
    /// until the exit status is known).
    pub(super) fn may_restart(&self, node: &NodeId) -> bool {
        !self.stopping
            && !self.nodes.get(node).is_some_and(|rt| rt.stopped)
            && self
                .spec
                .descriptor
                .nodes
                .iter()
                .find(|n| &n.id == node)
                .is_some_and(|n| n.restart_policy != RestartPolicy::Never)
    }

    /// Applies the restart policy to an exit. Returns the final outcome, or `None` when a new
    /// instance will be started (then nothing is final yet).
    pub(super) fn restart_decision(
        &mut self,
        node: &NodeId,
        outcome: NodeResult,
        events: &mpsc::Sender<Event>,
    ) -> Option<NodeResult> {
        let rt = self.nodes.get_mut(node)?;
        let stopping = self.stopping || rt.stopped;
        // A node that never connected is not restarted: it would only time out again.
        let decision = match (&rt.failure, rt.restart.as_mut()) {
            (None, Some(tracker)) => {
                tracker.on_exit(outcome.is_failure(), stopping, Instant::now())
            }
            _ => RestartDecision::Stay,
        };
        match decision {
            RestartDecision::Stay => Some(outcome),
            RestartDecision::GiveUp { reason } => {
                let outcome = match outcome {
                    NodeResult::Failed {
                        reason: why,
                        stderr_tail,
                    } => NodeResult::Failed {
                        reason: format!("{why}; not restarted again: {reason}"),
                        stderr_tail,
                    },
                    other => other,
                };
                let why = match &outcome {
                    NodeResult::Failed { reason, .. } => reason.clone(),
                    _ => reason,
                };
                self.routing
                    .notify_downstream(node, |inputs| NodeEvent::UpstreamFailed {
                        node: node.clone(),
                        inputs,
                        reason: why.clone(),
                    });
                Some(outcome)
            }
            RestartDecision::Restart { after, attempt } => {
                let how = match &outcome {
                    NodeResult::Failed { reason, .. } => reason.clone(),
                    _ => "exited".into(),
                };
                tracing::warn!(
                    "node `{node}` {how}; restarting it in {} (restart {attempt})",
                    humantime::format_duration(after)
                );
                rt.restarting = true;
                // Kept as the result if the dataflow stops before the new instance ends.
                self.outcomes.insert(node.clone(), outcome);
                if !rt.control_open {
                    self.routing.node_restarting(node);
                    self.recycle_remote_samples();
                }
                self.routing
                    .notify_downstream(node, |inputs| NodeEvent::UpstreamRestarted {
                        node: node.clone(),
                        inputs,
                    });
                let restart = Event::RestartNode {
                    dataflow: self.spec.id,
                    node: node.clone(),
                };
                self.schedule(events, after, restart);
                None
            }
        }
    }

    /// Starts the next instance of a restarting node. Returns true when the dataflow is done
    /// (the dataflow was stopped meanwhile and this was the last node).
    pub fn restart_node(&mut self, node: &NodeId, events: &mpsc::Sender<Event>) -> bool {
        let Some(rt) = self.nodes.get_mut(node) else {
            return false;
        };
        if !rt.restarting {
            return false;
        }
        if self.stopping || rt.stopped {
            rt.restarting = false;
            self.close_all_outputs(node);
            self.routing.node_exited(node);
            self.recycle_remote_samples();
            return self.is_finished();
        }
        if rt.control_open {
            // The old instance's last frames are still being read; start the new one after.
            let retry = Event::RestartNode {
                dataflow: self.spec.id,
                node: node.clone(),
            };
            self.schedule(events, DRAIN_RETRY, retry);
            return false;
        }
        let Some(command) = rt.command.clone() else {
            return false;
        };
        rt.restarting = false;
        rt.channels.clear();
        rt.terminated_by = None;
        rt.health_failure = None;
        self.spawn(node, &command, events.clone());
        self.is_finished()
    }

    /// The dataflow is stopping: pending restarts are cancelled (handled at once).
    pub(super) fn cancel_restarts(&mut self, events: &mpsc::Sender<Event>) {
        let restarting: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, rt)| rt.restarting)
            .map(|(id, _)| id.clone())
            .collect();
        for node in restarting {
            let event = Event::RestartNode {
                dataflow: self.spec.id,
                node,
            };
            self.schedule(events, Duration::ZERO, event);
        }
    }

    /// Restarts so far, per node.
    pub fn restart_counts(&self) -> std::collections::BTreeMap<NodeId, u32> {
        self.nodes
            .iter()
            .map(|(id, rt)| (id.clone(), rt.restart.as_ref().map_or(0, |t| t.total())))
            .collect()
    }
}
