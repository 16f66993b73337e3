//! A node moving between daemons, make-before-break (see `adora_message::relocation`). On the
//! target, the new instance starts *muted* (what it sends is dropped) and is answered once it
//! connected and its published outputs are matched; `Switch` lets its outputs flow. On the
//! source, the old instance is muted and stopped quietly at `Leave`: no `InputClosed`
//! downstream, no `Closed` on Zenoh, no outcome, and it leaves this daemon's part.
//!
//! Between `Switch` and `Leave` both instances deliver: a receiver may get a message twice
//! (once from each). Nothing is lost: the new instance receives the node's inputs from its
//! start, and the old one is muted only after the new one flows.

use std::collections::{BTreeMap, BTreeSet};

use adora_core::NodeId;
use adora_message::{
    control::ControlError, daemon_to_coordinator::DaemonMessage, envelope::Envelope, DataRef,
    Metadata,
};
use nix::sys::signal::Signal;
use tokio::sync::mpsc;

use super::Dataflow;
use crate::{
    config::DaemonConfig,
    event::{Escalation, Event, Reports},
    spawn,
};

/// Where the answer of a relocation step goes: the command's envelope id and the link to the
/// coordinator.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// The envelope id of the `Relocate` command.
    pub id: u64,
    /// The coordinator link's outgoing queue.
    pub reports: Reports,
}

impl Answer {
    /// Sends `Relocated` for `step` of `node`.
    pub fn send(&self, dataflow: uuid::Uuid, node: &NodeId, step: &str, result: Result<(), String>) {
        let body = DaemonMessage::Relocated {
            dataflow,
            node: node.clone(),
            step: step.to_owned(),
            result: result.map_err(ControlError::daemon),
        };
        let _ = self.reports.send(Envelope::new(self.id, body));
    }
}

/// The moves this daemon takes part in, for one dataflow.
#[derive(Debug, Default)]
pub(crate) struct Moves {
    /// Local nodes whose messages are dropped: new instances before `Switch`, old ones after
    /// `Leave`.
    muted: BTreeSet<NodeId>,
    /// New instances not answered yet: the `Spawn` answer, and whether the node connected.
    arriving: BTreeMap<NodeId, (Answer, bool)>,
    /// Old instances being stopped quietly.
    leaving: BTreeSet<NodeId>,
    /// Nodes that will leave (`Expect` received): links for after the move are declared.
    expecting: BTreeSet<NodeId>,
}

impl Moves {
    /// True when `node` is muted here.
    pub fn is_muted(&self, node: &NodeId) -> bool {
        !self.muted.is_empty() && self.muted.contains(node)
    }

    /// True when `node`'s instance here is arriving or leaving: it is not (yet, any more) the
    /// node's instance for the rest of the cluster (heartbeats leave it out).
    pub fn hides(&self, node: &NodeId) -> bool {
        self.is_muted(node) || self.leaving.contains(node)
    }

    /// True when `node`'s exit is not an outcome of the dataflow.
    fn is_quiet(&self, node: &NodeId) -> bool {
        self.leaving.contains(node) || self.arriving.contains_key(node)
    }
}

impl Dataflow {
    /// The nodes running here, as a set.
    fn local_set(&self) -> BTreeSet<NodeId> {
        let spec = &self.spec;
        spec.descriptor
            .nodes
            .iter()
            .filter(|n| spec.is_local(&n.id))
            .map(|n| n.id.clone())
            .collect()
    }

    /// Source, `Expect`: declares the links this daemon needs once `node` runs elsewhere.
    pub fn expect_leaving(&mut self, node: &NodeId, events: &mpsc::Sender<Event>) {
        let mut local = self.local_set();
        local.remove(node);
        self.moves.expecting.insert(node.clone());
        self.relink(|n| local.contains(n), false, events);
    }

