//! Replies and streamed events of the coordinator to a CLI client.

use std::collections::BTreeMap;

use adora_core::{
    resources::{MachineLimits, Reserved},
    NodeId,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    control::{ControlError, DataflowOutcome, DataflowStatus, Labels, NodeLogLine},
    stats::{MachineTelemetry, NodeInfo},
};

/// A message of the coordinator to a CLI client, in an envelope carrying the request's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlReply {
    /// The dataflow was placed and spawned on every daemon.
    Started {
        /// Its id.
        id: Uuid,
        /// Its (possibly generated) name.
        name: String,
        /// Which daemon runs which node.
        placement: BTreeMap<NodeId, String>,
    },
    /// Every node of the stopped dataflow has ended.
    Stopped {
        /// The dataflow.
        id: Uuid,
        /// How its nodes ended.
        outcome: DataflowOutcome,
    },
    /// A restart completed.
    Restarted {
        /// The stopped run.
        old: Uuid,
        /// The new run.
        new: Uuid,
        /// The (kept) name.
        name: String,
    },
    /// Answer to `Build`: every daemon built its `local` nodes and the build is stored.
    Built {
        /// The build id (`adora start --build-id`).
        build_id: Uuid,
        /// Which daemon built (or will run) which node.
        placement: BTreeMap<NodeId, String>,
    },
    /// Answer to `List`.
    List(Vec<DataflowInfo>),
    /// Answer to `Status`.
    Status(CoordinatorStatus),
    /// Answer to `Nodes`.
    Nodes(Vec<NodeInfo>),
    /// A node's log line (logs requests and attached starts).
    Log(NodeLogLine),
    /// A line of a daemon's own log (answer to `DaemonLogs`).
    DaemonLog(String),
    /// All requested log lines were sent (a non-following logs request is complete).
    LogsEnd,
    /// Answer to a `Tap` with `before_start`: it waits for the dataflow's start (`TapStarted`
    /// follows when its nodes are spawned).
    TapWaiting,
    /// Answer to `Tap`: the daemons were asked to copy these outputs.
    TapStarted {
        /// The dataflow.
        dataflow: Uuid,
        /// The tapped outputs (`node/output`), sorted.
        outputs: Vec<String>,
    },
    /// Messages copied by one daemon; acknowledge with `TapAck`.
    Tapped {
        /// The daemon that copied them.
        machine: String,
        /// The messages.
        batch: crate::tap::TapBatch,
    },
    /// The tap is over (the dataflow ended on every daemon tapped).
    TapEnd {
        /// Messages the (lossy) tap dropped, per `node/output`; empty when none was.
        dropped: BTreeMap<String, u64>,
    },
    /// An attached or followed dataflow ended.
    Finished {
        /// The dataflow.
        id: Uuid,
        /// How its nodes ended.
        outcome: DataflowOutcome,
    },
    /// Answer to `ShutdownDaemons` / `ShutdownCoordinator`: what was told to exit.
    ShuttingDown {
        /// Names of the daemons told to exit (empty for `ShutdownCoordinator`).
        daemons: Vec<String>,
    },
    /// The request failed.
    Error(ControlError),
    /// Answer to `CreateJoinCode`.
    JoinCodeCreated(crate::enroll::JoinCodeCreated),
    /// Answer to `ListJoinCodes`, oldest first.
    JoinCodes(Vec<crate::enroll::JoinCodeInfo>),
    /// Answer to `RevokeJoinCode`.
    JoinCodeRevoked {
        /// The code's id.
        id: String,
    },
    /// Answer to `RevokeMachine`.
    MachineRevoked(crate::enroll::MachineRevoked),
    /// Answer to `ListCertificates`, oldest first.
    Certificates(Vec<crate::enroll::CertificateInfo>),
    /// Answer to `Maintenance`, `SetCordon`, `SetOperatorLock`, `Claim`, `ReleaseClaim` and
    /// `Drain`: the machines concerned, by name.
    Maintenance(Vec<crate::maintenance::MachineMaintenance>),
    /// A step of a `MoveNode` in progress, for the user.
    MoveProgress(String),
    /// Answer to `MoveNode`: the node runs on its new daemon and the old instance was stopped.
    Moved(crate::relocation::MoveReport),
}

