//! Draining a machine (`adora cluster drain`): cordon it, move its nodes placed by labels (or
//! unnamed) live to other machines ([`Coordinator::start_move`], make-before-break), stop its
//! nodes pinned by `deploy.machine` at the deadline (at once with `force`), and say so in their
//! dataflows (`degraded`).
//!
//! The drain is a record in the machine's [`MachineMaintenance`] (stored): it survives a
//! coordinator restart, which forgets moves in flight — a node the stored placement still puts
//! on the machine is moved again, one it puts elsewhere has moved. It advances on move results
//! and on every heartbeat tick (deadlines, retries of nodes that found no target yet). While it
//! runs it holds the machine's claim (no upgrade, no second drain, no new update lock); it ends
//! when every node moved or was stopped, leaving the machine cordoned.

use std::{collections::BTreeSet, time::Duration};

use adora_core::NodeId;
use adora_message::{
    control::ControlError,
    coordinator_to_daemon::DaemonCommand,
    maintenance::{Claim, Cordon, DrainNodeState, DrainState, DrainedNode, Operation},
    relocation::MoveReport,
};
use adora_store::now_ms;
use uuid::Uuid;

use crate::actor::Coordinator;

/// Moves of one drain in flight at once.
const PARALLEL_MOVES: usize = 4;

/// Longest drain deadline.
const MAX_DEADLINE: Duration = Duration::from_secs(7 * 24 * 3600);

impl Coordinator {
    /// Starts draining `machine`; refused while another operation has it or (without `force`)
    /// while it has update locks.
    pub(crate) fn start_drain(
        &mut self,
        machine: &str,
        deadline: Duration,
        force: bool,
    ) -> Result<String, ControlError> {
        let machine = self.known_machine(machine)?;
        let now = now_ms();
        self.check_claimable(&machine, Uuid::nil(), force, now)?;
        let nodes = self.nodes_on(&machine);
        let deadline = deadline.min(MAX_DEADLINE);
        tracing::info!(
            "draining machine `{machine}`: {} node(s), pinned ones stopped {}",
            nodes.len(),
            if force {
                "at once".to_owned()
            } else {
                format!("after {deadline:?}")
            }
        );
        self.update_maintenance(&machine, |m| {
            if m.cordon.is_none() {
                m.cordon = Some(Cordon {
                    reason: "drained (adora cluster drain)".into(),
                    since_ms: now,
                });
            }
            m.claim = Some(Claim {
                operation: Operation::Drain,
                id: Uuid::new_v4(),
                since_ms: now,
                expires_ms: u64::MAX,
            });
            m.drain = Some(DrainState {
                since_ms: now,
                deadline_ms: now.saturating_add(deadline.as_millis() as u64),
                force,
                nodes,
                done: false,
                waiting: None,
            });
        });
        self.drain_step(&machine);
        Ok(machine)
    }

    /// The nodes of running dataflows placed on `machine`, pinned ones marked.
    fn nodes_on(&self, machine: &str) -> Vec<DrainedNode> {
        let mut flows: Vec<_> = self
            .flows
            .values()
            .filter(|f| !f.record.status.is_done())
            .collect();
        flows.sort_by_key(|f| f.seq);
        let mut nodes = Vec::new();
        for flow in flows {
            for (node, daemon) in &flow.record.placement {
                if daemon != machine {
                    continue;
                }
                let pinned = flow
                    .record
                    .descriptor
                    .nodes
                    .iter()
                    .any(|n| &n.id == node && n.deploy().machine.is_some());
                nodes.push(DrainedNode {
                    dataflow: flow.record.id,
                    dataflow_name: flow.record.name.clone(),
                    node: node.clone(),
                    state: if pinned {
                        DrainNodeState::Pinned
                    } else {
                        DrainNodeState::Pending
                    },
                });
            }
        }
        nodes
    }

    /// Advances every running drain (deadlines, retries); called on each heartbeat tick.
    pub(crate) fn drains_tick(&mut self) {
        let draining: Vec<String> = self
            .maintenance
            .values()
            .filter(|m| m.drain.as_ref().is_some_and(|d| !d.done))
            .map(|m| m.machine.clone())
            .collect();
        for machine in draining {
            self.drain_step(&machine);
        }
    }

