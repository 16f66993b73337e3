//! Whether a node's requests fit a daemon, and with how much headroom.
//!
//! For each resource a node asks for:
//! - **capacity**: the cores, total memory or GPUs the daemon reported, CPU and memory capped by
//!   its threshold (`max_cpu_percent: 80` on 8 cores leaves 6.4);
//! - **used**: the larger of the measured use (CPU percent of the whole machine, memory total
//!   minus available; GPUs have none) and what the nodes of running dataflows placed there
//!   asked for (a node may not use what it asked for yet), plus what the nodes of this dataflow
//!   placed there before asked for (not measured yet by definition);
//! - **free** = capacity − used; the node fits when free ≥ requested for every resource;
//! - **headroom** = the smallest, over the requested resources, of (free − requested) divided by
//!   the machine's full capacity of that resource: the fraction of the machine that stays free
//!   in its tightest resource once the node runs there.

use super::Candidate;
use crate::resources::{format_bytes, MachineFigures, Reserved, Resources};

/// Slack for floating-point sums of CPU requests (`0.1 + 0.2` cores fit in `0.3`).
const CPU_EPSILON: f64 = 1e-9;

/// The headroom `requests` leave on `daemon` (see the module doc), `placed` being what this
/// dataflow's nodes placed there before asked for; or why they do not fit (every resource that
/// does not, separated by `, `).
pub fn headroom(
    daemon: &Candidate,
    placed: &Reserved,
    requests: &Resources,
) -> Result<f64, String> {
    let Some(figures) = &daemon.figures else {
        return Err("no resource figures reported yet".into());
    };
    let on = On {
        daemon,
        figures,
        placed,
    };
    let fits = [
        requests.cpus().map(|cpus| on.cpu(cpus)),
        requests.memory().map(|memory| on.memory(memory)),
        requests.gpus().map(|gpus| on.gpus(gpus)),
    ];
    let mut headroom = f64::INFINITY;
    let mut problems = Vec::new();
    for fit in fits.into_iter().flatten() {
        match fit {
            Ok(h) => headroom = headroom.min(h),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        Ok(headroom)
    } else {
        Err(problems.join(", "))
    }
}

/// One daemon with its figures and this dataflow's requests placed on it so far.
struct On<'a> {
    daemon: &'a Candidate,
    figures: &'a MachineFigures,
    placed: &'a Reserved,
}

impl On<'_> {
    /// The headroom left by `cpus` cores, or why they do not fit.
    fn cpu(&self, cpus: f64) -> Result<f64, String> {
        let (Some(cores), Some(percent)) = (self.figures.cpus, self.figures.cpu_percent) else {
            return Err("cpu cores or use not reported".into());
        };
        if cores == 0 {
            return Err("cpu cores or use not reported".into());
        }
        let cores = f64::from(cores);
        let max = self
            .daemon
            .limits
            .max_cpu_percent
            .map_or(100.0, |m| f64::from(m).min(100.0));
        let measured = cores * percent.clamp(0.0, 100.0) / 100.0;
        let used = measured.max(self.daemon.reserved.cpus) + self.placed.cpus;
        let free = cores * max / 100.0 - used;
        if free + CPU_EPSILON < cpus {
            Err(format!(
                "cpu {:.1} cores free < {cpus} requested",
                free.max(0.0)
            ))
        } else {
            Ok((free - cpus) / cores)
        }
    }

    /// The headroom left by `memory` bytes, or why they do not fit.
    fn memory(&self, memory: u64) -> Result<f64, String> {
        let (Some(total), Some(available)) =
            (self.figures.memory_total, self.figures.memory_available)
        else {
            return Err("memory not reported".into());
        };
        if total == 0 {
            return Err("memory not reported".into());
        }
        let max = self
            .daemon
            .limits
            .max_memory_percent
            .map_or(100, |m| u64::from(m.min(100)));
        let capacity = (u128::from(total) * u128::from(max) / 100) as u64;
        let used = total
            .saturating_sub(available)
            .max(self.daemon.reserved.memory)
            .saturating_add(self.placed.memory);
        let free = capacity.saturating_sub(used);
        if free < memory {
            Err(format!(
                "memory {} free < {} requested",
                format_bytes(free),
                format_bytes(memory)
            ))
        } else {
            Ok((free - memory) as f64 / total as f64)
        }
    }

    /// The headroom left by `gpus` GPUs, or why they do not fit.
    fn gpus(&self, gpus: u32) -> Result<f64, String> {
        let Some(count) = self.figures.gpus else {
            return Err("no GPUs reported (no working nvidia-smi)".into());
        };
        let taken = self.daemon.reserved.gpus.saturating_add(self.placed.gpus);
        let free = count.saturating_sub(taken);
        if free < gpus {
            let plural = if free == 1 { "" } else { "s" };
            Err(format!("{free} GPU{plural} free < {gpus} requested"))
        } else {
            Ok(f64::from(free - gpus) / f64::from(count))
        }
    }
}
