//! The control-plane results: table, CSV and the comparison with the targets.

use std::{fmt::Write as _, time::Duration};

use adora_test_support::simulator::HEARTBEAT_INTERVAL;

use super::{FleetRun, StartRun, TARGET_CPU_PERCENT, TARGET_RSS_MIB, TARGET_START};
use crate::report::Machine;

/// Everything one run measured.
pub(super) struct Report {
    pub machine: Machine,
    pub repeat: usize,
    pub starts: Vec<StartRun>,
    pub fleet: Option<FleetRun>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median of a non-empty list of durations.
fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

impl Report {
    fn header(&self, comment: &str) -> String {
        format!(
            "{comment}adora-bench control-plane: CPU {} ({} cores, /proc/cpuinfo)\n{comment}plan: {} start(s) per size; a node is running once AdoraNode::init_from_env returned (connected, past the start barrier)\n",
            self.machine.cpu, self.machine.cores, self.repeat
        )
    }

    /// The (nodes, daemons) groups in measurement order.
    fn groups(&self) -> Vec<(usize, usize)> {
        let mut groups: Vec<(usize, usize)> = Vec::new();
        for s in &self.starts {
            if !groups.contains(&(s.nodes, s.daemons)) {
                groups.push((s.nodes, s.daemons));
            }
        }
        groups
    }

    pub fn table(&self) -> String {
        let mut out = self.header("");
        if !self.starts.is_empty() {
            let _ = writeln!(
                out,
                "\n{:>7}  {:>7}  {:>11}  {:>15}  {:>14}  {:>14}  {:>10}",
                "nodes",
                "daemons",
                "spawned ms",
                "first running",
                "all running ms",
                "(max of runs)",
                "stop ms"
            );
        }
        for (nodes, daemons) in self.groups() {
            let runs: Vec<&StartRun> = self
                .starts
                .iter()
                .filter(|s| s.nodes == nodes && s.daemons == daemons)
                .collect();
            let pick = |f: fn(&StartRun) -> Duration| median(runs.iter().map(|r| f(r)).collect());
            let max_running = runs.iter().map(|r| r.running).max().unwrap_or_default();
            let _ = writeln!(
                out,
                "{nodes:>7}  {daemons:>7}  {:>11.1}  {:>15.1}  {:>14.1}  {:>14.1}  {:>10.1}",
                ms(pick(|r| r.spawned)),
                ms(pick(|r| r.first_running)),
                ms(pick(|r| r.running)),
                ms(max_running),
                ms(pick(|r| r.stopped)),
            );
        }
        if let Some(f) = &self.fleet {
            let _ = writeln!(
                out,
                "\ncoordinator with {} simulated daemons ({} nodes, heartbeat every {:?}), over {:?}:\n  CPU {:.2}% of one core, RSS {:.1} MiB (registered, no dataflow: {:.1} MiB; peak {:.1} MiB), {} heartbeats received, {} nodes reported running",
                f.daemons,
                f.nodes,
                HEARTBEAT_INTERVAL,
                f.window,
                f.cpu_percent,
                f.rss_mib,
                f.registered_rss_mib,
                f.peak_rss_mib,
                f.heartbeats,
                f.nodes_reported
            );
        }
        out.push_str(&self.targets());
        out
    }

    fn targets(&self) -> String {
        let mut out = String::from("\ntargets:\n");
        let thousand: Vec<&StartRun> = self.starts.iter().filter(|s| s.nodes == 1000).collect();
        if let Some(worst) = thousand.iter().map(|s| s.running).max() {
            let _ = writeln!(
                out,
                "  1000 nodes running < {TARGET_START:?} after `adora start`: worst {:.0} ms -> {}",
                ms(worst),
                met(worst < TARGET_START)
            );
        }
        if let Some(f) = &self.fleet {
            let _ = writeln!(
                out,
                "  coordinator < {TARGET_CPU_PERCENT}% of one core and < {TARGET_RSS_MIB} MiB with {} daemons: {:.2}%, {:.1} MiB -> {}",
                f.daemons,
                f.cpu_percent,
                f.rss_mib,
                met(f.cpu_percent < TARGET_CPU_PERCENT && f.rss_mib < TARGET_RSS_MIB)
            );
        }
        out
    }

    pub fn csv(&self) -> String {
        let mut out = self.header("# ");
        out.push_str("measurement,nodes,daemons,run,spawned_ms,first_running_ms,running_ms,stop_ms,window_s,cpu_percent,registered_rss_mib,rss_mib,peak_rss_mib,heartbeats\n");
        for s in &self.starts {
            let _ = writeln!(
                out,
                "start,{},{},{},{:.3},{:.3},{:.3},{:.3},,,,,,",
                s.nodes,
                s.daemons,
                s.run,
                ms(s.spawned),
                ms(s.first_running),
                ms(s.running),
                ms(s.stopped)
            );
        }
        if let Some(f) = &self.fleet {
            let _ = writeln!(
                out,
                "simulated-daemons,{},{},1,,,,,{:.1},{:.3},{:.2},{:.2},{:.2},{}",
                f.nodes,
                f.daemons,
                f.window.as_secs_f64(),
                f.cpu_percent,
                f.registered_rss_mib,
                f.rss_mib,
                f.peak_rss_mib,
                f.heartbeats
            );
        }
        out
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "missed"
    }
}
