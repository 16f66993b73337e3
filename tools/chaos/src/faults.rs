//! The faults: what each kind does to the system, drawn from the seeded generator so that a seed
//! reproduces the same sequence of faults, targets and delays.

use std::{fmt, str::FromStr, time::Duration};

use rand::{rngs::StdRng, Rng};

use crate::cluster::{Cluster, MACHINES, NODES};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// kill -9 of the coordinator, restarted (same store and port) after 1–10 s.
    CoordinatorKill,
    /// kill -9 of one daemon (its nodes die with it), restarted after 0.5–5 s.
    DaemonKill,
    /// kill -9 of one node process; its restart policy brings it back.
    NodeKill,
    /// One host cut off the network for 1–20 s.
    Cut,
    /// `adora stop` of the dataflow, then `adora start` again.
    StopStart,
}

/// Every kind, in a fixed order (the generator indexes it).
pub const ALL: [FaultKind; 5] = [
    FaultKind::CoordinatorKill,
    FaultKind::DaemonKill,
    FaultKind::NodeKill,
    FaultKind::Cut,
    FaultKind::StopStart,
];

impl FaultKind {
    /// The name used on the command line and in the figures.
    pub fn name(self) -> &'static str {
        match self {
            Self::CoordinatorKill => "coordinator-kill",
            Self::DaemonKill => "daemon-kill",
            Self::NodeKill => "node-kill",
            Self::Cut => "cut",
            Self::StopStart => "stop-start",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = ALL.iter().map(|k| k.name()).collect();
            format!("unknown fault kind `{s}` (one of: {})", names.join(", "))
        })
    }
}

/// One fault, drawn before it is injected.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Its kind.
    pub kind: FaultKind,
    /// The host (daemon kill, cut) or node (node kill) it hits; empty for the others.
    pub target: String,
    /// How long the component stays down or cut off.
    pub down: Duration,
}

/// Draws the next fault among `kinds`.
fn draw(rng: &mut StdRng, kinds: &[FaultKind]) -> Plan {
    let kind = kinds[rng.gen_range(0..kinds.len())];
    let millis =
        |rng: &mut StdRng, from: u64, to: u64| Duration::from_millis(rng.gen_range(from..=to));
    let (target, down) = match kind {
        FaultKind::CoordinatorKill => (String::new(), millis(rng, 1_000, 10_000)),
        FaultKind::DaemonKill => (pick(rng, &MACHINES), millis(rng, 500, 5_000)),
        FaultKind::NodeKill => {
            let nodes: Vec<&str> = NODES.iter().map(|(n, _)| *n).collect();
            (pick(rng, &nodes), Duration::ZERO)
        }
        FaultKind::Cut => (pick(rng, &MACHINES), millis(rng, 1_000, 20_000)),
        FaultKind::StopStart => (String::new(), millis(rng, 0, 3_000)),
    };
    Plan { kind, target, down }
}

impl Plan {
    /// Whether the fault may lose messages of the chain: it restarts or cuts off a part of it
    /// (a chain node, a daemon, a host, the dataflow). A coordinator kill or an idle node's kill
    /// must not: what the chain loses then is unexcused.
    pub fn hits_the_chain(&self) -> bool {
        match self.kind {
            FaultKind::CoordinatorKill => false,
            FaultKind::NodeKill => ["sender", "relay", "sink"].contains(&self.target.as_str()),
            FaultKind::DaemonKill | FaultKind::Cut | FaultKind::StopStart => true,
        }
    }
}

/// The seeded fault schedule: a quiet gap, a fault, a gap, a fault... The same seed, kinds and
/// gap range give the same sequence.
pub struct Schedule {
    rng: StdRng,
    kinds: Vec<FaultKind>,
    gap_ms: (u64, u64),
}

impl Schedule {
    /// The schedule of `seed`.
    pub fn new(seed: u64, kinds: &[FaultKind], gap_ms: (u64, u64)) -> Self {
        Self {
            rng: rand::SeedableRng::seed_from_u64(seed),
            kinds: kinds.to_vec(),
            gap_ms,
        }
    }

    /// The quiet time before the next fault.
    pub fn gap(&mut self) -> Duration {
        Duration::from_millis(self.rng.gen_range(self.gap_ms.0..=self.gap_ms.1))
    }

    /// The next fault.
    pub fn fault(&mut self) -> Plan {
        draw(&mut self.rng, &self.kinds)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if !self.target.is_empty() {
            write!(f, " {}", self.target)?;
        }
        if !self.down.is_zero() {
            write!(f, " for {:?}", self.down)?;
        }
        Ok(())
    }
}

fn pick(rng: &mut StdRng, from: &[&str]) -> String {
    from[rng.gen_range(0..from.len())].to_owned()
}

/// Injects `plan` and heals it (restart, restore, start): returns once the healing action is
/// done; recovering is the system's job from there. `Err` when the soak itself could not act.
pub fn inject(cluster: &mut Cluster, plan: &Plan, run_tag: &str) -> anyhow::Result<String> {
    let host = || {
        MACHINES
            .iter()
            .position(|m| *m == plan.target)
            .expect("daemon and cut targets are drawn from MACHINES")
    };
    match plan.kind {
        FaultKind::CoordinatorKill => {
            cluster.kill_coordinator();
            std::thread::sleep(plan.down);
            cluster.start_coordinator();
            Ok(format!("coordinator down {:?}", plan.down))
        }
        FaultKind::DaemonKill => {
            let i = host();
            cluster.kill_daemon(i);
            std::thread::sleep(plan.down);
            cluster.start_daemon(i);
            Ok(format!("daemon {} down {:?}", plan.target, plan.down))
        }
        FaultKind::NodeKill => kill_node(&plan.target, run_tag),
        FaultKind::Cut => {
            let h = cluster.hosts.host(host());
            h.cut();
            std::thread::sleep(plan.down);
            h.restore();
            Ok(format!("host {} cut {:?}", plan.target, plan.down))
        }
        FaultKind::StopStart => {
            let stopped = cluster.stop_dataflow();
            std::thread::sleep(plan.down);
            cluster.start_dataflow()?;
            Ok(format!(
                "stopped ({}), started again after {:?}",
                if stopped { "ok" } else { "stop failed" },
                plan.down
            ))
        }
    }
}

/// kill -9 of the live process of `node` (waits up to 10 s for one to exist).
fn kill_node(node: &str, run_tag: &str) -> anyhow::Result<String> {
    let mut pids = Vec::new();
    let found = adora_test_support::wait_until(Duration::from_secs(10), || {
        pids = crate::monitor::node_instances(run_tag)
            .remove(node)
            .unwrap_or_default();
        !pids.is_empty()
    });
    if !found {
        anyhow::bail!("node `{node}` has no live process to kill");
    }
    for pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    Ok(format!("node {node} (pid {pids:?}) killed"))
}
