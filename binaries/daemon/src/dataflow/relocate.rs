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
    control::ControlError, daemon_to_coordinator::DaemonMessage, envelope::Envelope,
    relocation::Cut, DataRef, Metadata,
};
use nix::sys::signal::Signal;
use tokio::sync::mpsc;

use super::Dataflow;
use crate::{
    config::DaemonConfig,
    event::{Escalation, Event, MoveStep, Reports},
    remote::links::{OutputKey, RemoteLinks},
    spawn,
};

/// How long after `Settle` the target keeps the links the old instance fed (its subscriptions
/// to the moved node's outputs): the old instance's last messages, sent before it was muted,
/// may still be on the way. The source answered `Leave` before `Settle` is sent.
pub const SETTLE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// How often a leaving instance's cut is checked.
const CUT_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// How long a leaving instance waits for its inputs up to the cut (they are already on the way;
/// well within [`SETTLE_GRACE`], so its last outputs still reach the target's links).
const CUT_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

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
    pub fn send(
        &self,
        dataflow: uuid::Uuid,
        node: &NodeId,
        step: &str,
        result: Result<(), String>,
    ) {
        self.send_cut(dataflow, node, step, result.map(|()| Cut::new()));
    }

    /// Sends `Relocated` for `step` of `node`, with a cut (`Switch`).
    pub fn send_cut(
        &self,
        dataflow: uuid::Uuid,
        node: &NodeId,
        step: &str,
        result: Result<Cut, String>,
    ) {
        let (result, cut) = match result {
            Ok(cut) => (Ok(()), cut),
            Err(e) => (Err(ControlError::daemon(e)), Cut::new()),
        };
        let body = DaemonMessage::Relocated {
            dataflow,
            node: node.clone(),
            step: step.to_owned(),
            result,
            cut,
        };
        let _ = self.reports.send(Envelope::new(self.id, body));
    }
}

/// The moves this daemon takes part in, for one dataflow.
#[derive(Debug, Default)]
pub(crate) struct Moves {
    /// Local nodes whose messages are dropped: new instances before `Switch`, old ones after
    /// `Leave`.
    pub(super) muted: BTreeSet<NodeId>,
    /// New instances not answered yet (`arrival.rs`).
    pub(super) arriving: BTreeMap<NodeId, super::arrival::Arrival>,
    /// Old instances being stopped quietly.
    pub(super) leaving: BTreeSet<NodeId>,
    /// Nodes that will leave (`Expect` received): links for after the move are declared.
    expecting: BTreeSet<NodeId>,
    /// Old instances leaving after a cut, with the answer of their `Leave`: their links are
    /// planned again, and the `Leave` answered, once they are gone.
    cutting: BTreeMap<NodeId, Answer>,
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
    pub(super) fn local_set(&self) -> BTreeSet<NodeId> {
        let spec = &self.spec;
        spec.descriptor
            .nodes
            .iter()
            .filter(|n| spec.is_local(&n.id))
            .map(|n| n.id.clone())
            .collect()
    }

    /// The links this daemon needs: those of its nodes, and for every node expected to leave,
    /// those of its nodes without it (a daemon's links depend only on its own nodes).
    pub(super) fn wanted_links(&self) -> (BTreeSet<OutputKey>, BTreeSet<OutputKey>) {
        let local = self.local_set();
        let (mut published, mut subscribed) =
            RemoteLinks::crossing(&self.spec, |n| local.contains(n));
        for leaving in &self.moves.expecting {
            let after = RemoteLinks::crossing(&self.spec, |n| n != leaving && local.contains(n));
            published.extend(after.0);
            subscribed.extend(after.1);
        }
        (published, subscribed)
    }

    /// Source, `Expect`: declares the links this daemon needs once `node` runs elsewhere.
    pub fn expect_leaving(&mut self, node: &NodeId, events: &mpsc::Sender<Event>) {
        self.moves.expecting.insert(node.clone());
        self.relink(false, events);
    }

