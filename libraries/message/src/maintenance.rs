//! Maintenance of a live fleet: a machine's lifecycle state (`ready`, `cordoned`, `draining`,
//! `upgrading`), the update locks that hold maintenance off, and the claims that keep two
//! maintenance operations off one machine. Kept in the coordinator's store, shown by
//! `adora cluster status`, changed by `adora cluster cordon|uncordon|lock|unlock|drain|upgrade`
//! and by nodes (`AdoraNode::update_lock`).

use adora_core::NodeId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest reason a cordon, a lock or a drain may carry (bytes).
pub const MAX_REASON_LEN: usize = 1024;

/// A maintenance operation that takes a machine for itself while it runs (one at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// `adora cluster upgrade`.
    Upgrade,
    /// `adora cluster drain`.
    Drain,
}

impl Operation {
    /// The gerund used in messages: "machine x is being upgraded".
    pub fn participle(self) -> &'static str {
        match self {
            Self::Upgrade => "upgraded",
            Self::Drain => "drained",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Upgrade => "upgrade",
            Self::Drain => "drain",
        })
    }
}

/// Why a machine takes no new nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cordon {
    /// The operator's reason (`--reason`), or the operation that cordoned it.
    pub reason: String,
    /// When (milliseconds since the Unix epoch).
    pub since_ms: u64,
}

/// Who holds an update lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LockHolder {
    /// An operator (`adora cluster lock`).
    Operator,
    /// A node, through its node API; released when the guard is dropped or the node exits.
    Node {
        /// Its dataflow.
        dataflow: Uuid,
        /// The dataflow's name, when the coordinator knew it.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        dataflow_name: String,
        /// The node.
        node: NodeId,
        /// The lock's number within that node (each `update_lock` call takes a new one).
        lock: u64,
    },
}

impl LockHolder {
    /// True when both name the same holder (the dataflow's name aside).
    pub fn same(&self, other: &LockHolder) -> bool {
        match (self, other) {
            (Self::Operator, Self::Operator) => true,
            (
                Self::Node {
                    dataflow: d1,
                    node: n1,
                    lock: l1,
                    ..
                },
                Self::Node {
                    dataflow: d2,
                    node: n2,
                    lock: l2,
                    ..
                },
            ) => d1 == d2 && n1 == n2 && l1 == l2,
            _ => false,
        }
    }
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Operator => f.write_str("an operator"),
            Self::Node {
                dataflow,
                dataflow_name,
                node,
                ..
            } if dataflow_name.is_empty() => write!(f, "node `{node}` of dataflow {dataflow}"),
            Self::Node {
                dataflow_name,
                node,
                ..
            } => write!(f, "node `{node}` of dataflow `{dataflow_name}`"),
        }
    }
}

/// An update lock: while a machine has one, `cluster upgrade` and `cluster drain` wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateLock {
    /// Who holds it.
    pub holder: LockHolder,
    /// Why (`"grasping"`).
    pub reason: String,
    /// Since when (milliseconds since the Unix epoch).
    pub since_ms: u64,
}

impl std::fmt::Display for UpdateLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.holder, self.reason)
    }
}

/// A maintenance operation in progress on a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Which operation.
    pub operation: Operation,
    /// Its id (the client's); ends it, and lets the same client claim again.
    pub id: Uuid,
    /// Since when (milliseconds since the Unix epoch).
    pub since_ms: u64,
    /// When it lapses unless renewed (milliseconds since the Unix epoch): a client that died
    /// mid-operation does not keep the machine forever.
    pub expires_ms: u64,
}

/// A drain in progress (or done) on a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainState {
    /// When it started (milliseconds since the Unix epoch).
    pub since_ms: u64,
    /// When pinned nodes are stopped (milliseconds since the Unix epoch).
    pub deadline_ms: u64,
    /// Stop pinned nodes at once and ignore update locks.
    pub force: bool,
    /// How each node of the machine fares, in the order they were handled.
    pub nodes: Vec<DrainedNode>,
    /// Set when every node was handled.
    pub done: bool,
    /// Why the drain is waiting (an update lock), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// One node of a drained machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainedNode {
    /// Its dataflow.
    pub dataflow: Uuid,
    /// Its dataflow's name.
    pub dataflow_name: String,
    /// The node.
    pub node: NodeId,
    /// Where it is.
    pub state: DrainNodeState,
}

/// Where a node of a drained machine is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum DrainNodeState {
    /// Not handled yet.
    Pending,
    /// Being moved to `to`.
    Moving {
        /// The target machine.
        to: String,
    },
    /// Runs on `to` now.
    Moved {
        /// The machine it runs on.
        to: String,
    },
    /// Pinned (`deploy.machine`): waits for the deadline to be stopped.
    Pinned,
    /// Stopped (pinned, at the deadline or with `--force`): its dataflow is degraded.
    Stopped,
    /// Could not be moved (and was stopped at the deadline, or left running).
    Failed {
        /// Why.
        reason: String,
    },
}