/// One row of `adora list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataflowInfo {
    /// Dataflow id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Status.
    pub status: DataflowStatus,
    /// Node → the daemon (machine id, or hostname for unnamed daemons) it was placed on.
    pub nodes: BTreeMap<NodeId, String>,
    /// Node → how often its restart policy restarted it (nodes never restarted are left out),
    /// as of the daemons' latest heartbeats.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub restarts: BTreeMap<NodeId, u32>,
    /// Node → messages of its inputs that went missing between machines, per input and reason
    /// (nodes without are left out), as of the daemons' latest heartbeats.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub remote_dropped: BTreeMap<NodeId, Vec<crate::stats::RemoteDrops>>,
    /// Why it runs without some of its nodes (`adora cluster drain` stopped a node pinned to the
    /// drained machine), if it does: `adora list` shows it `degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<String>,
}

impl DataflowInfo {
    /// Restarts of all its nodes together.
    pub fn total_restarts(&self) -> u32 {
        self.restarts.values().sum()
    }

    /// The distinct daemons running this dataflow.
    pub fn machines(&self) -> Vec<String> {
        let mut m: Vec<String> = self.nodes.values().cloned().collect();
        m.sort();
        m.dedup();
        m
    }
}

/// Answer to `Status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorStatus {
    /// The coordinator's Adora version.
    pub adora_version: String,
    /// Daemons that are or were connected.
    pub daemons: Vec<DaemonStatus>,
    /// Number of running dataflows.
    pub running_dataflows: usize,
}

