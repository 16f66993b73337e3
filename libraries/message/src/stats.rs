//! Per-node figures: what a daemon samples and sends with every heartbeat ([`NodeStats`]), and
//! what the coordinator answers `adora top` / `adora node` with ([`NodeInfo`]); the figures of
//! the daemon's machine in the same heartbeat ([`MachineTelemetry`], `adora cluster status`).
//!
//! The serialized field names of [`NodeInfo`] and [`NodeStatus`] are printed by `--json` and
//! documented in the guide (`guide/src/json.md`): renaming one is a breaking change.

use std::collections::BTreeMap;

use adora_core::{resources::MachineFigures, DataId, NodeId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a node is in its life, as its daemon sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Spawned, not yet connected to its daemon (waiting at the start barrier).
    Starting,
    /// Running.
    Running,
    /// Its dataflow is stopping; the process has not exited yet.
    Stopping,
    /// Exited and is waiting to be started again by its restart policy.
    Restarting,
    /// Exited successfully (or was stopped).
    Finished,
    /// Exited with an error, or could not be started.
    Failed,
    /// The coordinator has no figures for it (its daemon has not reported it yet, or is lost).
    Unknown,
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Restarting => "restarting",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        })
    }
}

/// Why messages of an input went missing on their way from another machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteDropReason {
    /// The sending daemon dropped them: its publish queue or byte budget for slow links was full.
    SenderBacklog,
    /// Lost on the way: published while the link to this machine was down (a network cut, a
    /// daemon restarting).
    Link,
}

impl RemoteDropReason {
    /// The name used in `/metrics` labels and `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SenderBacklog => "sender_backlog",
            Self::Link => "link",
        }
    }
}

impl std::fmt::Display for RemoteDropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::SenderBacklog => "the sending machine's link backlog was full",
            Self::Link => "lost on the way (link down)",
        })
    }
}

/// Messages of one input that went missing on their way from another machine (total since the
/// node started on its daemon). They are also in the input's drop count (`dropped`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteDrops {
    /// The receiving input.
    pub input: DataId,
    /// Why.
    pub reason: RemoteDropReason,
    /// How many.
    pub count: u64,
}

/// One node's figures in a daemon heartbeat. Counters are totals since the dataflow started on
/// the daemon; the coordinator derives rates from two heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    /// The dataflow.
    pub dataflow: Uuid,
    /// The node.
    pub node: NodeId,
    /// Its status.
    pub status: NodeStatus,
    /// Process id of the running process.
    pub pid: Option<u32>,
    /// CPU use of the process since the previous heartbeat, in percent of one core.
    pub cpu_percent: f64,
    /// Resident memory of the process in bytes.
    pub rss_bytes: u64,
    /// Messages the node sent.
    pub messages_sent: u64,
    /// Messages delivered to the node.
    pub messages_received: u64,
    /// Messages dropped from its full input queues, and those that went missing on their way from
    /// other machines.
    pub dropped: u64,
    /// The part of `dropped` that went missing between machines, per input and reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_dropped: Vec<RemoteDrops>,
    /// How often the node was restarted by its restart policy.
    pub restarts: u32,
    /// Milliseconds since the current process started (0 when not running).
    pub uptime_ms: u64,
    /// Why the node last failed, if it did.
    pub last_error: Option<String>,
}

/// One node as `adora top` and `adora node list|info` show it: the descriptor's view plus the
/// latest figures of its daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Dataflow uuid.
    pub dataflow_id: Uuid,
    /// Dataflow name.
    pub dataflow: String,
    /// Node id.
    pub node: NodeId,
    /// The daemon it was placed on (machine id, or hostname for unnamed daemons).
    pub machine: String,
    /// Its status.
    pub status: NodeStatus,
    /// Process id, while it runs.
    pub pid: Option<u32>,
    /// CPU use in percent of one core, over the last heartbeat interval.
    pub cpu_percent: f64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
    /// Messages sent (total).
    pub messages_sent: u64,
    /// Messages received (total).
    pub messages_received: u64,
    /// Messages sent per second, over the last heartbeat interval.
    pub messages_sent_per_sec: f64,
    /// Messages received per second, over the last heartbeat interval.
    pub messages_received_per_sec: f64,
    /// Messages dropped from full input queues or missing between machines (total).
    pub dropped: u64,
    /// The part of `dropped` that went missing between machines, per input and reason.
    #[serde(default)]
    pub remote_dropped: Vec<RemoteDrops>,
    /// Restarts by its restart policy.
    pub restarts: u32,
    /// Seconds since its current process started.
    pub uptime_secs: f64,
    /// Input id → source (`node/output` or a timer).
    pub inputs: BTreeMap<DataId, String>,
    /// Output ids.
    pub outputs: Vec<DataId>,
    /// Why it last failed, if it did.
    pub last_error: Option<String>,
    /// Milliseconds since its daemon reported these figures (`None`: never).
    pub stats_age_ms: Option<u64>,
}

impl NodeInfo {
    /// A node with no figures yet (status unknown, counters zero, no inputs or outputs).
    pub fn new(dataflow_id: Uuid, dataflow: String, node: NodeId, machine: String) -> Self {
        Self {
            dataflow_id,
            dataflow,
            node,
            machine,
            status: NodeStatus::Unknown,
            pid: None,
            cpu_percent: 0.0,
            rss_bytes: 0,
            messages_sent: 0,
            messages_received: 0,
            messages_sent_per_sec: 0.0,
            messages_received_per_sec: 0.0,
            dropped: 0,
            remote_dropped: Vec::new(),
            restarts: 0,
            uptime_secs: 0.0,
            inputs: BTreeMap::new(),
            outputs: Vec::new(),
            last_error: None,
            stats_age_ms: None,
        }
    }
}

