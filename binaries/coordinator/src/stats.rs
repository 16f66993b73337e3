//! Figures from daemon heartbeats: the latest [`NodeStats`] of every node, message rates derived
//! from two consecutive heartbeats, and the `Nodes` answer (`adora top`, `adora node`); the
//! latest [`MachineTelemetry`] of every daemon (`adora cluster status`).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use adora_core::NodeId;
use adora_message::{
    control::{ControlError, NodeResult},
    stats::{MachineTelemetry, NodeInfo, NodeStats, NodeStatus},
};
use uuid::Uuid;

use crate::actor::{Coordinator, Flow};

/// The latest figures of one node.
#[derive(Debug, Clone)]
pub(crate) struct StatsEntry {
    pub stats: NodeStats,
    pub at: Instant,
    pub sent_per_sec: f64,
    pub received_per_sec: f64,
}

/// The latest figures of every node, by (dataflow, node), and of every daemon's machine.
#[derive(Debug, Default)]
pub(crate) struct NodeStatsTable {
    entries: HashMap<(Uuid, NodeId), StatsEntry>,
    /// Daemon name (machine id, or hostname) → its machine's figures of its latest heartbeat.
    machines: HashMap<String, MachineTelemetry>,
}

/// Messages per second between two counter readings `elapsed` apart.
fn rate(before: u64, after: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        return 0.0;
    }
    after.saturating_sub(before) as f64 / elapsed.as_secs_f64()
}

impl NodeStatsTable {
    /// Restart counts of a dataflow's nodes that were restarted at least once.
    pub fn restarts_of(&self, dataflow: Uuid) -> std::collections::BTreeMap<NodeId, u32> {
        self.entries
            .iter()
            .filter(|((df, _), e)| *df == dataflow && e.stats.restarts > 0)
            .map(|((_, node), e)| (node.clone(), e.stats.restarts))
            .collect()
    }

    /// Node → messages of its inputs that went missing between machines (nodes without are left
    /// out), as of the daemons' latest heartbeats.
    pub fn remote_dropped_of(
        &self,
        dataflow: Uuid,
    ) -> std::collections::BTreeMap<NodeId, Vec<adora_message::stats::RemoteDrops>> {
        self.entries
            .iter()
            .filter(|((df, _), e)| *df == dataflow && !e.stats.remote_dropped.is_empty())
            .map(|((_, node), e)| (node.clone(), e.stats.remote_dropped.clone()))
            .collect()
    }

    /// Takes in the figures of one heartbeat.
    pub fn update(&mut self, nodes: Vec<NodeStats>) {
        self.update_at(nodes, Instant::now());
    }

    fn update_at(&mut self, nodes: Vec<NodeStats>, now: Instant) {
        for stats in nodes {
            let key = (stats.dataflow, stats.node.clone());
            let (sent_per_sec, received_per_sec) = match self.entries.get(&key) {
                // A counter that went down belongs to a new run of the node: no rate yet.
                Some(prev) if stats.messages_sent >= prev.stats.messages_sent => {
                    let elapsed = now.saturating_duration_since(prev.at);
                    (
                        rate(prev.stats.messages_sent, stats.messages_sent, elapsed),
                        rate(
                            prev.stats.messages_received,
                            stats.messages_received,
                            elapsed,
                        ),
                    )
                }
                _ => (0.0, 0.0),
            };
            self.entries.insert(
                key,
                StatsEntry {
                    stats,
                    at: now,
                    sent_per_sec,
                    received_per_sec,
                },
            );
        }
    }

    /// The latest figures of a node.
    pub fn get(&self, dataflow: Uuid, node: &NodeId) -> Option<&StatsEntry> {
        self.entries.get(&(dataflow, node.clone()))
    }

    /// Keeps the machine figures of a daemon's heartbeat (a heartbeat without them keeps the
    /// previous ones: figures that could not be read in time are not news).
    pub fn update_machine(&mut self, daemon: &str, machine: Option<MachineTelemetry>) {
        if let Some(machine) = machine {
            self.machines.insert(daemon.to_owned(), machine);
        }
    }

    /// The latest machine figures of a daemon.
    pub fn machine(&self, daemon: &str) -> Option<&MachineTelemetry> {
        self.machines.get(daemon)
    }

    /// Forgets dataflows the coordinator no longer knows.
    /// Forgets a node's figures (it moved: the next ones come from its new daemon).
    pub fn forget(&mut self, dataflow: Uuid, node: &NodeId) {
        self.entries.remove(&(dataflow, node.clone()));
    }

    pub fn retain(&mut self, known: impl Fn(&Uuid) -> bool) {
        self.entries.retain(|(id, _), _| known(id));
    }
}