    /// A move ended: if a drain waited for it, record where the node went (or why it did not).
    pub(crate) fn drain_move_done(
        &mut self,
        dataflow: Uuid,
        node: &NodeId,
        result: &Result<MoveReport, String>,
    ) {
        let machine = self.maintenance.values().find_map(|m| {
            let d = m.drain.as_ref()?;
            d.nodes
                .iter()
                .any(|n| {
                    n.dataflow == dataflow
                        && &n.node == node
                        && matches!(n.state, DrainNodeState::Moving { .. })
                })
                .then(|| m.machine.clone())
        });
        let Some(machine) = machine else {
            return;
        };
        let (state, waiting) = match result {
            Ok(report) => (
                DrainNodeState::Moved {
                    to: report.to.clone(),
                },
                None,
            ),
            Err(e) => (DrainNodeState::Pending, Some(e.clone())),
        };
        self.update_maintenance(&machine, |m| {
            if let Some(d) = m.drain.as_mut() {
                for n in &mut d.nodes {
                    if n.dataflow == dataflow && &n.node == node {
                        n.state = state.clone();
                    }
                }
                if waiting.is_some() {
                    d.waiting = waiting;
                }
            }
        });
        self.drain_step(&machine);
    }

    /// One step of `machine`'s drain: start moves, stop what must stop, end when all is done.
    fn drain_step(&mut self, machine: &str) {
        let Some(drain) = self.maintenance.get(machine).and_then(|m| m.drain.clone()) else {
            return;
        };
        if drain.done {
            return;
        }
        let (mut nodes, mut waiting, stop) = self.drain_plan(machine, &drain);
        for (dataflow, node, why) in stop {
            if !self.stop_drained_node(machine, dataflow, &node, &why) {
                // Its daemon is not connected: stopped once it is back (next ticks).
                for n in nodes
                    .iter_mut()
                    .filter(|n| n.dataflow == dataflow && n.node == node)
                {
                    n.state = match n.state {
                        DrainNodeState::Failed { .. } => DrainNodeState::Pending,
                        _ => DrainNodeState::Pinned,
                    };
                }
                waiting = Some(format!(
                    "the daemon of `{machine}` is not connected: `{node}` is stopped once it is back"
                ));
            }
        }
        let done = nodes.iter().all(|n| {
            matches!(
                n.state,
                DrainNodeState::Moved { .. }
                    | DrainNodeState::Stopped
                    | DrainNodeState::Failed { .. }
            )
        });
        if done {
            tracing::info!("machine `{machine}` is drained");
        }
        if nodes != drain.nodes || waiting != drain.waiting || done {
            self.update_maintenance(machine, |m| {
                if let Some(d) = m.drain.as_mut() {
                    d.nodes = nodes;
                    d.waiting = waiting;
                    d.done = done;
                }
                if done
                    && m.claim
                        .as_ref()
                        .is_some_and(|c| c.operation == Operation::Drain)
                {
                    m.claim = None;
                }
            });
        }
    }

