//! Moving one running node to another daemon, make-before-break (`adora node move`; the drain
//! of a machine builds on [`Coordinator::start_move`] and [`Coordinator::move_done`]).
//!
//! A move is a small state machine driven by the daemons' `Relocated` answers (the daemon
//! steps are described in `adora_message::relocation`):
//!
//! 1. **Spawning**: `Expect` to the source, `Spawn` to the target. Both must answer Ok (the
//!    new instance connected, its published outputs matched) within [`MOVE_SPAWN_TIMEOUT`].
//! 2. **Switching**: `Switch` to the target. Its Ok is the **commit point**: the dataflow's
//!    placement names the target and is stored.
//! 3. **Leaving**: `Leave` to the source (and `Settle` to the target); the source's answer
//!    ends the move.
//!
//! Failure before the commit (an error, a timeout, a daemon lost) sends `Abort` to both: the
//! new instance is stopped quietly, the old one never stopped running, the placement is
//! untouched. Nothing of a move is stored: a coordinator restart forgets it; the daemons, on
//! losing the coordinator, stop a new instance that was not switched yet, and a daemon that
//! reports a node the stored placement puts elsewhere (an old instance whose `Leave` was cut
//! off) is told to let it leave (see [`Coordinator::stale_instances`]).

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use adora_core::{
    placement::{self, Candidate},
    NodeId,
};
use adora_message::{
    control::{ControlError, DataflowStatus, ErrorKind},
    coordinator_to_cli::ControlReply,
    coordinator_to_daemon::{DaemonCommand, SpawnDataflow},
    relocation::{RelocateStep, Relocation},
};
use uuid::Uuid;

use crate::actor::{reply, ClientTx, Coordinator};

/// How long the new instance has to connect (and its published outputs to be matched) before
/// the move is aborted: longer than a daemon's default node connect timeout (30 s).
pub const MOVE_SPAWN_TIMEOUT: Duration = Duration::from_secs(45);

/// How long each later step may take before the move is given up.
pub const MOVE_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a move is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// `Expect` and `Spawn` sent; waiting for both answers.
    Spawning { expected: bool, spawned: bool },
    /// `Switch` sent.
    Switching,
    /// Committed; `Leave` sent.
    Leaving,
}

/// One move in progress.
#[derive(Debug)]
pub(crate) struct Move {
    pub from: String,
    pub to: String,
    pub phase: Phase,
    started: Instant,
    ready_at: Option<Instant>,
    switch_sent: Option<Instant>,
    /// When the current phase gives up.
    deadline: Instant,
    /// The client of `adora node move`, if any (a drain has none).
    client: Option<(ClientTx, u64)>,
}

/// Moves in progress, by (dataflow, node).
pub(crate) type Moves = HashMap<(Uuid, NodeId), Move>;

fn invalid(message: String) -> ControlError {
    ControlError::new(ErrorKind::InvalidRequest, message)
}

impl Coordinator {
    /// Starts moving `node` of `dataflow` to another connected daemon that placement accepts
    /// for it, none of `exclude` and not its current one. Returns the target's name; the move
    /// then runs on its own and ends in [`Self::move_done`].
    pub(crate) fn start_move(
        &mut self,
        dataflow: Uuid,
        node: &NodeId,
        exclude: &BTreeSet<String>,
    ) -> Result<String, ControlError> {
        self.begin_move(dataflow, node, None, exclude, None)
    }

    /// `MoveNode` (`adora node move`): progress lines, then `Moved` or an error.
    pub(crate) fn move_request(
        &mut self,
        dataflow: &str,
        node: &NodeId,
        to: Option<String>,
        tx: ClientTx,
        request: u64,
    ) {
        let started = self.resolve(dataflow).and_then(|id| {
            let client = Some((tx.clone(), request));
            self.begin_move(id, node, to.as_deref(), &BTreeSet::new(), client)
        });
        if let Err(e) = started {
            reply(&tx, request, ControlReply::Error(e));
        }
    }