    /// Target, `Spawn`: starts `node` here muted; `answer` gets `Relocated` once it connected and
    /// its published outputs are matched, or when it failed.
    pub fn add_arriving(
        &mut self,
        node: &NodeId,
        answer: Answer,
        events: &mpsc::Sender<Event>,
    ) -> Result<(), String> {
        if self.stopping {
            return Err(format!("dataflow {} is stopping here", self.spec.id));
        }
        if self.routing.is_local(node) {
            return Err(format!("node `{node}` already runs on this daemon"));
        }
        let spec = self
            .spec
            .descriptor
            .nodes
            .iter()
            .find(|n| &n.id == node)
            .ok_or_else(|| format!("dataflow {} has no node `{node}`", self.spec.id))?;
        let command = spawn::resolve_command(spec, &self.spec.working_dir)
            .map_err(|e| format!("node `{node}`: {e}"))?;
        if let Some(set) = self.spec.local_nodes.as_mut() {
            set.insert(node.clone());
        }
        self.moves.muted.insert(node.clone());
        self.moves.arriving.insert(node.clone(), (answer, false));
        let new_timers = self.routing.make_local(&self.spec.descriptor, node);
        if self.started {
            self.spawn_timer_intervals(events, &new_timers);
        }
        let local = self.local_set();
        self.relink(|n| local.contains(n), false, events);
        // A new part holds no other node: nothing to wait for at its start barrier.
        self.maybe_release_barrier(events);
        self.spawn(node, &command, events.clone());
        Ok(())
    }

    /// An arriving node's control connection registered.
    pub(super) fn arrival_connected(&mut self, node: &NodeId) {
        if let Some((_, connected)) = self.moves.arriving.get_mut(node) {
            *connected = true;
            self.check_arrivals();
        }
    }

    /// Answers the arriving nodes that are connected and whose published outputs are matched.
    pub(super) fn check_arrivals(&mut self) {
        let unmatched = &self.remote.unmatched;
        let ready: Vec<NodeId> = self
            .moves
            .arriving
            .iter()
            .filter(|(node, (_, connected))| *connected && !unmatched.iter().any(|(n, _)| n == *node))
            .map(|(node, _)| node.clone())
            .collect();
        for node in ready {
            if let Some((answer, _)) = self.moves.arriving.remove(&node) {
                tracing::info!("node `{node}` of dataflow {} is ready here (muted)", self.spec.id);
                answer.send(self.spec.id, &node, "spawn", Ok(()));
            }
        }
    }

    /// An arriving node failed (could not start, or exited) before it was ready: the move fails,
    /// the instance leaves quietly and its links go.
    pub(super) fn arrival_failed(
        &mut self,
        node: &NodeId,
        reason: String,
        events: &mpsc::Sender<Event>,
    ) {
        let Some((answer, _)) = self.moves.arriving.remove(node) else {
            return;
        };
        tracing::warn!("node `{node}` cannot move here: {reason}");
        answer.send(self.spec.id, node, "spawn", Err(reason));
        self.moves.leaving.insert(node.clone());
        if let Some(set) = self.spec.local_nodes.as_mut() {
            set.remove(node);
        }
        let local = self.local_set();
        self.relink(|n| local.contains(n), true, events);
        self.try_finish_leaving(node);
    }

    /// Target, `Switch`: the new instance's outputs flow.
    pub fn switch_in(&mut self, node: &NodeId) -> Result<(), String> {
        if !self.routing.is_local(node) || self.moves.leaving.contains(node) {
            return Err(format!("node `{node}` does not run on this daemon"));
        }
        self.moves.muted.remove(node);
        self.moves.arriving.remove(node);
        tracing::info!("node `{node}` of dataflow {} now delivers from here", self.spec.id);
        Ok(())
    }

    /// Source `Leave` (and target `Abort`): mutes `node` and stops it quietly; the links are
    /// planned again without it.
    pub fn leave(&mut self, node: &NodeId, events: &mpsc::Sender<Event>, config: &DaemonConfig) {
        self.moves.muted.insert(node.clone());
        self.moves.leaving.insert(node.clone());
        self.moves.expecting.remove(node);
        if let Some((answer, _)) = self.moves.arriving.remove(node) {
            answer.send(self.spec.id, node, "spawn", Err("the move was aborted".into()));
        }
        if let Some(set) = self.spec.local_nodes.as_mut() {
            set.remove(node);
        }
        let local = self.local_set();
        self.relink(|n| local.contains(n), true, events);
        let running = self.nodes.get(node).is_some_and(|rt| rt.running);
        if running {
            self.routing.push_stop(node);
            let evict = Event::EvictNode {
                dataflow: self.spec.id,
                node: node.clone(),
                step: Escalation::Terminate,
            };
            self.schedule(events, config.stop_grace, evict);
        } else {
            self.try_finish_leaving(node);
        }
    }