    /// Target, `Switch`: the new instance's outputs flow; returns the cut of its inputs.
    pub fn switch_in(&mut self, node: &NodeId) -> Result<Cut, String> {
        if !self.routing.is_local(node) || self.moves.leaving.contains(node) {
            return Err(format!("node `{node}` does not run on this daemon"));
        }
        self.moves.muted.remove(node);
        self.moves.arriving.remove(node);
        let cut = self.routing.take_cut(node);
        tracing::info!(
            "node `{node}` of dataflow {} now delivers from here (cut on {} input(s))",
            self.spec.id,
            cut.len()
        );
        Ok(cut)
    }

    /// Source, `Leave` with the cut the target reported: the old instance gets its inputs up
    /// to the cut and none after (its timers stop), and its outputs flow. Once every input of
    /// the cut reached it (checked every [`CUT_POLL`], for at most [`CUT_PATIENCE`]), it is
    /// stopped quietly; this daemon's links are planned without it once it is gone. Without a
    /// cut (nothing reached the new instance yet, or the target predates cuts), it is muted at
    /// once ([`Dataflow::leave`]).
    /// Answered at once (`Some`), or once the old instance is gone.
    pub fn leave_after(
        &mut self,
        node: &NodeId,
        cut: Cut,
        answer: Answer,
        events: &mpsc::Sender<Event>,
        config: &DaemonConfig,
    ) -> Option<Result<Cut, String>> {
        let running = self.nodes.get(node).is_some_and(|rt| rt.running);
        if cut.is_empty() || !running || self.moves.leaving.contains(node) {
            self.leave(node, events, config);
            return Some(Ok(Cut::new()));
        }
        tracing::info!("node `{node}` leaves after its inputs up to the cut");
        self.moves.leaving.insert(node.clone());
        self.moves.cutting.insert(node.clone(), answer);
        self.routing.filter_cut(node, cut);
        self.check_cut(node, std::time::Instant::now(), events, config);
        None
    }

    /// [`Dataflow::leave_after`]: stops the old instance once its cut is complete.
    pub fn check_cut(
        &mut self,
        node: &NodeId,
        since: std::time::Instant,
        events: &mpsc::Sender<Event>,
        config: &DaemonConfig,
    ) {
        let running = self.nodes.get(node).is_some_and(|rt| rt.running);
        if !self.moves.cutting.contains_key(node) || !running {
            return;
        }
        let complete = self.routing.cut_complete(node);
        if !complete && since.elapsed() < CUT_PATIENCE {
            let check = Event::Move(MoveStep::CheckCut {
                dataflow: self.spec.id,
                node: node.clone(),
                since,
            });
            return self.schedule(events, CUT_POLL, check);
        }
        if !complete {
            let missing: Vec<String> = self
                .routing
                .cut_missing(node)
                .iter()
                .map(|(input, cut, seen)| match seen {
                    Some(seen) => format!("`{input}` cut at {cut}, latest seen {seen}"),
                    None => format!("`{input}` cut at {cut}, nothing seen since"),
                })
                .collect();
            tracing::warn!(
                "node `{node}`: not every input reached the cut within {CUT_PATIENCE:?} ({}); \
                 stopping the old instance anyway",
                missing.join(", ")
            );
        }
        self.stop_leaving(node, events, config);
    }

    /// Sends a leaving instance `Stop`; after the stop grace, SIGTERM then SIGKILL.
    fn stop_leaving(&mut self, node: &NodeId, events: &mpsc::Sender<Event>, config: &DaemonConfig) {
        self.routing.push_stop(node);
        let evict = Event::Move(MoveStep::EvictNode {
            dataflow: self.spec.id,
            node: node.clone(),
            step: Escalation::Terminate,
        });
        self.schedule(events, config.stop_grace, evict);
    }

    /// Source `Leave` (and target `Abort`): mutes `node` and stops it quietly; the links are
    /// planned again without it.
    pub fn leave(&mut self, node: &NodeId, events: &mpsc::Sender<Event>, config: &DaemonConfig) {
        self.moves.muted.insert(node.clone());
        self.moves.leaving.insert(node.clone());
        self.moves.expecting.remove(node);
        if let Some(arrival) = self.moves.arriving.remove(node) {
            let aborted = Err("the move was aborted".into());
            arrival.answer.send(self.spec.id, node, "spawn", aborted);
        }
        if let Some(set) = self.spec.local_nodes.as_mut() {
            set.remove(node);
        }
        self.relink(true, events);
        let running = self.nodes.get(node).is_some_and(|rt| rt.running);
        if running {
            self.stop_leaving(node, events, config);
        } else {
            self.try_finish_leaving(node, events);
        }
    }

