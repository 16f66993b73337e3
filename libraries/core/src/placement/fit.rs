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
use crate::resources::{format_bytes, Reserved, Resources};

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
    let running = &daemon.reserved;
    let mut headroom = f64::INFINITY;
    let mut problems = Vec::new();
    if let Some(cpus) = requests.cpus() {
        match (figures.cpus, figures.cpu_percent) {
            (Some(cores), Some(percent)) if cores > 0 => {
                let cores = f64::from(cores);
                let max = daemon
                    .limits
                    .max_cpu_percent
                    .map_or(100.0, |m| f64::from(m).min(100.0));
                let measured = cores * percent.clamp(0.0, 100.0) / 100.0;
                let used = measured.max(running.cpus) + placed.cpus;
                let free = cores * max / 100.0 - used;
                if free + CPU_EPSILON < cpus {
                    problems.push(format!(
                        "cpu {:.1} cores free < {} requested",
                        free.max(0.0),
                        cpus
                    ));
                } else {
                    headroom = headroom.min((free - cpus) / cores);
                }
            }
            _ => problems.push("cpu cores or use not reported".into()),
        }
    }
    if let Some(memory) = requests.memory() {
        match (figures.memory_total, figures.memory_available) {
            (Some(total), Some(available)) if total > 0 => {
                let max = daemon
                    .limits
                    .max_memory_percent
                    .map_or(100, |m| u64::from(m.min(100)));
                let capacity = (u128::from(total) * u128::from(max) / 100) as u64;
                let used = total
                    .saturating_sub(available)
                    .max(running.memory)
                    .saturating_add(placed.memory);
                let free = capacity.saturating_sub(used);
                if free < memory {
                    problems.push(format!(
                        "memory {} free < {} requested",
                        format_bytes(free),
                        format_bytes(memory)
                    ));
                } else {
                    headroom = headroom.min((free - memory) as f64 / total as f64);
                }
            }
            _ => problems.push("memory not reported".into()),
        }
    }
    if let Some(gpus) = requests.gpus() {
        match figures.gpus {
            Some(count) => {
                let free = count.saturating_sub(running.gpus.saturating_add(placed.gpus));
                if free < gpus {
                    let plural = if free == 1 { "" } else { "s" };
                    problems.push(format!("{free} GPU{plural} free < {gpus} requested"));
                } else {
                    headroom = headroom.min(f64::from(free - gpus) / f64::from(count));
                }
            }
            None => problems.push("no GPUs reported (no working nvidia-smi)".into()),
        }
    }
    if problems.is_empty() {
        Ok(headroom)
    } else {
        Err(problems.join(", "))
    }
}
