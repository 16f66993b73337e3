//! Placement: which daemon runs which node, decided for the whole dataflow before anything is
//! spawned (all or nothing).
//!
//! Which daemons match a node: `machine` > `labels` > neither.
//! 1. `deploy.machine: X` → the daemon registered with machine id X;
//! 2. `deploy.labels` → the daemons whose labels are a superset (exact string match);
//! 3. neither → the daemons registered without a machine id.
//!
//! Among the matching daemons (in registration order):
//! - a daemon whose machine is cordoned or draining ([`Candidate::unavailable`]) takes no new
//!   node; a node pinned to it fails with the reason (`machine "x" is cordoned: <reason>`);
//! - a daemon above one of its thresholds (`max_cpu_percent`, `max_memory_percent`,
//!   `min_disk_free`; [`MachineLimits`]) takes no new node;
//! - a node without `deploy.resources` goes to the first remaining one (as before resources
//!   existed);
//! - a node with `deploy.resources` goes to the one with the most **headroom** for what it asks,
//!   and never to one that cannot fit it ([`fit`]). What is free of a resource is the machine's
//!   capacity (capped by its threshold) minus the larger of the measured use and what the nodes
//!   of running dataflows there asked for, minus what the nodes of this dataflow placed there
//!   before it (in descriptor order) asked for; the headroom is, over the resources the node
//!   asks for, the smallest fraction of the machine's capacity left free once the node is
//!   counted. The largest headroom wins; a tie goes to the daemon registered first. A daemon that has not
//!   reported its figures yet (or not the figure asked for: GPUs without `nvidia-smi`) cannot
//!   fit a request, and is never above a threshold.
//!
//! A node that cannot be placed names every matching daemon with why it was refused.
//!
//! `deploy` here is the node's effective one (`_unstable_deploy` is the same field, and the
//! root `deploy` is merged in at load time), so placement never looks at the root itself.

use std::{collections::BTreeMap, fmt};

use crate::{
    resources::{MachineFigures, MachineLimits, Reserved},
    Descriptor, NodeId, NodeSpec,
};

pub mod fit;

/// What placement needs to know about a connected daemon.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidate {
    /// Machine id, if the daemon has one.
    pub machine_id: Option<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// How refusals name it: machine id, or hostname for an unnamed daemon (empty: the machine
    /// id, else "an unnamed daemon").
    pub name: String,
    /// Its machine's latest figures (`None` before a heartbeat carried them).
    pub figures: Option<MachineFigures>,
    /// Its thresholds.
    pub limits: MachineLimits,
    /// What the nodes of running dataflows placed on it asked for.
    pub reserved: Reserved,
    /// Why it takes no new nodes (`cordoned: <reason>`, `draining`), if it does not.
    pub unavailable: Option<String>,
}

impl Candidate {
    /// How refusals name this daemon.
    pub fn display_name(&self) -> &str {
        match (&self.name, &self.machine_id) {
            (name, _) if !name.is_empty() => name,
            (_, Some(id)) => id,
            _ => "an unnamed daemon",
        }
    }

    /// The thresholds its machine is above (empty: it takes new nodes).
    pub fn over_limits(&self) -> Vec<String> {
        self.figures
            .as_ref()
            .map(|f| self.limits.exceeded(f))
            .unwrap_or_default()
    }
}

/// Why one matching daemon was not chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The daemon ([`Candidate::display_name`]).
    pub daemon: String,
    /// Why, e.g. `memory 3.1 GiB free < 4.0 GiB requested`.
    pub reason: String,
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
    /// Daemons match, but none can take the node: each one with why.
    NoRoom(Vec<Refusal>),
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
            Self::NoRoom(refusals) => {
                let each: Vec<String> = refusals
                    .iter()
                    .map(|r| format!("{}: {}", r.daemon, r.reason))
                    .collect();
                write!(f, "no machine can take it: {}", each.join("; "))
            }
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

