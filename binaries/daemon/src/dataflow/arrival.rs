//! The new instance of a moving node on its target daemon: started muted, and answered ready
//! (`Relocated` for `Spawn`) once it is connected, its published outputs have their remote
//! subscribers, and a message arrived on each of its inputs from other machines (the proof that
//! the remote publishers route to this daemon now: from then on it receives everything the old
//! instance does). An input that sends nothing for [`INPUT_PATIENCE`] does not hold the move.

use std::{collections::BTreeSet, time::Duration};

use adora_core::{descriptor::InputSource, DataId, NodeId};
use tokio::sync::mpsc;

use super::{relocate::Answer, Dataflow};
use crate::{
    event::{Event, MoveStep},
    remote::links::OutputKey,
    spawn,
};

/// How long an arriving instance waits for the first message of each remote input before it is
/// declared ready anyway (an input that is silent now cannot tell whether its link works).
pub const INPUT_PATIENCE: Duration = Duration::from_secs(5);

/// A new instance that has not been answered yet.
#[derive(Debug)]
pub(crate) struct Arrival {
    /// Where `Relocated` goes.
    pub answer: Answer,
    /// Its control connection registered.
    connected: bool,
    /// Remote outputs it reads that have not delivered a message here yet.
    awaiting: BTreeSet<OutputKey>,
    /// [`INPUT_PATIENCE`] passed.
    patience_over: bool,
}

impl Dataflow {
    /// Target, `Spawn`: starts `node` here muted; `answer` gets `Relocated` once it is ready
    /// (see the module), or when it failed.
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
        let local = self.local_set();
        let awaiting = spec
            .inputs
            .values()
            .filter_map(|input| match input.resolve() {
                Ok(InputSource::Node { node: from, output }) if !local.contains(&from) => {
                    Some((from, output))
                }
                _ => None,
            })
            .collect();
        if let Some(set) = self.spec.local_nodes.as_mut() {
            set.insert(node.clone());
        }
        self.moves.muted.insert(node.clone());
        let arrival = Arrival {
            answer,
            connected: false,
            awaiting,
            patience_over: false,
        };
        self.moves.arriving.insert(node.clone(), arrival);
        let new_timers = self.routing.make_local(&self.spec.descriptor, node);
        self.routing.track_cut(node);
        if self.started {
            self.spawn_timer_intervals(events, &new_timers);
        }
        self.relink(false, events);
        // A new part holds no other node: nothing to wait for at its start barrier.
        self.maybe_release_barrier(events);
        let patience = Event::Move(MoveStep::ArrivalPatience {
            dataflow: self.spec.id,
            node: node.clone(),
        });
        self.schedule(events, INPUT_PATIENCE, patience);
        self.spawn(node, &command, events.clone());
        Ok(())
    }

    /// An arriving node's control connection registered.
    pub(super) fn arrival_connected(&mut self, node: &NodeId) {
        if let Some(arrival) = self.moves.arriving.get_mut(node) {
            arrival.connected = true;
            self.check_arrivals();
        }
    }

    /// A message of a remote output arrived: the inputs it feeds are linked.
    pub(super) fn arrival_input_seen(&mut self, from: &NodeId, output: &DataId) {
        if self.moves.arriving.is_empty() {
            return;
        }
        let key = (from.clone(), output.clone());
        let mut seen = false;
        for arrival in self.moves.arriving.values_mut() {
            seen |= arrival.awaiting.remove(&key);
        }
        if seen {
            self.check_arrivals();
        }
    }

    /// [`INPUT_PATIENCE`] passed for `node`: silent remote inputs do not hold it any longer.
    pub fn arrival_patience(&mut self, node: &NodeId) {
        if let Some(arrival) = self.moves.arriving.get_mut(node) {
            if !arrival.awaiting.is_empty() {
                let silent: Vec<String> = arrival
                    .awaiting
                    .iter()
                    .map(|(n, o)| format!("`{n}/{o}`"))
                    .collect();
                tracing::warn!(
                    "node `{node}` moving here: no message yet on {} after {}; going on (messages sent before the link was up may be missed)",
                    silent.join(", "),
                    humantime::format_duration(INPUT_PATIENCE)
                );
            }
            arrival.patience_over = true;
            self.check_arrivals();
        }
    }

    /// Answers the arriving nodes that are ready.
    pub(super) fn check_arrivals(&mut self) {
        let unmatched = &self.remote.unmatched;
        let ready: Vec<NodeId> = self
            .moves
            .arriving
            .iter()
            .filter(|(node, a)| {
                a.connected
                    && (a.awaiting.is_empty() || a.patience_over)
                    && !unmatched.iter().any(|(n, _)| n == *node)
            })
            .map(|(node, _)| node.clone())
            .collect();
        for node in ready {
            if let Some(arrival) = self.moves.arriving.remove(&node) {
                tracing::info!(
                    "node `{node}` of dataflow {} is ready here (muted)",
                    self.spec.id
                );
                arrival.answer.send(self.spec.id, &node, "spawn", Ok(()));
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
        let Some(arrival) = self.moves.arriving.remove(node) else {
            return;
        };
        tracing::warn!("node `{node}` cannot move here: {reason}");
        arrival
            .answer
            .send(self.spec.id, node, "spawn", Err(reason));
        self.moves.leaving.insert(node.clone());
        if let Some(set) = self.spec.local_nodes.as_mut() {
            set.remove(node);
        }
        self.relink(true, events);
        self.try_finish_leaving(node, events);
    }
}
