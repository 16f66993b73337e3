//! `Relocate`: this daemon's side of moving a running node between daemons (the steps are
//! described in `adora_message::relocation`; the dataflow's side is `dataflow/relocate.rs`).

use adora_core::NodeId;
use adora_message::{
    coordinator_to_daemon::SpawnDataflow,
    relocation::{Cut, RelocateStep, Relocation},
};
use uuid::Uuid;

use super::Service;
use crate::{actor::Daemon, dataflow::Answer};

impl Daemon {
    /// One step of a move; answered with `Relocated` (for `Spawn`: once the new instance is
    /// ready, or failed).
    pub(super) fn relocate(&mut self, id: u64, relocation: Relocation, service: &mut Service) {
        let Relocation {
            dataflow,
            node,
            step,
            cut,
        } = relocation;
        let answer = Answer {
            id,
            reports: service.reports.clone(),
        };
        tracing::info!("move of node `{node}` ({dataflow}): {}", step.name());
        // A move needs every message of the dataflow on the daemon's path (mutes, cuts).
        if let Some(df) = self.dataflows.get_mut(&dataflow) {
            df.routing.close_lanes(|_, _| true);
        }
        let name = step.name();
        let result = match step {
            RelocateStep::Spawn(spawn) => {
                return self.relocate_spawn(answer, &node, *spawn, service)
            }
            RelocateStep::Leave => {
                let leaving = answer.clone();
                self.relocate_step(dataflow, &node, &RelocateStep::Leave, (cut, Some(leaving)))
            }
            step => self.relocate_step(dataflow, &node, &step, (cut, None)),
        };
        // `None`: answered once the old instance is gone (a `Leave` after a cut).
        if let Some(result) = result {
            answer.send_cut(dataflow, &node, name, result);
        }
        // A part left without nodes (its only node moved away) ends here.
        self.settle(dataflow, |df, _| df.is_finished());
    }

    /// Every step but `Spawn`, on a dataflow running here (`Switch` answers with the cut,
    /// `Leave` applies it).
    fn relocate_step(
        &mut self,
        dataflow: Uuid,
        node: &NodeId,
        step: &RelocateStep,
        (cut, answer): (Cut, Option<Answer>),
    ) -> Option<Result<Cut, String>> {
        let Some(df) = self.dataflows.get_mut(&dataflow) else {
            return Some(match step {
                // Nothing to undo or settle: the part already ended.
                RelocateStep::Abort | RelocateStep::Settle => Ok(Cut::new()),
                _ => Err(format!("dataflow {dataflow} does not run on this daemon")),
            });
        };
        let (events, config) = (&self.events_tx, &self.config);
        match step {
            RelocateStep::Expect => df.expect_leaving(node, events),
            RelocateStep::Switch => return Some(df.switch_in(node)),
            RelocateStep::Leave => {
                let answer = answer.expect("a `Leave` comes with its answer");
                return df.leave_after(node, cut, answer, events, config);
            }
            RelocateStep::Settle => df.settle(events),
            RelocateStep::Abort => df.abort_move(node, events, config),
            RelocateStep::Spawn(_) => unreachable!("handled by relocate_spawn"),
        }
        Some(Ok(Cut::new()))
    }

    /// `Spawn`: the new instance, in the running part or in a new one.
    fn relocate_spawn(
        &mut self,
        answer: Answer,
        node: &NodeId,
        spawn: SpawnDataflow,
        service: &mut Service,
    ) {
        let dataflow = spawn.id;
        if !self.dataflows.contains_key(&dataflow) {
            // A new part (or a new one after an earlier part here ended), without the moved
            // node: it joins below like in a running part.
            service.names.remove(&dataflow);
            let mut part = spawn;
            part.nodes.remove(node);
            if let Err(e) = self.spawn_for_coordinator(part, service) {
                return answer.send(dataflow, node, "spawn", Err(e));
            }
        }
        let result = match self.dataflows.get_mut(&dataflow) {
            Some(df) => df.add_arriving(node, answer.clone(), &self.events_tx),
            None => Err(format!("dataflow {dataflow} could not start here")),
        };
        if let Err(e) = result {
            answer.send(dataflow, node, "spawn", Err(e));
        }
        self.settle(dataflow, |df, _| df.is_finished());
        if !self.dataflows.contains_key(&dataflow) {
            // A tap sent ahead of this `Spawn` (the node's outputs were tapped) ends with it.
            self.taps.end_dataflow(dataflow);
        }
    }

    /// The coordinator is gone: every move in progress here is forgotten (see
    /// `Dataflow::abort_moves`).
    pub(super) fn abort_moves(&mut self) {
        let ids: Vec<Uuid> = self.dataflows.keys().copied().collect();
        for id in ids {
            self.settle(id, |df, env| {
                df.abort_moves(env.events, env.config);
                df.is_finished()
            });
        }
    }
}