/// The index of the daemon (in `daemons`, in registration order) that runs `node`, when it is
/// the only node placed (see [`place`] for a whole dataflow).
pub fn place_node(node: &NodeSpec, daemons: &[Candidate]) -> Result<usize, PlacementFailure> {
    choose(node, daemons, &vec![Reserved::default(); daemons.len()])
}

/// The indexes of the daemons matching `node`'s `machine`, else `labels`, else the unnamed ones.
fn matching(node: &NodeSpec, daemons: &[Candidate]) -> Result<Vec<usize>, PlacementFailure> {
    let deploy = node.deploy();
    let (found, failure): (Vec<usize>, _) = if let Some(machine) = &deploy.machine {
        let found = (0..daemons.len())
            .filter(|&i| daemons[i].machine_id.as_deref() == Some(machine.as_str()))
            .collect();
        (found, PlacementFailure::NoMachine(machine.clone()))
    } else if !deploy.labels.is_empty() {
        let found = (0..daemons.len())
            .filter(|&i| {
                deploy
                    .labels
                    .iter()
                    .all(|(k, v)| daemons[i].labels.get(k) == Some(v))
            })
            .collect();
        (found, PlacementFailure::NoLabels(deploy.labels.clone()))
    } else {
        let found = (0..daemons.len())
            .filter(|&i| daemons[i].machine_id.is_none())
            .collect();
        (found, PlacementFailure::NoUnnamed)
    };
    if found.is_empty() {
        Err(failure)
    } else {
        Ok(found)
    }
}

/// The daemon for `node`, `placed[i]` being what the nodes of this dataflow already placed on
/// daemon `i` asked for (see the module doc for the rules).
fn choose(
    node: &NodeSpec,
    daemons: &[Candidate],
    placed: &[Reserved],
) -> Result<usize, PlacementFailure> {
    let requests = node.deploy().resources.unwrap_or_default();
    let mut refusals = Vec::new();
    let mut best: Option<(usize, f64)> = None;
    for i in matching(node, daemons)? {
        let daemon = &daemons[i];
        let refuse = |reason: String| Refusal {
            daemon: daemon.display_name().to_owned(),
            reason,
        };
        if let Some(reason) = &daemon.unavailable {
            if let Some(machine) = &node.deploy().machine {
                return Err(PlacementFailure::Unavailable {
                    machine: machine.clone(),
                    reason: reason.clone(),
                });
            }
            refusals.push(refuse(reason.clone()));
            continue;
        }
        let over = daemon.over_limits();
        if !over.is_empty() {
            refusals.push(refuse(format!("above its threshold: {}", over.join(", "))));
            continue;
        }
        if requests.is_empty() {
            return Ok(i);
        }
        match fit::headroom(daemon, &placed[i], &requests) {
            // Strictly more: a tie keeps the daemon registered first.
            Ok(h) if best.is_none_or(|(_, b)| h > b) => best = Some((i, h)),
            Ok(_) => {}
            Err(reason) => refusals.push(refuse(reason)),
        }
    }
    best.map(|(i, _)| i)
        .ok_or(PlacementFailure::NoRoom(refusals))
}

/// Places every node of `descriptor` on one of `daemons` (in registration order), in descriptor
/// order, each node's requests counting against its daemon for the nodes after it. Returns the
/// index of each node's daemon, or every node that cannot be placed.
pub fn place(
    descriptor: &Descriptor,
    daemons: &[Candidate],
) -> Result<BTreeMap<NodeId, usize>, Vec<PlacementError>> {
    let mut placed = BTreeMap::new();
    let mut reserved = vec![Reserved::default(); daemons.len()];
    let mut errors = Vec::new();
    for node in &descriptor.nodes {
        match choose(node, daemons, &reserved) {
            Ok(i) => {
                if let Some(requests) = &node.deploy().resources {
                    reserved[i].add(requests);
                }
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
mod resource_tests;
#[cfg(test)]
mod tests;
