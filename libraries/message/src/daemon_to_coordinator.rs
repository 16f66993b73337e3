//! Messages of a daemon to the coordinator, over `/api/v1/daemon`.

use std::collections::BTreeMap;

use adora_core::{resources::MachineLimits, NodeId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    control::{ControlError, Labels, NodeLogLine, NodeResult, RunningDataflow},
    stats::{MachineTelemetry, NodeStats},
};

/// A daemon's message. Replies carry the id of the coordinator's command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DaemonMessage {
    /// First message after the handshake (and after every reconnect).
    Register(DaemonRegistration),
    /// Liveness, with the figures of every node the daemon runs and of its machine.
    Heartbeat {
        /// Per-node figures (CPU, memory, message counters, restarts, uptime).
        nodes: Vec<NodeStats>,
        /// The machine's figures (`None` from a daemon that predates them, or when they could
        /// not be read in time).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        machine: Option<MachineTelemetry>,
    },
    /// The state of its Zenoh data links (to daemons and its site's router), sent when one
    /// changes.
    DataLinks {
        /// Every link it holds.
        links: Vec<crate::data_links::DataLinkStatus>,
    },
    /// Answer to `Spawn`: `Err` says why nothing of the dataflow runs on this daemon.
    Spawned {
        /// The dataflow.
        dataflow: Uuid,
        /// Outcome of the spawn.
        result: Result<(), ControlError>,
    },
    /// Answer to `Prepare`: `Ok` when every node placed here is ready to spawn (built,
    /// downloaded and verified); `Err` names each node, this machine and the strategy.
    Prepared {
        /// The dataflow.
        dataflow: Uuid,
        /// Outcome of the preparation.
        result: Result<(), ControlError>,
    },
    /// Answer to `Build`: `Err` names each node whose build failed.
    Built {
        /// The build.
        build_id: Uuid,
        /// Outcome of the builds.
        result: Result<(), ControlError>,
    },
    /// Every node of the dataflow on this daemon has ended.
    Finished {
        /// The dataflow.
        dataflow: Uuid,
        /// How each local node ended.
        nodes: BTreeMap<NodeId, NodeResult>,
    },
    /// A log line of a dataflow the coordinator watches.
    Log(NodeLogLine),
    /// Answer to `ReadLogs`: the stored lines, node by node.
    Logs {
        /// The lines.
        lines: Vec<NodeLogLine>,
    },
    /// Lines of the daemon's own log (answer to `ReadServiceLog`, possibly several).
    ServiceLog {
        /// The lines, oldest first.
        lines: Vec<String>,
    },
    /// The last answer to `ReadServiceLog`: `Err` says why the log cannot be read (and where
    /// the daemon looked).
    ServiceLogEnd {
        /// Outcome of the reading.
        result: Result<(), ControlError>,
    },
    /// Answer to `Peers` (and repeated after every registration): where this daemon's Zenoh
    /// session listens, as Zenoh itself bound it. Empty when the daemon has no cross-machine data
    /// plane (its session could not open). The coordinator holds later daemons' `Peers` until
    /// every daemon it told about peers has answered, so no two daemons miss each other.
    ZenohListening {
        /// Locators other daemons connect to (`tcp/<ip>:<port>`).
        locators: Vec<String>,
    },
    /// A node asks for an update lock on this machine; answered by `LockAnswer`.
    TakeLock {
        /// The daemon's request number (the answer carries it).
        request: u64,
        /// The lock.
        lock: crate::maintenance::NodeLock,
    },
    /// A node released update locks (it dropped them, or exited: then `locks` is empty, meaning
    /// all of them).
    ReleaseLocks {
        /// The node's dataflow.
        dataflow: Uuid,
        /// The node.
        node: NodeId,
        /// The locks released; empty for every lock of the node.
        locks: Vec<u64>,
    },
    /// Answer to `Relocate`: the step is done (for `Spawn`: the new instance connected and its
    /// published outputs are matched), or why not.
    Relocated {
        /// The dataflow.
        dataflow: Uuid,
        /// The node being moved.
        node: NodeId,
        /// The step's name ([`crate::relocation::RelocateStep::name`]).
        step: String,
        /// Outcome of the step.
        result: Result<(), ControlError>,
        /// For `Switch`: where the new instance's inputs begin (see
        /// [`crate::relocation::Cut`]); empty otherwise, and from older daemons.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        cut: crate::relocation::Cut,
    },
    /// Messages copied for a `Tap` (the envelope id is the `Tap` command's); the daemon sends
    /// more only once the coordinator passed on credit for them (`TapCredit`).
    Tapped(crate::tap::TapBatch),
    /// A `Tap` is over on this daemon (its dataflow ended here, or `Untap`).
    TapEnd {
        /// Messages the (lossy) tap dropped, per `node/output`.
        dropped: BTreeMap<String, u64>,
    },
}

