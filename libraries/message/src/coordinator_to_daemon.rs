//! Commands of the coordinator to a daemon.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use crate::control::ControlError;
use adora_core::{descriptor::Distribute, Descriptor, NodeId, NodeSpec};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A coordinator command; the daemon's reply carries the same envelope id. Commands are
/// idempotent per dataflow id, so a retry after a reconnect is answered, not executed twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DaemonCommand {
    /// Liveness.
    Heartbeat,
    /// Spawn the given nodes of a dataflow (answered by `Spawned`). Uses what a `Prepare` of
    /// the same dataflow left ready; a dataflow that needs preparation and was not prepared
    /// (auto-recovery on a restarted daemon) is prepared first.
    Spawn(SpawnDataflow),
    /// First phase of a start that needs work before anything runs (builds, downloads): do it
    /// and keep the result, spawn nothing (answered by `Prepared`). The coordinator sends
    /// `Spawn` only once every daemon is prepared, else `Discard`.
    Prepare(SpawnDataflow),
    /// Forget a prepared (or still preparing) dataflow and remove its downloads: its start
    /// failed elsewhere. Nothing of it was spawned; unknown dataflows are ignored.
    Discard {
        /// The dataflow.
        dataflow: Uuid,
    },
    /// Run the `build` of these `distribute: local` nodes here (`adora build`; answered by
    /// `Built`). Their output is forwarded as log lines of `build_id`.
    Build(BuildNodes),
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
    /// Read this daemon's own log: its journald unit when it runs as a systemd unit, else the
    /// file its output goes to (answered by `ServiceLog` chunks, then `ServiceLogEnd`).
    ReadServiceLog {
        /// Only the last N lines.
        tail: Option<usize>,
        /// Keep sending new lines until `StopServiceLog`.
        follow: bool,
    },
    /// Stop a following `ReadServiceLog` (its client went away).
    StopServiceLog {
        /// The envelope id of the `ReadServiceLog`.
        command: u64,
    },
    /// Stop every dataflow gracefully and exit the daemon process (`adora cluster down`).
    Shutdown,
    /// Zenoh endpoints of the other daemons, sent after registration once every daemon told
    /// before has reported where it listens: the daemon opens its cross-machine session
    /// connecting to them (daemons registering later connect to it) and answers
    /// `ZenohListening`.
    Peers {
        /// `tcp/<ip>:<port>` endpoints.
        endpoints: Vec<String>,
    },
    /// The daemons this one links to directly (it reads their nodes' outputs): the whole set,
    /// sent whenever it changes; links to daemons no longer listed are closed.
    DataLinks {
        /// The peers, by name.
        peers: Vec<crate::data_links::DataPeer>,
    },
    /// Answer to a `Register` the coordinator does not accept; the connection is closed right
    /// after and the daemon exits (non-zero) with this error instead of reconnecting.
    Refused(RegistrationRefused),
    /// Answer to `DaemonMessage::TakeLock`: `Err` says why the lock was refused (the machine is
    /// being upgraded or drained).
    LockAnswer {
        /// The daemon's request number.
        request: u64,
        /// The outcome.
        result: Result<(), ControlError>,
    },
    /// Stop these nodes of a running dataflow; the others keep running (`cluster drain` stops the
    /// nodes pinned to a drained machine). No answer: each node's result comes with the part's
    /// `Finished`, or its figures in heartbeats.
    StopNodes {
        /// The dataflow.
        dataflow: Uuid,
        /// The nodes (those that run on this daemon).
        nodes: Vec<NodeId>,
    },
    /// One step of moving a running node between daemons (answered by `Relocated`); see
    /// [`crate::relocation`].
    Relocate(crate::relocation::Relocation),
    /// Copy these outputs of local nodes (answered by `Tapped` batches, then `TapEnd`, all with
    /// this command's envelope id). Without credit the daemon sends at most
    /// [`crate::tap::TAP_WINDOW`] cost units.
    Tap {
        /// The dataflow.
        dataflow: Uuid,
        /// The outputs (of nodes on this daemon).
        outputs: Vec<(NodeId, adora_core::DataId)>,
        /// Drop and count instead of slowing the senders down.
        lossy: bool,
        /// The dataflow's `Spawn` follows: keep the tap until the dataflow has run here (a
        /// plain tap of a dataflow that does not run here ends at once).
        #[serde(default)]
        before_spawn: bool,
    },
    /// The client handled `cost` units of the `Tap` with envelope id `command`.
    TapCredit {
        /// The `Tap` command's envelope id.
        command: u64,
        /// Units handled.
        cost: u64,
    },
    /// Stop a `Tap` (its client went away); answered by `TapEnd`.
    Untap {
        /// The `Tap` command's envelope id.
        command: u64,
    },
}