/// A node's row: the descriptor's view, the placement, and the latest figures when there are.
fn node_info(flow: &Flow, spec: &adora_core::NodeSpec, entry: Option<&StatsEntry>) -> NodeInfo {
    let record = &flow.record;
    let mut info = NodeInfo::new(
        record.id,
        record.name.clone(),
        spec.id.clone(),
        record.placement.get(&spec.id).cloned().unwrap_or_default(),
    );
    info.inputs = spec
        .inputs
        .iter()
        .map(|(id, input)| (id.clone(), input.source().to_owned()))
        .collect();
    info.outputs = spec.outputs.clone();
    if let Some(e) = entry {
        let s = &e.stats;
        info.status = s.status;
        info.pid = s.pid;
        info.cpu_percent = s.cpu_percent;
        info.rss_bytes = s.rss_bytes;
        info.messages_sent = s.messages_sent;
        info.messages_received = s.messages_received;
        info.messages_sent_per_sec = e.sent_per_sec;
        info.messages_received_per_sec = e.received_per_sec;
        info.dropped = s.dropped;
        info.remote_dropped = s.remote_dropped.clone();
        info.restarts = s.restarts;
        info.uptime_secs = s.uptime_ms as f64 / 1000.0;
        info.last_error = s.last_error.clone();
        info.stats_age_ms = Some(u64::try_from(e.at.elapsed().as_millis()).unwrap_or(u64::MAX));
    }
    if record.status.is_done() {
        // The last heartbeat may predate the end: the outcome is the truth now.
        info.pid = None;
        info.cpu_percent = 0.0;
        info.rss_bytes = 0;
        info.messages_sent_per_sec = 0.0;
        info.messages_received_per_sec = 0.0;
        info.uptime_secs = 0.0;
        match record.outcome.nodes.get(&spec.id) {
            Some(NodeResult::Failed { reason, .. }) => {
                info.status = NodeStatus::Failed;
                info.last_error = Some(reason.clone());
            }
            Some(_) => info.status = NodeStatus::Finished,
            None => {}
        }
    }
    info
}

impl Coordinator {
    /// Every node of one dataflow, or of every running dataflow when `dataflow` is `None`.
    pub(crate) fn node_infos(&self, dataflow: Option<&str>) -> Result<Vec<NodeInfo>, ControlError> {
        let mut flows: Vec<&Flow> = match dataflow {
            Some(target) => vec![&self.flows[&self.resolve(target)?]],
            None => self
                .flows
                .values()
                .filter(|f| !f.record.status.is_done())
                .collect(),
        };
        flows.sort_by(|a, b| (&a.record.name, a.seq).cmp(&(&b.record.name, b.seq)));
        Ok(flows
            .into_iter()
            .flat_map(|flow| {
                flow.record.descriptor.nodes.iter().map(|spec| {
                    node_info(flow, spec, self.node_stats.get(flow.record.id, &spec.id))
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(sent: u64, received: u64) -> NodeStats {
        NodeStats {
            dataflow: Uuid::nil(),
            node: "a".into(),
            status: NodeStatus::Running,
            pid: Some(1),
            cpu_percent: 50.0,
            rss_bytes: 1,
            messages_sent: sent,
            messages_received: received,
            dropped: 0,
            remote_dropped: Vec::new(),
            restarts: 0,
            uptime_ms: 1,
            last_error: None,
        }
    }

    #[test]
    fn rates_come_from_two_heartbeats() {
        let mut table = NodeStatsTable::default();
        let t0 = Instant::now();
        table.update_at(vec![stats(100, 10)], t0);
        let first = table.get(Uuid::nil(), &"a".into()).expect("stored");
        assert_eq!(first.sent_per_sec, 0.0);
        table.update_at(vec![stats(600, 60)], t0 + Duration::from_secs(5));
        let second = table.get(Uuid::nil(), &"a".into()).expect("stored");
        assert_eq!(second.sent_per_sec, 100.0);
        assert_eq!(second.received_per_sec, 10.0);
        // A restarted dataflow part starts its counters again: no negative rates.
        table.update_at(vec![stats(5, 0)], t0 + Duration::from_secs(10));
        let third = table.get(Uuid::nil(), &"a".into()).expect("stored");
        assert_eq!(third.sent_per_sec, 0.0);
        table.retain(|_| false);
        assert!(table.get(Uuid::nil(), &"a".into()).is_none());
    }

    #[test]
    fn machine_figures_are_kept_per_daemon_until_replaced() {
        let mut table = NodeStatsTable::default();
        let figures = |version: &str| MachineTelemetry {
            adora_version: version.into(),
            os: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel: "6.1.0".into(),
            arch: "x86_64".into(),
            uptime_secs: Some(1),
            load: None,
            memory_total_bytes: None,
            memory_available_bytes: None,
            disk_free_bytes: None,
            cpus: None,
            cpu_percent: None,
            gpus: None,
        };
        table.update_machine("robot", Some(figures("0.1.0")));
        table.update_machine("robot", None);
        assert_eq!(table.machine("robot"), Some(&figures("0.1.0")));
        table.update_machine("robot", Some(figures("0.2.0")));
        assert_eq!(
            table.machine("robot").map(|m| m.adora_version.as_str()),
            Some("0.2.0")
        );
        assert_eq!(table.machine("gpu"), None);
    }
}