    fn begin_move(
        &mut self,
        dataflow: Uuid,
        node: &NodeId,
        to: Option<&str>,
        exclude: &BTreeSet<String>,
        client: Option<(ClientTx, u64)>,
    ) -> Result<String, ControlError> {
        let from = self.movable(dataflow, node)?;
        let to = self.move_target(dataflow, node, &from, to, exclude)?;
        let spawn = self.move_spawn(dataflow, node, &to)?;
        if !self.flows[&dataflow].watchers.is_empty() {
            // Attached clients keep getting the node's log lines from its new daemon.
            let watch = DaemonCommand::WatchLogs {
                dataflow,
                watch: true,
            };
            self.send_to_daemon(&to, watch);
        }
        // Recorders and `topic` keep getting the node's outputs from its new daemon.
        self.taps_follow_move(dataflow, node, &to);
        let expect = self.relocate(&from, dataflow, node, RelocateStep::Expect);
        let spawned = self.relocate(&to, dataflow, node, RelocateStep::Spawn(Box::new(spawn)));
        if !expect || !spawned {
            self.relocate(&to, dataflow, node, RelocateStep::Abort);
            self.relocate(&from, dataflow, node, RelocateStep::Abort);
            return Err(ControlError::daemon(format!(
                "cannot reach daemon `{}`",
                if expect { &to } else { &from }
            )));
        }
        tracing::info!("moving node `{node}` of dataflow {dataflow} from `{from}` to `{to}`");
        let now = Instant::now();
        let entry = Move {
            from: from.clone(),
            to: to.clone(),
            phase: Phase::Spawning {
                expected: false,
                spawned: false,
            },
            started: now,
            ready_at: None,
            switch_sent: None,
            deadline: now + MOVE_SPAWN_TIMEOUT,
            client,
        };
        self.moves.insert((dataflow, node.clone()), entry);
        self.move_progress(
            dataflow,
            node,
            format!("starting `{node}` on `{to}` (it runs on `{from}`)"),
        );
        Ok(to)
    }

    /// The daemon running `node` when it may move now, or why not.
    fn movable(&self, dataflow: Uuid, node: &NodeId) -> Result<String, ControlError> {
        let flow = self.flows.get(&dataflow).ok_or_else(|| {
            ControlError::new(ErrorKind::NotFound, format!("no dataflow {dataflow}"))
        })?;
        let record = &flow.record;
        if record.status != DataflowStatus::Running || self.pending_starts.contains_key(&dataflow) {
            return Err(invalid(format!(
                "dataflow `{}` is {}: only a running dataflow's nodes can move",
                record.name, record.status
            )));
        }
        let spec = record
            .descriptor
            .nodes
            .iter()
            .find(|n| &n.id == node)
            .ok_or_else(|| {
                ControlError::new(
                    ErrorKind::NotFound,
                    format!("dataflow `{}` has no node `{node}`", record.name),
                )
            })?;
        if let Some(machine) = &spec.deploy().machine {
            return Err(invalid(format!(
                "node `{node}` is pinned to machine `{machine}` (deploy.machine): only nodes placed by labels or on unnamed daemons can move"
            )));
        }
        if self.moves.contains_key(&(dataflow, node.clone())) {
            return Err(invalid(format!("node `{node}` is already being moved")));
        }
        let from = record.placement.get(node).cloned().ok_or_else(|| {
            ControlError::new(
                ErrorKind::Internal,
                format!("node `{node}` has no placement"),
            )
        })?;
        if self.daemon_tx(&from).is_none() {
            return Err(ControlError::daemon(format!(
                "daemon `{from}` running `{node}` is not connected: a live move needs the old instance"
            )));
        }
        Ok(from)
    }