/// Why the coordinator refused a daemon's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationRefused {
    /// Another daemon process with this machine id is connected: two daemons for one machine
    /// would fight over its nodes, so the newcomer is refused (the connected one is kept).
    #[error(
        "machine id `{machine_id}` is taken: a daemon on {hostname}{} has been connected for {}s; \
         stop that daemon first (on a systemd machine `systemctl stop adora-daemon-{machine_id}`, \
         else `adora cluster down`), or give this one another --machine-id",
        .address.as_deref().map(|a| format!(" ({a})")).unwrap_or_default(),
        .connected_for_secs
    )]
    MachineIdTaken {
        /// The contested machine id.
        machine_id: String,
        /// Hostname of the connected daemon's machine.
        hostname: String,
        /// Its address, as other daemons reach it, when known.
        address: Option<String>,
        /// How long it has been connected, in seconds.
        connected_for_secs: u64,
    },
}

/// Parameters of [`DaemonCommand::Spawn`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpawnDataflow {
    /// The dataflow id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// The whole validated descriptor, shared by the commands of one start: the coordinator
    /// holds one copy however many daemons it sends it to (on the wire it is a plain
    /// descriptor).
    pub descriptor: std::sync::Arc<Descriptor>,
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

impl SpawnDataflow {
    /// True when spawning needs work first on this daemon: a build (with `build`), a binary
    /// distributed by the CLI (`distribute: scp | http`), or a `git` node's checkout.
    pub fn needs_preparation(&self) -> bool {
        self.local_nodes().any(|n| {
            self.artifacts.contains_key(&n.id)
                || n.deploy().distribute != Distribute::Local
                || (self.build && has_build(n))
                || n.git.is_some()
        })
    }

    /// The descriptor's nodes placed on this daemon.
    pub fn local_nodes(&self) -> impl Iterator<Item = &NodeSpec> {
        self.descriptor
            .nodes
            .iter()
            .filter(|n| self.nodes.contains(&n.id))
    }
}

/// True when the node has a non-empty `build` command.
pub fn has_build(node: &NodeSpec) -> bool {
    node.build.as_deref().is_some_and(|b| !b.trim().is_empty())
}