/// A machine's lifecycle state, as `cluster status` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineState {
    /// Takes new nodes.
    #[default]
    Ready,
    /// Takes no new nodes; running work stays.
    Cordoned,
    /// Cordoned, and its nodes are being moved away.
    Draining,
    /// Its binary is being replaced (`cluster upgrade`).
    Upgrading,
}

impl std::fmt::Display for MachineState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ready => "ready",
            Self::Cordoned => "cordoned",
            Self::Draining => "draining",
            Self::Upgrading => "upgrading",
        })
    }
}

/// Everything maintenance knows about one machine; what the store keeps and the CLI is shown.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MachineMaintenance {
    /// The machine's name (machine id, or hostname of an unnamed daemon).
    pub machine: String,
    /// Why it takes no new nodes, if it is cordoned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cordon: Option<Cordon>,
    /// Update locks held on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<UpdateLock>,
    /// The operation that has the machine, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
    /// Its drain, while one runs (and the last one, until it is uncordoned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainState>,
}

impl MachineMaintenance {
    /// An empty record for `machine`.
    pub fn new(machine: impl Into<String>) -> Self {
        Self {
            machine: machine.into(),
            ..Self::default()
        }
    }

    /// Its state now (`now_ms`: claims lapse).
    pub fn state(&self, now_ms: u64) -> MachineState {
        match self.live_claim(now_ms).map(|c| c.operation) {
            Some(Operation::Upgrade) => MachineState::Upgrading,
            _ if self.drain.as_ref().is_some_and(|d| !d.done) => MachineState::Draining,
            _ if self.cordon.is_some() => MachineState::Cordoned,
            _ => MachineState::Ready,
        }
    }

    /// The claim, unless it lapsed.
    pub fn live_claim(&self, now_ms: u64) -> Option<&Claim> {
        self.claim.as_ref().filter(|c| c.expires_ms > now_ms)
    }

    /// True when nothing is recorded (the record can be forgotten).
    pub fn is_empty(&self) -> bool {
        self.cordon.is_none()
            && self.locks.is_empty()
            && self.claim.is_none()
            && self.drain.is_none()
    }

    /// Why new nodes may not go there, if they may not.
    pub fn unavailable(&self, now_ms: u64) -> Option<String> {
        match (&self.cordon, self.state(now_ms)) {
            (_, MachineState::Draining) => Some("draining".into()),
            (Some(c), _) => Some(format!("cordoned: {}", c.reason)),
            _ => None,
        }
    }
}

/// A lock a node took, as its daemon reports it (on registration, so a restarted coordinator
/// learns them again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLock {
    /// The node's dataflow.
    pub dataflow: Uuid,
    /// The node.
    pub node: NodeId,
    /// The lock's number within that node.
    pub lock: u64,
    /// Why.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_follows_claim_drain_and_cordon() {
        let mut m = MachineMaintenance::new("robot");
        assert_eq!(m.state(10), MachineState::Ready);
        assert_eq!(m.unavailable(10), None);
        m.cordon = Some(Cordon {
            reason: "battery swap".into(),
            since_ms: 1,
        });
        assert_eq!(m.state(10), MachineState::Cordoned);
        assert_eq!(m.unavailable(10).as_deref(), Some("cordoned: battery swap"));
        m.claim = Some(Claim {
            operation: Operation::Upgrade,
            id: Uuid::nil(),
            since_ms: 1,
            expires_ms: 20,
        });
        assert_eq!(m.state(10), MachineState::Upgrading);
        assert_eq!(
            m.state(20),
            MachineState::Cordoned,
            "a lapsed claim is no claim"
        );
        m.claim = None;
        m.drain = Some(DrainState {
            since_ms: 1,
            deadline_ms: 100,
            force: false,
            nodes: vec![],
            done: false,
            waiting: None,
        });
        assert_eq!(m.state(10), MachineState::Draining);
        assert_eq!(m.unavailable(10).as_deref(), Some("draining"));
    }

    #[test]
    fn records_round_trip_as_json() {
        let m = MachineMaintenance {
            machine: "robot".into(),
            cordon: None,
            locks: vec![UpdateLock {
                holder: LockHolder::Node {
                    dataflow: Uuid::nil(),
                    dataflow_name: "demo".into(),
                    node: "arm".into(),
                    lock: 3,
                },
                reason: "grasping".into(),
                since_ms: 5,
            }],
            claim: None,
            drain: None,
        };
        let json = serde_json::to_string(&m).expect("serializable");
        assert_eq!(
            serde_json::from_str::<MachineMaintenance>(&json).ok(),
            Some(m)
        );
    }
}