/// Who the daemon is and what it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonRegistration {
    /// Machine id (`--machine-id`); unnamed daemons take nodes without placement constraints.
    pub machine_id: Option<String>,
    /// Labels (`--labels`).
    pub labels: Labels,
    /// Hostname of the machine.
    pub hostname: String,
    /// Zenoh locators other daemons can reach this one at: empty until its Zenoh session is open
    /// (then it reports them with [`DaemonMessage::ZenohListening`]).
    pub zenoh_locators: Vec<String>,
    /// Status report: what it runs right now.
    pub running: Vec<RunningDataflow>,
    /// The daemon's Adora version (`cluster upgrade` waits for the new one); empty when the
    /// daemon predates this field.
    #[serde(default)]
    pub adora_version: String,
    /// Random id of this daemon process, the same across its reconnects: the coordinator tells
    /// a reconnect of the connected daemon (accepted) from a second daemon with the same
    /// machine id (refused). `None` from daemons that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<Uuid>,
    /// The systemd unit the daemon runs as (`adora-daemon-<id>.service`), `None` for a daemon
    /// started otherwise (`cluster up`, by hand): `cluster down` leaves services running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    /// The update locks its nodes hold (a restarted coordinator learns them again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<crate::maintenance::NodeLock>,
    /// Thresholds above which its machine takes no new nodes (`adora daemon --max-cpu-percent`
    /// ...); none from daemons that predate them.
    #[serde(default, skip_serializing_if = "MachineLimits::is_none")]
    pub limits: MachineLimits,
    /// The site of its machine (`cluster.yml` `sites:`, `adora daemon --site`): it links
    /// directly only to daemons of the same site. `None`: no site (or a daemon predating it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{control::LogStream, envelope::round_trip};

    #[test]
    fn every_message_round_trips() {
        let id = Uuid::new_v4();
        let descriptor = adora_core::Descriptor::parse(
            "nodes:\n  - id: a\n    path: ./a\n",
            std::path::Path::new("d.yml"),
        )
        .expect("valid test descriptor");
        round_trip(DaemonMessage::Register(DaemonRegistration {
            machine_id: Some("robot".into()),
            labels: [("arch".into(), "arm64".into())].into(),
            hostname: "robot-1".into(),
            zenoh_locators: vec!["tcp/10.0.0.2:7447".into()],
            running: vec![RunningDataflow {
                id,
                name: "demo".into(),
                descriptor,
                working_dir: "/srv/demo".into(),
                nodes: [("a".into(), true)].into(),
            }],
            adora_version: "0.1.0".into(),
            instance: Some(Uuid::new_v4()),
            systemd_unit: Some("adora-daemon-robot.service".into()),
            locks: vec![crate::maintenance::NodeLock {
                dataflow: id,
                node: "a".into(),
                lock: 1,
                reason: "grasping".into(),
            }],
            limits: MachineLimits {
                max_cpu_percent: Some(90),
                max_memory_percent: None,
                min_disk_free: Some(5 << 30),
            },
            site: Some("lab".into()),
        }));
        round_trip(DaemonMessage::DataLinks {
            links: vec![crate::data_links::DataLinkStatus {
                peer: "gpu".into(),
                kind: crate::data_links::LinkKind::Daemon,
                up: true,
                since_ms: 1_700_000_000_000,
            }],
        });
        round_trip(DaemonMessage::TakeLock {
            request: 7,
            lock: crate::maintenance::NodeLock {
                dataflow: id,
                node: "a".into(),
                lock: 2,
                reason: "welding".into(),
            },
        });
        round_trip(DaemonMessage::ReleaseLocks {
            dataflow: id,
            node: "a".into(),
            locks: vec![],
        });
        round_trip(DaemonMessage::Heartbeat {
            nodes: vec![],
            machine: None,
        });
        round_trip(DaemonMessage::Heartbeat {
            nodes: vec![],
            machine: Some(MachineTelemetry {
                adora_version: "0.1.0".into(),
                os: "Debian GNU/Linux 12 (bookworm)".into(),
                kernel: "6.1.0".into(),
                arch: "aarch64".into(),
                uptime_secs: Some(12),
                load: Some([1.0, 0.5, 0.25]),
                memory_total_bytes: Some(1 << 30),
                memory_available_bytes: Some(1 << 29),
                disk_free_bytes: Some(1 << 32),
                cpus: Some(4),
                cpu_percent: Some(37.5),
                gpus: None,
            }),
        });
        // A heartbeat of a daemon that predates the machine figures still decodes.
        let old: DaemonMessage =
            serde_json::from_str(r#"{"Heartbeat":{"nodes":[]}}"#).expect("old heartbeat decodes");
        assert_eq!(
            old,
            DaemonMessage::Heartbeat {
                nodes: vec![],
                machine: None
            }
        );
        round_trip(DaemonMessage::ZenohListening {
            locators: vec!["tcp/10.0.0.2:41234".into()],
        });
        round_trip(DaemonMessage::Relocated {
            dataflow: id,
            node: "relay".into(),
            step: "spawn".into(),
            result: Err(ControlError::daemon(
                "node `relay` exited before it connected",
            )),
            cut: Default::default(),
        });
        let clock = uhlc::HLC::default();
        round_trip(DaemonMessage::Relocated {
            dataflow: id,
            node: "relay".into(),
            step: "switch".into(),
            result: Ok(()),
            cut: [("in".into(), clock.new_timestamp())].into(),
        });
        round_trip(DaemonMessage::Heartbeat {
            nodes: vec![NodeStats {
                dataflow: id,
                node: "a".into(),
                status: crate::stats::NodeStatus::Running,
                pid: Some(4321),
                cpu_percent: 99.5,
                rss_bytes: 12 << 20,
                messages_sent: 1000,
                messages_received: 990,
                dropped: 10,
                remote_dropped: Vec::new(),
                restarts: 1,
                uptime_ms: 61_000,
                last_error: None,
            }],
            machine: None,
        });
        // A registration of a daemon that predates `adora_version` still decodes.
        let old = r#"{"Register":{"machine_id":null,"labels":{},"hostname":"h","zenoh_locators":[],"running":[]}}"#;
        let DaemonMessage::Register(reg) =
            serde_json::from_str(old).expect("old registration decodes")
        else {
            panic!("not a registration");
        };
        assert_eq!(reg.adora_version, "");
        assert_eq!(reg.instance, None);
        round_trip(DaemonMessage::Spawned {
            dataflow: id,
            result: Ok(()),
        });
        round_trip(DaemonMessage::Spawned {
            dataflow: id,
            result: Err(ControlError::daemon("path `./a` does not exist")),
        });
        round_trip(DaemonMessage::Prepared {
            dataflow: id,
            result: Err(ControlError::daemon(
                "node `a` on machine `b` (distribute: http): checksum mismatch",
            )),
        });
        round_trip(DaemonMessage::Built {
            build_id: id,
            result: Ok(()),
        });
        round_trip(DaemonMessage::Finished {
            dataflow: id,
            nodes: [("a".into(), NodeResult::Finished)].into(),
        });
        let line = NodeLogLine {
            dataflow: id,
            node: "a".into(),
            stream: LogStream::Stdout,
            line: "hi".into(),
        };
        round_trip(DaemonMessage::Log(line.clone()));
        round_trip(DaemonMessage::Logs { lines: vec![line] });
        round_trip(DaemonMessage::ServiceLog {
            lines: vec!["registered with the coordinator".into()],
        });
        round_trip(DaemonMessage::ServiceLogEnd { result: Ok(()) });
        round_trip(DaemonMessage::Tapped(crate::tap::TapBatch::default()));
        round_trip(DaemonMessage::TapEnd {
            dropped: [("a/out".to_owned(), 1)].into(),
        });
        round_trip(DaemonMessage::ServiceLogEnd {
            result: Err(ControlError::new(
                crate::control::ErrorKind::NotFound,
                "no log",
            )),
        });
    }
}