    /// `Settle` (target): [`SETTLE_GRACE`] from now, the links only the old instance needed
    /// end (the old instance's last messages, sent before its `Leave`, are still arriving on
    /// them).
    pub fn settle(&mut self, events: &mpsc::Sender<Event>) {
        let settle = Event::Move(MoveStep::SettleLinks {
            dataflow: self.spec.id,
        });
        self.schedule(events, SETTLE_GRACE, settle);
    }

    /// `Abort` (either side): links only for the nodes running here (and other moves in
    /// progress); an instance that arrived and was not switched leaves quietly.
    pub fn abort_move(
        &mut self,
        node: &NodeId,
        events: &mpsc::Sender<Event>,
        config: &DaemonConfig,
    ) {
        self.moves.expecting.remove(node);
        if self.moves.is_muted(node) && !self.moves.leaving.contains(node) {
            return self.leave(node, events, config);
        }
        self.relink(true, events);
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
            self.relink(true, events);
        }
    }

    /// The stop grace of a leaving node expired: SIGTERM, then SIGKILL.
    pub fn evict(
        &mut self,
        node: &NodeId,
        step: Escalation,
        events: &mpsc::Sender<Event>,
        config: &DaemonConfig,
    ) {
        if !self.moves.leaving.contains(node) {
            return;
        }
        let Some(rt) = self.nodes.get_mut(node) else {
            return;
        };
        let (true, Some(pid)) = (rt.running, rt.pid) else {
            return;
        };
        let signal = step.signal();
        tracing::info!("node `{node}` (moved away) did not exit in time; sending {signal}");
        rt.terminated_by = Some(signal);
        spawn::signal_group(pid, signal);
        if step == Escalation::Terminate {
            let kill = Event::Move(MoveStep::EvictNode {
                dataflow: self.spec.id,
                node: node.clone(),
                step: Escalation::Kill,
            });
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
        self.try_finish_leaving(node, events);
        Some(self.is_finished())
    }

    /// A control connection closed: for a leaving node, it may be the last thing it held.
    pub(super) fn quiet_control_closed(
        &mut self,
        node: &NodeId,
        events: &mpsc::Sender<Event>,
    ) -> Option<bool> {
        if !self.moves.is_quiet(node) {
            return None;
        }
        self.nodes.get_mut(node)?.control_open = false;
        self.try_finish_leaving(node, events);
        Some(self.is_finished())
    }

    /// Forgets a leaving node once its process exited and its control connection drained (an
    /// instance that left after a cut takes its links with it only now).
    pub(super) fn try_finish_leaving(&mut self, node: &NodeId, events: &mpsc::Sender<Event>) {
        let done = self
            .nodes
            .get(node)
            .is_none_or(|rt| !rt.running && !rt.control_open);
        if !done || !self.moves.leaving.remove(node) {
            return;
        }
        if let Some(answer) = self.moves.cutting.remove(node) {
            self.moves.expecting.remove(node);
            if let Some(set) = self.spec.local_nodes.as_mut() {
                set.remove(node);
            }
            self.relink(true, events);
            answer.send(self.spec.id, node, "leave", Ok(()));
        }
        self.moves.muted.remove(node);
        self.routing.make_remote(node);
        self.nodes.remove(node);
        self.outcomes.remove(node);
        self.pending.remove(node);
        tracing::info!(
            "node `{node}` of dataflow {} left this daemon",
            self.spec.id
        );
    }

    /// A muted node's message: dropped (a shared sample goes back to the node's pool).
    pub(super) fn drop_muted(&mut self, node: &NodeId, metadata: Metadata, data: DataRef) {
        tracing::debug!("node `{node}` is muted: dropped its message");
        self.routing.discard_output(node, metadata, data);
    }
}