/// The daemon's machine as its heartbeat reports it (`adora cluster status`, `--json`). A figure
/// the daemon could not read is `None` (or an empty string); printed by `cluster status --json`
/// under these names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineTelemetry {
    /// The daemon's Adora version.
    pub adora_version: String,
    /// The operating system, `PRETTY_NAME` of `/etc/os-release` (e.g. `Debian GNU/Linux 12
    /// (bookworm)`).
    pub os: String,
    /// The kernel release (`uname -r`).
    pub kernel: String,
    /// The CPU architecture the daemon was built for (`x86_64`, `aarch64`, ...).
    pub arch: String,
    /// Seconds since the machine booted.
    pub uptime_secs: Option<u64>,
    /// Load averages over 1, 5 and 15 minutes.
    pub load: Option<[f64; 3]>,
    /// Total memory in bytes.
    pub memory_total_bytes: Option<u64>,
    /// Memory available to new processes in bytes (`MemAvailable`).
    pub memory_available_bytes: Option<u64>,
    /// Free bytes (for unprivileged users) on the file system of the daemon's state directory.
    pub disk_free_bytes: Option<u64>,
    /// CPU cores the daemon's processes may use (`available_parallelism`: affinity and cgroup
    /// quota included). `None` from daemons that predate it.
    #[serde(default)]
    pub cpus: Option<u32>,
    /// CPU use of the whole machine in percent (0 to 100) since the previous heartbeat, from
    /// `/proc/stat`.
    #[serde(default)]
    pub cpu_percent: Option<f64>,
    /// GPUs listed by `nvidia-smi -L`; `None` without a working `nvidia-smi`.
    #[serde(default)]
    pub gpus: Option<u32>,
}

impl MachineTelemetry {
    /// The figures placement works with.
    pub fn figures(&self) -> MachineFigures {
        MachineFigures {
            cpus: self.cpus,
            cpu_percent: self.cpu_percent.filter(|p| p.is_finite()),
            memory_total: self.memory_total_bytes,
            memory_available: self.memory_available_bytes,
            disk_free: self.disk_free_bytes,
            gpus: self.gpus,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::round_trip;

    /// Every field of [`NodeInfo`] by its stable JSON name (see `guide/src/json.md`).
    const NODE_INFO_FIELDS: [&str; 20] = [
        "dataflow_id",
        "dataflow",
        "node",
        "machine",
        "status",
        "pid",
        "cpu_percent",
        "rss_bytes",
        "messages_sent",
        "messages_received",
        "messages_sent_per_sec",
        "messages_received_per_sec",
        "dropped",
        "remote_dropped",
        "restarts",
        "uptime_secs",
        "inputs",
        "outputs",
        "last_error",
        "stats_age_ms",
    ];

    fn info() -> NodeInfo {
        NodeInfo {
            dataflow_id: Uuid::new_v4(),
            dataflow: "demo".into(),
            node: "camera".into(),
            machine: "robot".into(),
            status: NodeStatus::Running,
            pid: Some(42),
            cpu_percent: 12.5,
            rss_bytes: 1 << 20,
            messages_sent: 10,
            messages_received: 3,
            messages_sent_per_sec: 2.0,
            messages_received_per_sec: 0.5,
            dropped: 1,
            remote_dropped: Vec::new(),
            restarts: 2,
            uptime_secs: 7.25,
            inputs: [("tick".into(), "adora/timer/millis/20".into())].into(),
            outputs: vec!["frames".into()],
            last_error: Some("exit status 1".into()),
            stats_age_ms: Some(1200),
        }
    }

    #[test]
    fn stats_and_info_round_trip() {
        round_trip(NodeStats {
            dataflow: Uuid::new_v4(),
            node: "camera".into(),
            status: NodeStatus::Failed,
            pid: None,
            cpu_percent: 0.0,
            rss_bytes: 0,
            messages_sent: 5,
            messages_received: 0,
            dropped: 0,
            remote_dropped: Vec::new(),
            restarts: 1,
            uptime_ms: 0,
            last_error: Some("exit status 3".into()),
        });
        round_trip(info());
    }

    #[test]
    fn machine_telemetry_round_trips() {
        round_trip(MachineTelemetry {
            adora_version: "0.1.0".into(),
            os: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel: "6.1.0-18-amd64".into(),
            arch: "x86_64".into(),
            uptime_secs: Some(3600),
            load: Some([0.5, 0.25, 0.0]),
            memory_total_bytes: Some(8 << 30),
            memory_available_bytes: Some(3 << 30),
            disk_free_bytes: None,
            cpus: Some(8),
            cpu_percent: Some(12.5),
            gpus: Some(2),
        });
        // A daemon that predates cores, CPU use and GPUs.
        let old = r#"{"adora_version":"0.1.0","os":"","kernel":"","arch":"x86_64","uptime_secs":null,"load":null,"memory_total_bytes":null,"memory_available_bytes":null,"disk_free_bytes":null}"#;
        let old: MachineTelemetry = serde_json::from_str(old).expect("an old heartbeat reads");
        assert_eq!((old.cpus, old.cpu_percent, old.gpus), (None, None, None));
    }

    #[test]
    fn node_info_json_field_names_are_stable() {
        let json = serde_json::to_value(info()).expect("serializes");
        let keys: Vec<&str> = json
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = NODE_INFO_FIELDS.to_vec();
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(json["status"], "running");
    }
}
