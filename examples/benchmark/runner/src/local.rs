//! More same-machine placements: `fan-out` (one sender, eight sinks or `--fan-out-sinks`; each size's row is the
//! slowest sink's), `daemon-path` (the same-daemon dataflow with `ADORA_LOCAL_LANES=0`: every
//! message through the daemon, as before lanes existed) and `spin` (`poll: spin` on the sink's
//! inputs).

use std::path::{Path, PathBuf};

use anyhow::Context;
use benchmark_common::{Plan, Report};

use crate::{adora_run_command, run_command, sibling};

/// The fan-out dataflow (sender → `sinks` sinks, with the binaries next to this one), written
/// into `dir`.
pub fn fan_out_dataflow(dir: &Path, sinks: usize) -> anyhow::Result<PathBuf> {
    let bin = sibling("adora")?
        .parent()
        .context("this binary has a directory")?
        .to_owned();
    let mut yaml = format!(
        "nodes:\n  - id: sender\n    path: {}\n    outputs: [data, control]\n",
        bin.join("adora-bench-sender").display()
    );
    for i in 0..sinks {
        yaml += &format!(
            "  - id: sink{i}\n    path: {}\n    inputs:\n      data: {{ source: sender/data, queue_size: 1000 }}\n      control: {{ source: sender/control, queue_size: 100 }}\n",
            bin.join("adora-bench-sink").display()
        );
    }
    let path = dir.join("fan-out.yml");
    std::fs::write(&path, yaml)?;
    Ok(path)
}

/// The same-daemon dataflow with `poll: spin` on the sink's inputs, written into `dir`.
pub fn spin_dataflow(dir: &Path) -> anyhow::Result<PathBuf> {
    let plain = std::fs::read_to_string(crate::same_daemon_dataflow(dir)?)?;
    let spin = plain.replace("queue_size: 1000 }", "queue_size: 1000, poll: spin }");
    let spin = spin.replace("queue_size: 100 }", "queue_size: 100, poll: spin }");
    anyhow::ensure!(
        spin.matches("poll: spin").count() == 2,
        "unexpected benchmark dataflow"
    );
    let path = dir.join("spin.yml");
    std::fs::write(&path, spin)?;
    Ok(path)
}

/// Runs `dataflow` with `adora run` (`lanes: false`: `ADORA_LOCAL_LANES=0`); with several sinks,
/// each size and phase keeps the slowest sink's report.
pub fn run(adora: &Path, dataflow: &Path, plan: &Plan, lanes: bool) -> anyhow::Result<Vec<Report>> {
    let mut command = adora_run_command(adora, dataflow, plan);
    if !lanes {
        command.env("ADORA_LOCAL_LANES", "0");
    }
    Ok(slowest(run_command(adora, command)?))
}

/// Per size and phase, the report of the slowest receiver (highest p50, fewest messages/s).
fn slowest(reports: Vec<Report>) -> Vec<Report> {
    let mut kept: Vec<Report> = Vec::new();
    for r in reports {
        let same = kept
            .iter_mut()
            .find(|k| k.size == r.size && k.phase == r.phase);
        match same {
            None => kept.push(r),
            Some(k) if slower(&r, k) => *k = r,
            Some(_) => {}
        }
    }
    kept
}

fn slower(a: &Report, b: &Report) -> bool {
    match (&a.latency_ns, &b.latency_ns, a.msgs_per_s, b.msgs_per_s) {
        (Some(x), Some(y), _, _) => x.p50 > y.p50,
        (_, _, Some(x), Some(y)) => x < y,
        _ => false,
    }
}
