//! The health gate of one machine after its daemon restarted: what the coordinator says about
//! the daemon and the nodes placed on the machine ([`Observation`]), and the verdict on one
//! observation ([`verdict`]). The rollout polls and keeps the *streak*: the machine is healthy
//! once the same healthy [`Fingerprint`] was seen for the whole `min_healthy_time`; a node that
//! restarted in between (a new pid or a higher restart count) starts the streak again.

use std::time::Duration;

/// The machine's daemon as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSeen {
    /// Whether it is connected now.
    pub connected: bool,
    /// The Adora version it registered with.
    pub version: String,
    /// How long ago it registered (its current or last connection).
    pub registered_ago: Duration,
}

/// One node placed on the machine, as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSeen {
    /// The dataflow's name.
    pub dataflow: String,
    /// The node id.
    pub node: String,
    /// Whether its status is `running`.
    pub running: bool,
    /// Its process id.
    pub pid: Option<u32>,
    /// Restarts by its restart policy.
    pub restarts: u32,
    /// How long ago its daemon reported these figures (`None`: never).
    pub reported_ago: Option<Duration>,
}

/// One look at a machine through the coordinator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// Its daemon (`None`: the coordinator does not know it).
    pub daemon: Option<DaemonSeen>,
    /// The nodes of running dataflows placed on it.
    pub nodes: Vec<NodeSeen>,
}

impl Observation {
    /// `dataflow/node` of the nodes that run now: the ones that must run again after the
    /// restart.
    pub fn running_nodes(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.running)
            .map(|n| format!("{}/{}", n.dataflow, n.node))
            .collect();
        names.sort();
        names
    }
}

/// The identity of a healthy state: every expected node with its pid and restart count. Any
/// change while the streak runs is a restart.
pub type Fingerprint = Vec<(String, Option<u32>, u32)>;

/// Healthy now (with what identifies this state), or not yet (and why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The daemon runs `version` since the restart and every expected node runs.
    Ready(Fingerprint),
    /// Not (yet): why, for the message when the deadline passes.
    NotReady(String),
}

/// Judges one observation, taken `since_restart` after the daemon was restarted: its daemon must
/// be connected with `version` *since* the restart, and every node of `expected`
/// (`dataflow/node`) must run, as reported by that new daemon.
pub fn verdict(
    seen: &Observation,
    version: &str,
    expected: &[String],
    since_restart: Duration,
) -> Verdict {
    let Some(d) = &seen.daemon else {
        return Verdict::NotReady("the coordinator does not know its daemon".into());
    };
    if !d.connected {
        return Verdict::NotReady("its daemon is not connected".into());
    }
    if d.registered_ago >= since_restart {
        return Verdict::NotReady("the old daemon's connection is still open".into());
    }
    if d.version != version {
        return Verdict::NotReady(format!(
            "its daemon reconnected with adora {} (expected {version})",
            d.version
        ));
    }
    let mut fingerprint = Fingerprint::new();
    for name in expected {
        let node = seen
            .nodes
            .iter()
            .find(|n| format!("{}/{}", n.dataflow, n.node) == *name);
        let Some(node) = node else {
            return Verdict::NotReady(format!("node {name} is not placed there any more"));
        };
        let fresh = node.reported_ago.is_some_and(|age| age < since_restart);
        if !node.running || !fresh {
            return Verdict::NotReady(format!("node {name} is not running (yet)"));
        }
        fingerprint.push((name.clone(), node.pid, node.restarts));
    }
    Verdict::Ready(fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(version: &str, registered_ago: u64, nodes: &[(&str, bool, u32, u64)]) -> Observation {
        Observation {
            daemon: Some(DaemonSeen {
                connected: true,
                version: version.into(),
                registered_ago: Duration::from_secs(registered_ago),
            }),
            nodes: nodes
                .iter()
                .map(|(node, running, pid, age)| NodeSeen {
                    dataflow: "flow".into(),
                    node: (*node).into(),
                    running: *running,
                    pid: Some(*pid),
                    restarts: 0,
                    reported_ago: Some(Duration::from_secs(*age)),
                })
                .collect(),
        }
    }

    #[test]
    fn ready_only_with_the_new_version_since_the_restart_and_every_node_running() {
        let expected = vec!["flow/a".to_owned()];
        let since = Duration::from_secs(10);
        let ok = seen("2.0", 5, &[("a", true, 7, 1)]);
        assert_eq!(
            verdict(&ok, "2.0", &expected, since),
            Verdict::Ready(vec![("flow/a".into(), Some(7), 0)])
        );
        let not = |o: &Observation| match verdict(o, "2.0", &expected, since) {
            Verdict::NotReady(why) => why,
            Verdict::Ready(_) => panic!("{o:?} is not ready"),
        };
        assert!(not(&seen("1.0", 5, &[("a", true, 7, 1)])).contains("adora 1.0"));
        assert!(not(&seen("2.0", 20, &[("a", true, 7, 1)])).contains("old daemon"));
        assert!(not(&seen("2.0", 5, &[("a", false, 7, 1)])).contains("flow/a"));
        // Figures from before the restart do not count.
        assert!(not(&seen("2.0", 5, &[("a", true, 7, 30)])).contains("flow/a"));
        assert!(not(&seen("2.0", 5, &[])).contains("not placed"));
        assert!(not(&Observation::default()).contains("does not know"));
        let mut lost = ok.clone();
        lost.daemon.as_mut().expect("daemon").connected = false;
        assert!(not(&lost).contains("not connected"));
        assert_eq!(ok.running_nodes(), ["flow/a"]);
    }
}