    /// Each node's next state in `drain`, why the drain waits (if it does), and the nodes to stop
    /// now with why. Starts the moves it can.
    fn drain_plan(&mut self, machine: &str, drain: &DrainState) -> DrainPlan {
        let stop_now = drain.force || now_ms() >= drain.deadline_ms;
        let mut nodes = drain.nodes.clone();
        let mut waiting = drain.waiting.clone();
        let mut moving = nodes
            .iter()
            .filter(|n| matches!(n.state, DrainNodeState::Moving { .. }))
            .count();
        let mut stop = Vec::new();
        for n in &mut nodes {
            match self.where_now(n.dataflow, &n.node, machine) {
                Where::Gone => {
                    if !matches!(
                        n.state,
                        DrainNodeState::Moved { .. } | DrainNodeState::Stopped
                    ) {
                        n.state = DrainNodeState::Stopped;
                    }
                    continue;
                }
                Where::Elsewhere(to) if !matches!(n.state, DrainNodeState::Moving { .. }) => {
                    n.state = DrainNodeState::Moved { to };
                    continue;
                }
                _ => {}
            }
            match &n.state {
                DrainNodeState::Pending if moving < PARALLEL_MOVES => {
                    // Moved if it can be, even with `force` (which only hurries pinned nodes);
                    // one that cannot is retried until the deadline, then stopped.
                    let exclude = BTreeSet::from([machine.to_owned()]);
                    match self.start_move(n.dataflow, &n.node, &exclude) {
                        Ok(to) => {
                            n.state = DrainNodeState::Moving { to };
                            moving += 1;
                        }
                        Err(e) if stop_now => {
                            let reason = e.message;
                            stop.push((
                                n.dataflow,
                                n.node.clone(),
                                format!("it could not move: {reason}"),
                            ));
                            n.state = DrainNodeState::Failed { reason };
                        }
                        Err(e) => waiting = Some(format!("node `{}`: {}", n.node, e.message)),
                    }
                }
                DrainNodeState::Pinned if stop_now => {
                    stop.push((n.dataflow, n.node.clone(), "it is pinned there".into()));
                    n.state = DrainNodeState::Stopped;
                }
                _ => {}
            }
        }
        (nodes, waiting, stop)
    }

    /// Where a drained node runs now, per its dataflow's (stored) placement.
    fn where_now(&self, dataflow: Uuid, node: &NodeId, machine: &str) -> Where {
        let Some(flow) = self
            .flows
            .get(&dataflow)
            .filter(|f| !f.record.status.is_done())
        else {
            return Where::Gone;
        };
        match flow.record.placement.get(node) {
            Some(daemon) if daemon == machine => Where::Here,
            Some(daemon) => Where::Elsewhere(daemon.clone()),
            None => Where::Gone,
        }
    }

    /// Stops a node of a drained machine and marks its dataflow degraded; false when its daemon
    /// could not be told.
    fn stop_drained_node(
        &mut self,
        machine: &str,
        dataflow: Uuid,
        node: &NodeId,
        why: &str,
    ) -> bool {
        tracing::warn!(
            "drain of `{machine}`: stopping node `{node}` of dataflow {dataflow}: {why}"
        );
        let command = DaemonCommand::StopNodes {
            dataflow,
            nodes: vec![node.clone()],
        };
        if self.send_to_daemon(machine, command).is_none() {
            return false;
        }
        if let Some(flow) = self.flows.get_mut(&dataflow) {
            flow.record.degraded.push(format!(
                "node `{node}` was stopped: machine `{machine}` was drained and {why}"
            ));
        }
        self.save(dataflow);
        true
    }

    /// After a coordinator restart: moves in flight were forgotten; nodes the stored placement
    /// still puts on their drained machine are moved again.
    pub(crate) fn resume_drains(&mut self) {
        let machines: Vec<String> = self
            .maintenance
            .values()
            .filter(|m| {
                m.drain.as_ref().is_some_and(|d| {
                    d.nodes
                        .iter()
                        .any(|n| matches!(n.state, DrainNodeState::Moving { .. }))
                })
            })
            .map(|m| m.machine.clone())
            .collect();
        for machine in machines {
            self.update_maintenance(&machine, |m| {
                for n in m.drain.iter_mut().flat_map(|d| d.nodes.iter_mut()) {
                    if matches!(n.state, DrainNodeState::Moving { .. }) {
                        n.state = DrainNodeState::Pending;
                    }
                }
            });
        }
    }
}

/// What a drain step decided: every node's state, why it waits, the nodes to stop and why.
type DrainPlan = (
    Vec<DrainedNode>,
    Option<String>,
    Vec<(Uuid, NodeId, String)>,
);

/// Where a drained node is.
enum Where {
    /// Still on the drained machine.
    Here,
    /// On another machine.
    Elsewhere(String),
    /// Its dataflow ended (or no longer has it).
    Gone,
}
