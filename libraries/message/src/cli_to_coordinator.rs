//! Requests of the CLI (`adora start`, `stop`, `list`, ...) to the coordinator, over
//! `/api/v1/control`.

use std::{path::PathBuf, time::Duration};

use adora_core::{Descriptor, NodeId};
use serde::{Deserialize, Serialize};

/// A request of a CLI client. Each is sent in an [`Envelope`](crate::envelope::Envelope) whose
/// id the replies carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ControlRequest {
    /// Place and spawn a dataflow.
    Start(StartDataflow),
    /// Stop a running dataflow (by name or uuid) and reply when every node has ended.
    Stop {
        /// Name or uuid.
        dataflow: String,
        /// Time nodes get after Stop before SIGTERM (the daemon's default when absent).
        grace: Option<Duration>,
    },
    /// Stop a dataflow and start it again from its stored descriptor.
    Restart {
        /// Name or uuid.
        dataflow: String,
    },
    /// List the dataflows the coordinator knows.
    List,
    /// Coordinator and daemon status.
    Status,
    /// The logs of a dataflow (running or finished).
    Logs(LogsRequest),
    /// Tell every connected daemon to stop its dataflows and exit (`adora cluster down`);
    /// answered by `ShuttingDown` with the daemons told.
    ShutdownDaemons,
    /// Stop the coordinator itself (`adora cluster down`, after `ShutdownDaemons`); answered by
    /// `ShuttingDown` before it exits.
    ShutdownCoordinator,
}

/// Parameters of [`ControlRequest::Start`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartDataflow {
    /// The validated descriptor.
    pub descriptor: Descriptor,
    /// Unique name; generated when absent.
    pub name: Option<String>,
    /// Directory the dataflow's relative paths are resolved against (on the daemons).
    pub working_dir: PathBuf,
    /// Stream node logs and the final result on this connection.
    pub attach: bool,
}

/// Parameters of [`ControlRequest::Logs`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    /// Name or uuid.
    pub dataflow: String,
    /// Only this node.
    pub node: Option<NodeId>,
    /// Only the last N lines of each node.
    pub tail: Option<usize>,
    /// Keep streaming new lines until the dataflow ends.
    pub follow: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::round_trip;

    fn descriptor() -> Descriptor {
        Descriptor::parse(
            "nodes:\n  - id: a\n    path: ./a\n    outputs: [x]\n  - id: b\n    path: ./b\n    inputs:\n      x: a/x\n",
            std::path::Path::new("dataflow.yml"),
        )
        .expect("valid test descriptor")
    }

    #[test]
    fn every_request_round_trips() {
        round_trip(ControlRequest::Start(StartDataflow {
            descriptor: descriptor(),
            name: Some("demo".into()),
            working_dir: "/tmp/x".into(),
            attach: true,
        }));
        round_trip(ControlRequest::Stop {
            dataflow: "demo".into(),
            grace: Some(Duration::from_millis(1500)),
        });
        round_trip(ControlRequest::Restart {
            dataflow: "demo".into(),
        });
        round_trip(ControlRequest::List);
        round_trip(ControlRequest::Status);
        round_trip(ControlRequest::Logs(LogsRequest {
            dataflow: "demo".into(),
            node: Some("a".into()),
            tail: Some(10),
            follow: true,
        }));
        round_trip(ControlRequest::ShutdownDaemons);
        round_trip(ControlRequest::ShutdownCoordinator);
    }
}
