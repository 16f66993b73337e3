//! Types shared by several control-plane directions: dataflow status, node results, log lines,
//! the daemon's status report and the typed error that crosses the wire.

use std::{collections::BTreeMap, path::PathBuf};

use adora_core::{Descriptor, NodeId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Labels of a daemon (`--labels k=v,...`), matched exactly by placement.
pub type Labels = BTreeMap<String, String>;

/// Lifecycle of a dataflow as the coordinator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataflowStatus {
    /// Its daemons are building or fetching binaries; nothing of it runs yet.
    Preparing,
    /// Its nodes are being spawned or are running.
    Running,
    /// A stop was requested; nodes are exiting.
    Stopping,
    /// Every node ended and none failed.
    Finished,
    /// Every node ended and at least one failed.
    Failed,
}

impl DataflowStatus {
    /// True for `finished` and `failed`.
    pub fn is_done(self) -> bool {
        matches!(self, Self::Finished | Self::Failed)
    }
}

impl std::fmt::Display for DataflowStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Preparing => "preparing",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Finished => "finished",
            Self::Failed => "failed",
        })
    }
}

/// How one node ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeResult {
    /// Exited with status 0.
    Finished,
    /// Did not exit after Stop in time and was terminated with `signal`.
    Terminated {
        /// The signal name.
        signal: String,
    },
    /// Failed: non-zero exit, killed, or could not run.
    Failed {
        /// What happened.
        reason: String,
        /// Last lines of its stderr.
        stderr_tail: Vec<String>,
    },
}

impl NodeResult {
    /// True for [`NodeResult::Failed`].
    pub fn is_failure(&self) -> bool {
        matches!(self, NodeResult::Failed { .. })
    }
}

/// The result of a whole dataflow: every node's [`NodeResult`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataflowOutcome {
    /// Per node.
    pub nodes: BTreeMap<NodeId, NodeResult>,
}

impl DataflowOutcome {
    /// Nodes that failed, with their result.
    pub fn failures(&self) -> impl Iterator<Item = (&NodeId, &NodeResult)> {
        self.nodes.iter().filter(|(_, r)| r.is_failure())
    }

    /// True when no node failed.
    pub fn is_success(&self) -> bool {
        self.failures().next().is_none()
    }
}

/// Every failed node with its reason and the last lines of its stderr, one block per node.
impl std::fmt::Display for DataflowOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (node, result) in self.failures() {
            if let NodeResult::Failed {
                reason,
                stderr_tail,
            } = result
            {
                writeln!(f, "node `{node}` failed: {reason}")?;
                if !stderr_tail.is_empty() {
                    writeln!(f, "  last lines of its stderr:")?;
                    for line in stderr_tail {
                        writeln!(f, "    {line}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Output stream of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line a node printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLogLine {
    /// The dataflow.
    pub dataflow: Uuid,
    /// The node.
    pub node: NodeId,
    /// stdout or stderr.
    pub stream: LogStream,
    /// The line without its newline.
    pub line: String,
}

/// A dataflow a daemon is running right now (part of its status report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningDataflow {
    /// Dataflow id.
    pub id: Uuid,
    /// Dataflow name.
    pub name: String,
    /// The descriptor it was started from.
    pub descriptor: Descriptor,
    /// Directory relative paths are resolved against.
    pub working_dir: PathBuf,
    /// The nodes this daemon runs, and whether each is still running.
    pub nodes: BTreeMap<NodeId, bool>,
}

/// What kind of error a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No dataflow with that name or uuid.
    NotFound,
    /// A running dataflow already has that name.
    DuplicateName,
    /// Some node cannot be placed on a connected daemon.
    Placement,
    /// A daemon refused or failed the request.
    Daemon,
    /// The request is invalid.
    InvalidRequest,
    /// Something unexpected on the coordinator.
    Internal,
    /// Another maintenance operation has the machine.
    Busy,
    /// The machine has update locks.
    Locked,
}

/// An error that crosses the wire: a kind plus a message for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ControlError {
    /// The kind.
    pub kind: ErrorKind,
    /// What went wrong, for a user.
    pub message: String,
}

impl ControlError {
    /// Builds an error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A daemon refused or failed a command ([`ErrorKind::Daemon`]).
    pub fn daemon(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Daemon, message)
    }
}