/// Parameters of [`DaemonCommand::Build`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildNodes {
    /// The build (`adora build` prints it; `adora start --build-id` uses it).
    pub build_id: Uuid,
    /// The whole validated descriptor.
    pub descriptor: Descriptor,
    /// The dataflow's directory (builds without `working_dir` run there).
    pub working_dir: PathBuf,
    /// The `distribute: local` nodes with a `build` placed on this daemon.
    pub nodes: BTreeSet<NodeId>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::round_trip;

    /// A spawn of node `a` of `yaml` (a one-node descriptor).
    fn spawn_a(
        id: Uuid,
        yaml: &str,
        artifacts: crate::distribute::NodeArtifacts,
        build: bool,
    ) -> SpawnDataflow {
        SpawnDataflow {
            id,
            name: "demo".into(),
            descriptor: Descriptor::parse(yaml, std::path::Path::new("d.yml"))
                .expect("valid test descriptor")
                .into(),
            working_dir: "/srv".into(),
            nodes: ["a".into()].into(),
            artifacts,
            build,
        }
    }

    #[test]
    fn every_command_round_trips() {
        let id = Uuid::new_v4();
        let plain = "nodes:\n  - id: a\n    path: ./a\n";
        let built = "nodes:\n  - id: a\n    path: ./a\n    build: make\n";
        round_trip(DaemonCommand::Heartbeat);
        round_trip(DaemonCommand::StopNodes {
            dataflow: id,
            nodes: vec!["a".into()],
        });
        round_trip(DaemonCommand::LockAnswer {
            request: 3,
            result: Err(ControlError::new(
                crate::control::ErrorKind::Busy,
                "machine `robot` is being upgraded",
            )),
        });
        round_trip(DaemonCommand::Spawn(spawn_a(
            id,
            plain,
            Default::default(),
            false,
        )));
        let copied = [(
            "a".into(),
            crate::distribute::NodeArtifact::Copied {
                path: "/var/lib/adora/dataflows/x/a/a".into(),
                sha256: Some("0f".repeat(32)),
            },
        )];
        round_trip(DaemonCommand::Spawn(spawn_a(
            id,
            plain,
            copied.into(),
            true,
        )));
        round_trip(DaemonCommand::Prepare(spawn_a(
            id,
            built,
            Default::default(),
            true,
        )));
        round_trip(DaemonCommand::Discard { dataflow: id });
        round_trip(DaemonCommand::Build(BuildNodes {
            build_id: id,
            descriptor: Descriptor::parse(built, std::path::Path::new("d.yml"))
                .expect("valid test descriptor"),
            working_dir: "/srv".into(),
            nodes: ["a".into()].into(),
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
        round_trip(DaemonCommand::ReadServiceLog {
            tail: Some(20),
            follow: true,
        });
        round_trip(DaemonCommand::StopServiceLog { command: 7 });
        round_trip(DaemonCommand::Tap {
            dataflow: id,
            outputs: vec![("a".into(), "out".into())],
            lossy: false,
            before_spawn: true,
        });
        round_trip(DaemonCommand::TapCredit {
            command: 7,
            cost: 512,
        });
        round_trip(DaemonCommand::Untap { command: 7 });
        round_trip(DaemonCommand::Shutdown);
        assert_needs_preparation();
        round_trip(DaemonCommand::Peers {
            endpoints: vec!["tcp/10.0.0.2:7447".into()],
        });
        round_trip(DaemonCommand::DataLinks {
            peers: vec![crate::data_links::DataPeer {
                machine: "gpu".into(),
                endpoints: vec!["tls/10.0.0.3:7447".into()],
            }],
        });
        let refused = RegistrationRefused::MachineIdTaken {
            machine_id: "robot".into(),
            hostname: "robot-1".into(),
            address: Some("10.0.0.2".into()),
            connected_for_secs: 42,
        };
        let text = refused.to_string();
        assert!(
            text.contains("`robot` is taken") && text.contains("robot-1 (10.0.0.2)"),
            "{text}"
        );
        round_trip(DaemonCommand::Refused(refused));
        round_trip(DaemonCommand::Relocate(crate::relocation::Relocation {
            dataflow: id,
            node: "a".into(),
            step: crate::relocation::RelocateStep::Spawn(Box::new(spawn_a(
                id,
                plain,
                Default::default(),
                false,
            ))),
            cut: Default::default(),
        }));
    }

    fn assert_needs_preparation() {
        let yaml = "nodes:\n  - id: a\n    path: ./a\n    build: make\n  - id: b\n    path: ./b\n    _unstable_deploy: { distribute: http }\n";
        let spawn = |nodes: &[&str], build: bool| SpawnDataflow {
            id: Uuid::nil(),
            name: "demo".into(),
            descriptor: Descriptor::parse(yaml, std::path::Path::new("d.yml"))
                .expect("valid test descriptor")
                .into(),
            working_dir: "/srv".into(),
            nodes: nodes.iter().map(|n| (*n).into()).collect(),
            artifacts: Default::default(),
            build,
        };
        assert!(
            !spawn(&["a"], false).needs_preparation(),
            "plain local node"
        );
        assert!(spawn(&["a"], true).needs_preparation(), "local build");
        assert!(spawn(&["b"], false).needs_preparation(), "http node");
        assert!(!spawn(&[], true).needs_preparation(), "nothing placed here");
    }
}
