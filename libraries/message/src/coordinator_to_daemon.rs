//! Commands of the coordinator to a daemon.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use adora_core::{Descriptor, NodeId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A coordinator command; the daemon's reply carries the same envelope id. Commands are
/// idempotent per dataflow id, so a retry after a reconnect is answered, not executed twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DaemonCommand {
    /// Liveness.
    Heartbeat,
    /// Spawn the given nodes of a dataflow (answered by `Spawned`).
    Spawn(SpawnDataflow),
    /// Stop a dataflow gracefully (its end is reported by `Finished`).
    Stop {
        /// The dataflow.
        dataflow: Uuid,
        /// Stop → SIGTERM grace; the daemon's default when absent.
        grace: Option<Duration>,
    },
    /// Start or stop forwarding the dataflow's log lines as they are printed.
    WatchLogs {
        /// The dataflow.
        dataflow: Uuid,
        /// Forward (true) or not (false).
        watch: bool,
    },
    /// Read the stored log lines of a dataflow (answered by `Logs`).
    ReadLogs {
        /// The dataflow.
        dataflow: Uuid,
        /// Only this node.
        node: Option<NodeId>,
        /// Only the last N lines per node.
        tail: Option<usize>,
    },
    /// Stop every dataflow gracefully and exit the daemon process (`adora cluster down`).
    Shutdown,
    /// Zenoh endpoints of the other daemons, sent right after registration: the daemon opens its
    /// cross-machine session connecting to them (daemons registering later connect to it).
    Peers {
        /// `tcp/<ip>:<port>` endpoints.
        endpoints: Vec<String>,
    },
}

/// Parameters of [`DaemonCommand::Spawn`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpawnDataflow {
    /// The dataflow id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// The whole validated descriptor.
    pub descriptor: Descriptor,
    /// Directory relative paths are resolved against.
    pub working_dir: PathBuf,
    /// The nodes placed on this daemon.
    pub nodes: BTreeSet<NodeId>,
    /// Per-node binaries distributed by the CLI (`distribute: scp | http`): the daemon runs
    /// these instead of the descriptor's `path`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub artifacts: crate::distribute::NodeArtifacts,
    /// Run the `build` of this daemon's `distribute: local` nodes before spawning anything.
    #[serde(default)]
    pub build: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::round_trip;

    #[test]
    fn every_command_round_trips() {
        let id = Uuid::new_v4();
        let descriptor = Descriptor::parse(
            "nodes:\n  - id: a\n    path: ./a\n",
            std::path::Path::new("d.yml"),
        )
        .expect("valid test descriptor");
        round_trip(DaemonCommand::Heartbeat);
        round_trip(DaemonCommand::Spawn(SpawnDataflow {
            id,
            name: "demo".into(),
            descriptor,
            working_dir: "/srv".into(),
            nodes: ["a".into()].into(),
            artifacts: Default::default(),
            build: false,
        }));
        round_trip(DaemonCommand::Spawn(SpawnDataflow {
            id,
            name: "demo".into(),
            descriptor: Descriptor::parse(
                "nodes:\n  - id: a\n    path: ./a\n",
                std::path::Path::new("d.yml"),
            )
            .expect("valid test descriptor"),
            working_dir: "/srv".into(),
            nodes: ["a".into()].into(),
            artifacts: [(
                "a".into(),
                crate::distribute::NodeArtifact::Copied {
                    path: "/var/lib/adora/dataflows/x/a/a".into(),
                },
            )]
            .into(),
            build: true,
        }));
        round_trip(DaemonCommand::Stop {
            dataflow: id,
            grace: Some(Duration::from_secs(2)),
        });
        round_trip(DaemonCommand::WatchLogs {
            dataflow: id,
            watch: true,
        });
        round_trip(DaemonCommand::ReadLogs {
            dataflow: id,
            node: None,
            tail: Some(5),
        });
        round_trip(DaemonCommand::Shutdown);
        round_trip(DaemonCommand::Peers {
            endpoints: vec!["tcp/10.0.0.2:7447".into()],
        });
    }
}
