//! Placement: which daemon runs which node, decided for the whole dataflow before anything is
//! spawned (all or nothing).
//!
//! Priority per node: `machine` > `labels` > neither.
//! 1. `deploy.machine: X` → the daemon registered with machine id X;
//! 2. `deploy.labels` → the first daemon (in registration order) whose labels are a
//!    superset (exact string match);
//! 3. neither → the first daemon registered without a machine id.
//!
//! A daemon whose machine is cordoned or draining (`Candidate::unavailable`) takes no new node:
//! labels and unnamed nodes skip it, a node pinned to it fails with the reason.
//!
//! `deploy` here is the node's effective one (`_unstable_deploy` is the same field, and the
//! root `deploy` is merged in at load time), so placement never looks at the root itself.

use std::{collections::BTreeMap, fmt};

use crate::{Descriptor, NodeId, NodeSpec};

/// What placement needs to know about a connected daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidate {
    /// Machine id, if the daemon has one.
    pub machine_id: Option<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Why it takes no new nodes (`cordoned: <reason>`, `draining`), if it does not.
    pub unavailable: Option<String>,
}

/// Why one node could not be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementFailure {
    /// No daemon has the required machine id.
    NoMachine(String),
    /// No daemon carries all the required labels.
    NoLabels(BTreeMap<String, String>),
    /// No daemon without a machine id is connected.
    NoUnnamed,
    /// The node is pinned to a machine that takes no new nodes.
    Unavailable {
        /// The machine.
        machine: String,
        /// Why (`cordoned: <reason>`, `draining`).
        reason: String,
    },
}

impl fmt::Display for PlacementFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoMachine(id) => write!(f, "no matching daemon for machine id {id:?}"),
            Self::NoLabels(labels) => {
                let pairs: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k:?}: {v:?}"))
                    .collect();
                write!(f, "no daemon matches labels {{{}}}", pairs.join(", "))
            }
            Self::NoUnnamed => f.write_str("no unnamed daemon connected"),
            Self::Unavailable { machine, reason } => write!(f, "machine {machine:?} is {reason}"),
        }
    }
}

/// A node that could not be placed, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node `{node}`: {failure}")]
pub struct PlacementError {
    /// The node.
    pub node: NodeId,
    /// Why.
    pub failure: PlacementFailure,
}

/// The index of the daemon (in `daemons`, in registration order) that runs `node`.
pub fn place_node(node: &NodeSpec, daemons: &[Candidate]) -> Result<usize, PlacementFailure> {
    let deploy = node.deploy();
    if let Some(machine) = &deploy.machine {
        let i = daemons
            .iter()
            .position(|d| d.machine_id.as_deref() == Some(machine.as_str()))
            .ok_or_else(|| PlacementFailure::NoMachine(machine.clone()))?;
        match &daemons[i].unavailable {
            Some(reason) => Err(PlacementFailure::Unavailable {
                machine: machine.clone(),
                reason: reason.clone(),
            }),
            None => Ok(i),
        }
    } else if !deploy.labels.is_empty() {
        daemons
            .iter()
            .position(|d| {
                d.unavailable.is_none()
                    && deploy
                        .labels
                        .iter()
                        .all(|(k, v)| d.labels.get(k) == Some(v))
            })
            .ok_or_else(|| PlacementFailure::NoLabels(deploy.labels.clone()))
    } else {
        daemons
            .iter()
            .position(|d| d.unavailable.is_none() && d.machine_id.is_none())
            .ok_or(PlacementFailure::NoUnnamed)
    }
}

/// Places every node of `descriptor` on one of `daemons` (in registration order). Returns the
/// index of each node's daemon, or every node that cannot be placed.
pub fn place(
    descriptor: &Descriptor,
    daemons: &[Candidate],
) -> Result<BTreeMap<NodeId, usize>, Vec<PlacementError>> {
    let mut placed = BTreeMap::new();
    let mut errors = Vec::new();
    for node in &descriptor.nodes {
        let found = place_node(node, daemons);
        match found {
            Ok(i) => {
                placed.insert(node.id.clone(), i);
            }
            Err(failure) => errors.push(PlacementError {
                node: node.id.clone(),
                failure,
            }),
        }
    }
    if errors.is_empty() {
        Ok(placed)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests;