    /// `Settle` (target) and `Abort` (either side): links only for the nodes running here;
    /// an instance that arrived and was not switched leaves quietly.
    pub fn settle_links(
        &mut self,
        node: &NodeId,
        abort: bool,
        events: &mpsc::Sender<Event>,
        config: &DaemonConfig,
    ) {
        self.moves.expecting.remove(node);
        if abort && self.moves.is_muted(node) && !self.moves.leaving.contains(node) {
            return self.leave(node, events, config);
        }
        let local = self.local_set();
        self.relink(|n| local.contains(n), true, events);
    }

    /// The coordinator is gone: moves in progress are forgotten (it will not finish them).
    /// Instances that were not switched leave; links are planned for the nodes running here.
    pub fn abort_moves(&mut self, events: &mpsc::Sender<Event>, config: &DaemonConfig) {
        let unswitched: Vec<NodeId> = self
            .moves
            .muted
            .iter()
            .filter(|n| !self.moves.leaving.contains(*n))
            .cloned()
            .collect();
        let expecting = std::mem::take(&mut self.moves.expecting);
        for node in &unswitched {
            tracing::warn!("lost the coordinator while node `{node}` was moving here: stopping it");
            self.leave(node, events, config);
        }
        if unswitched.is_empty() && !expecting.is_empty() {
            let local = self.local_set();
            self.relink(|n| local.contains(n), true, events);
        }
    }

    /// The stop grace of a leaving node expired: SIGTERM, then SIGKILL.
    pub fn evict(&mut self, node: &NodeId, step: Escalation, events: &mpsc::Sender<Event>, config: &DaemonConfig) {
        if !self.moves.leaving.contains(node) {
            return;
        }
        let Some(rt) = self.nodes.get_mut(node) else {
            return;
        };
        let (true, Some(pid)) = (rt.running, rt.pid) else {
            return;
        };
        let signal = match step {
            Escalation::Terminate => Signal::SIGTERM,
            Escalation::Kill => Signal::SIGKILL,
        };
        tracing::info!("node `{node}` (moved away) did not exit in time; sending {signal}");
        rt.terminated_by = Some(signal);
        spawn::signal_group(pid, signal);
        if step == Escalation::Terminate {
            let kill = Event::EvictNode {
                dataflow: self.spec.id,
                node: node.clone(),
                step: Escalation::Kill,
            };
            self.schedule(events, config.kill_grace, kill);
        }
    }

    /// A node of a move exited: never an outcome. An arriving one fails its move; a leaving one
    /// is forgotten once its control connection drained too. Returns `None` when `node` is not
    /// part of a move (the normal exit path applies), else whether the dataflow is finished.
    pub(super) fn quiet_exit(
        &mut self,
        node: &NodeId,
        why: impl FnOnce() -> String,
        events: &mpsc::Sender<Event>,
    ) -> Option<bool> {
        if !self.moves.is_quiet(node) {
            return None;
        }
        let rt = self.nodes.get_mut(node)?;
        rt.running = false;
        if let Some(pid) = rt.pid {
            spawn::signal_group(pid, Signal::SIGKILL);
        }
        if self.moves.arriving.contains_key(node) {
            let reason = format!("node `{node}` exited before it was ready: {}", why());
            self.arrival_failed(node, reason, events);
        }
        self.try_finish_leaving(node);
        Some(self.is_finished())
    }

    /// A control connection closed: for a leaving node, it may be the last thing it held.
    pub(super) fn quiet_control_closed(&mut self, node: &NodeId) -> Option<bool> {
        if !self.moves.is_quiet(node) {
            return None;
        }
        self.nodes.get_mut(node)?.control_open = false;
        self.try_finish_leaving(node);
        Some(self.is_finished())
    }

    /// Forgets a leaving node once its process exited and its control connection drained.
    fn try_finish_leaving(&mut self, node: &NodeId) {
        let done = self
            .nodes
            .get(node)
            .is_none_or(|rt| !rt.running && !rt.control_open);
        if !done || !self.moves.leaving.remove(node) {
            return;
        }
        self.moves.muted.remove(node);
        self.routing.make_remote(node);
        self.nodes.remove(node);
        self.outcomes.remove(node);
        self.pending.remove(node);
        tracing::info!("node `{node}` of dataflow {} left this daemon", self.spec.id);
    }

    /// A muted node's message: dropped (a shared sample goes back to the node's pool).
    pub(super) fn drop_muted(&mut self, node: &NodeId, metadata: Metadata, data: DataRef) {
        self.routing.discard_output(node, metadata, data);
    }
}