    /// The daemon the node moves to: `to` when given (checked against placement), else the
    /// first connected daemon placement accepts, other than `from` and those in `exclude`.
    fn move_target(
        &self,
        dataflow: Uuid,
        node: &NodeId,
        from: &str,
        to: Option<&str>,
        exclude: &BTreeSet<String>,
    ) -> Result<String, ControlError> {
        let spec = self.flows[&dataflow]
            .record
            .descriptor
            .nodes
            .iter()
            .find(|n| &n.id == node)
            .expect("checked by `movable`");
        let daemons: Vec<_> = self
            .daemons
            .iter()
            .filter(|d| d.tx.is_some() && d.name() != from && !exclude.contains(d.name()))
            .filter(|d| to.is_none_or(|t| d.name() == t))
            .collect();
        if let Some(to) = to {
            if to == from {
                return Err(invalid(format!("node `{node}` already runs on `{to}`")));
            }
            if daemons.is_empty() {
                return Err(ControlError::new(
                    ErrorKind::NotFound,
                    format!("no connected daemon `{to}` (see `adora cluster status`)"),
                ));
            }
        }
        // As at start: figures, thresholds, running requests and cordons count.
        let mut reserved = self.reserved_by_daemon();
        let candidates: Vec<Candidate> = daemons
            .iter()
            .map(|d| self.candidate(d, &mut reserved))
            .collect();
        match placement::place_node(spec, &candidates) {
            Ok(i) => Ok(daemons[i].name().to_owned()),
            Err(failure) => Err(ControlError::new(
                ErrorKind::Placement,
                match to {
                    Some(to) => format!("node `{node}` cannot run on `{to}`: {failure}"),
                    None => format!(
                        "no other daemon can run node `{node}` (it runs on `{from}`): {failure}"
                    ),
                },
            )),
        }
    }

    /// The target's `Spawn`: its part of the dataflow with the moved node.
    fn move_spawn(
        &self,
        dataflow: Uuid,
        node: &NodeId,
        to: &str,
    ) -> Result<SpawnDataflow, ControlError> {
        let flow = &self.flows[&dataflow];
        let record = &flow.record;
        let mut nodes: BTreeSet<NodeId> = flow
            .parts
            .get(to)
            .filter(|p| !p.finished)
            .map(|p| p.nodes.clone())
            .unwrap_or_default();
        nodes.insert(node.clone());
        let spawn = SpawnDataflow {
            id: dataflow,
            name: record.name.clone(),
            descriptor: std::sync::Arc::new(record.descriptor.clone()),
            working_dir: record.working_dir.clone(),
            nodes,
            artifacts: record.artifacts.clone(),
            build: false,
        };
        let alone = SpawnDataflow {
            nodes: [node.clone()].into(),
            ..spawn.clone()
        };
        if alone.needs_preparation() {
            return Err(invalid(format!(
                "node `{node}` needs a build, a download or a checkout before it runs (distribute: scp | http, git): moving such nodes is not supported yet"
            )));
        }
        Ok(spawn)
    }

    /// Sends one relocation step; false when the daemon is not connected.
    fn relocate(
        &mut self,
        daemon: &str,
        dataflow: Uuid,
        node: &NodeId,
        step: RelocateStep,
    ) -> bool {
        self.relocate_with(daemon, dataflow, node, step, Default::default())
    }

    /// [`Coordinator::relocate`] with a cut (for `Leave`).
    fn relocate_with(
        &mut self,
        daemon: &str,
        dataflow: Uuid,
        node: &NodeId,
        step: RelocateStep,
        cut: adora_message::relocation::Cut,
    ) -> bool {
        let relocation = Relocation {
            dataflow,
            node: node.clone(),
            step,
            cut,
        };
        self.send_to_daemon(daemon, DaemonCommand::Relocate(relocation))
            .is_some()
    }

    fn move_progress(&self, dataflow: Uuid, node: &NodeId, text: String) {
        tracing::info!("move of `{node}` ({dataflow}): {text}");
        if let Some((tx, request)) = self
            .moves
            .get(&(dataflow, node.clone()))
            .and_then(|m| m.client.as_ref())
        {
            reply(tx, *request, ControlReply::MoveProgress(text));
        }
    }
}

mod steps;
#[cfg(test)]
mod tests;