/// One daemon in [`CoordinatorStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// Machine id, if it has one.
    pub machine_id: Option<String>,
    /// Its hostname.
    pub hostname: String,
    /// Its labels.
    pub labels: Labels,
    /// Milliseconds since its last message.
    pub last_heartbeat_ms: u64,
    /// False once the daemon is lost (disconnected or silent for too long).
    pub connected: bool,
    /// The Adora version the daemon registered with (empty when it did not say).
    #[serde(default)]
    pub adora_version: String,
    /// Milliseconds since the daemon registered (its current or last connection).
    #[serde(default)]
    pub registered_ms_ago: u64,
    /// Its machine's figures from its latest heartbeat (`None` until one carried them).
    #[serde(default)]
    pub machine: Option<MachineTelemetry>,
    /// The systemd unit the daemon runs as; `None` for a daemon started otherwise (or one
    /// that predates this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    /// Its lifecycle state (`ready`, `cordoned`, `draining`, `upgrading`).
    #[serde(default)]
    pub state: crate::maintenance::MachineState,
    /// Why it takes no new nodes, if it does not (placement skips it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// Its cordon, update locks, claim and drain (`None` when there are none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<crate::maintenance::MachineMaintenance>,
    /// Its thresholds (none set: empty).
    #[serde(default)]
    pub limits: MachineLimits,
    /// What the nodes of running dataflows placed on it asked for (`deploy.resources`).
    #[serde(default)]
    pub reserved: Reserved,
    /// Its site (`None`: none, or a daemon predating sites).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Its Zenoh data links as it last reported them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<crate::data_links::DataLinkStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        control::{ErrorKind, LogStream, NodeResult},
        envelope::round_trip,
    };

    #[test]
    fn every_reply_round_trips() {
        let id = Uuid::new_v4();
        let outcome = DataflowOutcome {
            nodes: [
                ("a".into(), NodeResult::Finished),
                (
                    "b".into(),
                    NodeResult::Terminated {
                        signal: "SIGTERM".into(),
                    },
                ),
                (
                    "c".into(),
                    NodeResult::Failed {
                        reason: "exit status 1".into(),
                        stderr_tail: vec!["boom".into()],
                    },
                ),
            ]
            .into(),
        };
        round_trip(ControlReply::Started {
            id,
            name: "demo".into(),
            placement: [("a".into(), "robot".into())].into(),
        });
        round_trip(ControlReply::Stopped {
            id,
            outcome: outcome.clone(),
        });
        round_trip(ControlReply::Built {
            build_id: id,
            placement: [("a".into(), "robot".into())].into(),
        });
        round_trip(ControlReply::Restarted {
            old: id,
            new: Uuid::new_v4(),
            name: "demo".into(),
        });
        round_trip(ControlReply::List(vec![DataflowInfo {
            id,
            name: "demo".into(),
            status: DataflowStatus::Running,
            nodes: [("a".into(), "robot".into())].into(),
            restarts: [("a".into(), 2)].into(),
            remote_dropped: [(
                "a".into(),
                vec![crate::stats::RemoteDrops {
                    input: "frames".into(),
                    reason: crate::stats::RemoteDropReason::SenderBacklog,
                    count: 3,
                }],
            )]
            .into(),
            degraded: vec!["node `probe` was stopped: machine `robot` was drained".into()],
        }]));
        round_trip(ControlReply::Status(CoordinatorStatus {
            adora_version: "0.1.0".into(),
            daemons: vec![DaemonStatus {
                machine_id: Some("robot".into()),
                hostname: "host".into(),
                labels: [("gpu".into(), "true".into())].into(),
                last_heartbeat_ms: 1200,
                connected: true,
                adora_version: "0.1.0-upgrade-test".into(),
                registered_ms_ago: 4500,
                machine: None,
                systemd_unit: Some("adora-daemon-robot.service".into()),
                state: crate::maintenance::MachineState::Cordoned,
                unavailable: Some("cordoned: battery swap".into()),
                maintenance: Some(crate::maintenance::MachineMaintenance {
                    machine: "robot".into(),
                    cordon: Some(crate::maintenance::Cordon {
                        reason: "battery swap".into(),
                        since_ms: 1,
                    }),
                    ..Default::default()
                }),
                limits: MachineLimits {
                    max_cpu_percent: Some(90),
                    ..MachineLimits::default()
                },
                reserved: Reserved {
                    cpus: 1.5,
                    memory: 4 << 30,
                    gpus: 1,
                },
                site: Some("lab".into()),
                links: vec![crate::data_links::DataLinkStatus {
                    peer: "tls/10.0.0.1:7448".into(),
                    kind: crate::data_links::LinkKind::Router,
                    up: false,
                    since_ms: 5,
                }],
            }],
            running_dataflows: 1,
        }));
        round_trip(ControlReply::Log(NodeLogLine {
            dataflow: id,
            node: "a".into(),
            stream: LogStream::Stderr,
            line: "hello".into(),
        }));
        round_trip(ControlReply::LogsEnd);
        round_trip(ControlReply::TapWaiting);
        round_trip(ControlReply::TapStarted {
            dataflow: Uuid::nil(),
            outputs: vec!["sender/counter".into()],
        });
        round_trip(ControlReply::Tapped {
            machine: "robot".into(),
            batch: crate::tap::TapBatch::default(),
        });
        round_trip(ControlReply::TapEnd {
            dropped: [("sender/counter".to_owned(), 2)].into(),
        });
        round_trip(ControlReply::MoveProgress("relay: started on c".into()));
        round_trip(ControlReply::Moved(crate::relocation::MoveReport {
            dataflow: id,
            node: "relay".into(),
            from: "b".into(),
            to: "c".into(),
            start_ms: 100,
            overlap_ms: 3,
            total_ms: 130,
        }));
        round_trip(ControlReply::DaemonLog("adora daemon registered".into()));
        round_trip(ControlReply::Nodes(vec![NodeInfo::new(
            id,
            "demo".into(),
            "a".into(),
            "robot".into(),
        )]));
        round_trip(ControlReply::ShuttingDown {
            daemons: vec!["robot".into()],
        });
        round_trip(ControlReply::Finished { id, outcome });
        round_trip(ControlReply::JoinCodeCreated(
            crate::enroll::JoinCodeCreated {
                code: format!("ADORA1.{}.0a1b2c3d.{}", "ab".repeat(32), "5e".repeat(16)),
                id: "0a1b2c3d".into(),
                expires_ms: 1_700_000_000_000,
            },
        ));
        round_trip(ControlReply::JoinCodes(vec![crate::enroll::JoinCodeInfo {
            id: "0a1b2c3d".into(),
            created_ms: 1,
            expires_ms: 2,
            uses: 1,
            uses_allowed: 1,
            machine: None,
            labels: [("gpu".into(), "true".into())].into(),
            state: crate::enroll::JoinCodeState::Used,
        }]));
        round_trip(ControlReply::JoinCodeRevoked {
            id: "0a1b2c3d".into(),
        });
        round_trip(ControlReply::MachineRevoked(
            crate::enroll::MachineRevoked {
                machine: "robot".into(),
                certificates: 2,
                disconnected: true,
            },
        ));
        round_trip(ControlReply::Maintenance(vec![
            crate::maintenance::MachineMaintenance::new("robot"),
        ]));
        round_trip(ControlReply::Certificates(vec![
            crate::enroll::CertificateInfo {
                machine_id: "robot".into(),
                fingerprint: "cd".repeat(32),
                issued_ms: 1,
                join_code: "0a1b2c3d".into(),
                revoked_ms: Some(3),
            },
        ]));
        round_trip(ControlReply::Error(crate::control::ControlError::new(
            ErrorKind::NotFound,
            "no dataflow named `x`",
        )));
    }
}
