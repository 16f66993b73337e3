//! The daemons' answers driving a move, its commit, its failure and its end.

use std::time::Instant;

use adora_core::NodeId;
use adora_message::{
    control::ControlError,
    coordinator_to_cli::ControlReply,
    relocation::{Cut, MoveReport, RelocateStep},
};
use uuid::Uuid;

use super::{Phase, MOVE_STEP_TIMEOUT};
use crate::actor::{reply, Coordinator};

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Coordinator {
    /// A daemon answered a relocation step (`Switch` with the cut of the node's inputs).
    pub(crate) fn relocated(
        &mut self,
        daemon: &str,
        dataflow: Uuid,
        node: NodeId,
        step: &str,
        result: Result<Cut, ControlError>,
    ) {
        let key = (dataflow, node.clone());
        let Some(m) = self.moves.get_mut(&key) else {
            if let Err(e) = result {
                tracing::warn!("daemon `{daemon}`: step {step} of moving `{node}`: {e}");
            }
            return;
        };
        let (from, to) = (m.from.clone(), m.to.clone());
        let is = |name: &str, expected: &str| name == expected;
        match (m.phase, step) {
            (Phase::Spawning { .. }, _) | (Phase::Switching, _) if result.is_err() => {
                let e = result.expect_err("matched as an error");
                let why = format!("daemon `{daemon}` ({step}): {}", e.message);
                self.abort_move(dataflow, &node, why);
            }
            (Phase::Spawning { expected, spawned }, s) => {
                let expected = expected || (is(s, "expect") && daemon == from);
                let spawned = spawned || (is(s, "spawn") && daemon == to);
                m.phase = Phase::Spawning { expected, spawned };
                if spawned && m.ready_at.is_none() {
                    m.ready_at = Some(Instant::now());
                }
                if expected && spawned {
                    m.phase = Phase::Switching;
                    m.switch_sent = Some(Instant::now());
                    m.deadline = Instant::now() + MOVE_STEP_TIMEOUT;
                    let ready = m.ready_at.map(|r| millis(r - m.started)).unwrap_or(0);
                    self.relocate(&to, dataflow, &node, RelocateStep::Switch);
                    self.move_progress(
                        dataflow,
                        &node,
                        format!("`{node}` is running on `{to}` (ready after {ready} ms): switching its outputs"),
                    );
                }
            }
            (Phase::Switching, "switch") if daemon == to => {
                let cut = result.unwrap_or_default();
                self.commit_move(dataflow, &node, cut)
            }
            (Phase::Leaving, "leave") if daemon == from => {
                // Only now: the old instance is muted; its last messages are on the way.
                self.relocate(&to, dataflow, &node, RelocateStep::Settle);
                let m = self.moves.get(&key).expect("looked up above");
                let switch = m.switch_sent.unwrap_or(m.started);
                let report = MoveReport {
                    dataflow,
                    node: node.clone(),
                    from,
                    to,
                    start_ms: m.ready_at.map(|r| millis(r - m.started)).unwrap_or(0),
                    overlap_ms: millis(switch.elapsed()),
                    total_ms: millis(m.started.elapsed()),
                };
                let result = result.map(|_| report).map_err(|e| e.message);
                self.move_done(dataflow, &node, result);
            }
            _ => {}
        }
    }

    /// `Switch` answered: the placement names the target from now on (stored), and the old
    /// instance is told to leave after the inputs up to `cut`.
    fn commit_move(&mut self, dataflow: Uuid, node: &NodeId, cut: Cut) {
        let Some(m) = self.moves.get_mut(&(dataflow, node.clone())) else {
            return;
        };
        m.phase = Phase::Leaving;
        m.deadline = Instant::now() + MOVE_STEP_TIMEOUT;
        let (from, to) = (m.from.clone(), m.to.clone());
        if let Some(flow) = self.flows.get_mut(&dataflow) {
            flow.record.placement.insert(node.clone(), to.clone());
            if let Some(part) = flow.parts.get_mut(&from) {
                part.nodes.remove(node);
                if part.nodes.is_empty() {
                    flow.parts.remove(&from);
                }
            }
            let part = flow.parts.entry(to.clone()).or_default();
            part.nodes.insert(node.clone());
            part.finished = false;
        }
        self.save(dataflow);
        self.node_stats.forget(dataflow, node);
        self.relocate_with(&from, dataflow, node, RelocateStep::Leave, cut);
        self.move_progress(
            dataflow,
            node,
            format!("`{node}` delivers from `{to}`: stopping the old instance on `{from}`"),
        );
    }

    /// The move failed before its commit: both daemons undo it; the old instance keeps running.
    fn abort_move(&mut self, dataflow: Uuid, node: &NodeId, why: String) {
        let Some(m) = self.moves.get(&(dataflow, node.clone())) else {
            return;
        };
        let (from, to) = (m.from.clone(), m.to.clone());
        self.relocate(&to, dataflow, node, RelocateStep::Abort);
        self.relocate(&from, dataflow, node, RelocateStep::Abort);
        let message = format!("cannot move `{node}` to `{to}`: {why}; it still runs on `{from}`");
        self.move_done(dataflow, node, Err(message));
    }

    /// A move ended (`Ok`: the node runs on its new daemon, the old instance was stopped). The
    /// place to hook what waits for moves (a drain).
    pub(crate) fn move_done(
        &mut self,
        dataflow: Uuid,
        node: &NodeId,
        result: Result<MoveReport, String>,
    ) {
        let Some(m) = self.moves.remove(&(dataflow, node.clone())) else {
            return;
        };
        self.drain_move_done(dataflow, node, &result);
        match &result {
            Ok(r) => tracing::info!(
                "moved node `{node}` of dataflow {dataflow} from `{}` to `{}` in {} ms",
                r.from,
                r.to,
                r.total_ms
            ),
            Err(e) => tracing::warn!("{e}"),
        }
        if let Some((tx, request)) = m.client {
            let body = match result {
                Ok(report) => ControlReply::Moved(report),
                Err(e) => ControlReply::Error(ControlError::daemon(e)),
            };
            reply(&tx, request, body);
        }
    }

    /// Every heartbeat tick: moves stuck past their deadline fail (before the commit) or end
    /// (after it: the old instance is stopped by its daemon's escalation anyway).
    pub(crate) fn moves_tick(&mut self) {
        let now = Instant::now();
        let late: Vec<((Uuid, NodeId), Phase)> = self
            .moves
            .iter()
            .filter(|(_, m)| m.deadline <= now)
            .map(|(k, m)| (k.clone(), m.phase))
            .collect();
        for ((dataflow, node), phase) in late {
            match phase {
                Phase::Leaving => {
                    let why = "the old instance's daemon did not confirm its stop in time (the node runs on its new daemon)";
                    self.move_done(dataflow, &node, Err(why.into()));
                }
                _ => {
                    let why = "the new instance was not ready in time".to_owned();
                    self.abort_move(dataflow, &node, why);
                }
            }
        }
    }

    /// A daemon was lost: the moves it takes part in fail (before their commit) or end.
    pub(crate) fn moves_daemon_gone(&mut self, daemon: &str) {
        let affected: Vec<((Uuid, NodeId), Phase)> = self
            .moves
            .iter()
            .filter(|(_, m)| m.from == daemon || m.to == daemon)
            .map(|(k, m)| (k.clone(), m.phase))
            .collect();
        for ((dataflow, node), phase) in affected {
            let why = format!("daemon `{daemon}` was lost");
            match phase {
                Phase::Leaving => self.move_done(dataflow, &node, Err(why)),
                _ => self.abort_move(dataflow, &node, why),
            }
        }
    }

    /// A daemon reports `nodes` of a known dataflow at registration: those the stored placement
    /// puts on another daemon are old instances of a move whose `Leave` never reached it (a
    /// coordinator restart or a lost connection): they are told to leave and are returned, so
    /// that the placement is not changed back.
    pub(crate) fn stale_instances(
        &mut self,
        daemon: &str,
        dataflow: Uuid,
        nodes: &std::collections::BTreeSet<NodeId>,
    ) -> Vec<NodeId> {
        let Some(flow) = self.flows.get(&dataflow) else {
            return Vec::new();
        };
        let stale: Vec<NodeId> = nodes
            .iter()
            .filter(|n| {
                flow.record
                    .placement
                    .get(*n)
                    .is_some_and(|placed| placed != daemon)
            })
            .cloned()
            .collect();
        for node in &stale {
            tracing::warn!(
                "daemon `{daemon}` still runs node `{node}` of dataflow {dataflow}, which moved to `{}`: stopping that instance",
                flow.record.placement[node]
            );
        }
        for node in &stale {
            self.relocate(daemon, dataflow, node, RelocateStep::Leave);
        }
        stale
    }
}
