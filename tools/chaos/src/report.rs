//! The soak's printed figures and verdict.

use std::{collections::BTreeMap, path::Path, time::Duration};

use crate::{
    faults::ALL,
    soak::{Config, Outcome},
};

/// What the run is about to do.
pub fn header(config: &Config) {
    let kinds: Vec<&str> = config.kinds.iter().map(|k| k.name()).collect();
    let off: Vec<&str> = ALL
        .iter()
        .filter(|k| !config.kinds.contains(k))
        .map(|k| k.name())
        .collect();
    println!(
        "adora-chaos: seed {}, duration {}, faults {}{}",
        config.seed,
        humantime::format_duration(config.duration),
        kinds.join(","),
        match off.is_empty() {
            true => String::new(),
            false => format!(" (not injected: {})", off.join(",")),
        }
    );
    println!(
        "invariant: every node runs and the chain delivers again within {} of each heal",
        humantime::format_duration(config.recover_within)
    );
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Prints the figures and the verdict.
pub fn print(config: &Config, outcome: &anyhow::Result<Outcome>, run_dir: &Path) {
    let seed = config.seed;
    let o = match outcome {
        Ok(o) => o,
        Err(e) => {
            println!("adora-chaos: FAILED: the soak could not run: {e:#}");
            println!(
                "  reproduce with --seed {seed}; records and logs in {}",
                run_dir.display()
            );
            return;
        }
    };
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &o.faults {
        *by_kind.entry(f.kind.name()).or_default() += 1;
    }
    let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("faults injected: {} ({})", o.faults.len(), kinds.join(", "));
    let mut times: Vec<Duration> = o.faults.iter().filter_map(|f| f.recovery).collect();
    times.sort();
    match (times.get(times.len() / 2), times.last()) {
        (Some(p50), Some(max)) => println!(
            "recoveries: {} of {}, p50 {}, max {}",
            times.len(),
            o.faults.len(),
            secs(*p50),
            secs(*max)
        ),
        _ => println!("recoveries: 0 of {}", o.faults.len()),
    }
    for kind in by_kind.keys() {
        let mut t: Vec<Duration> = o
            .faults
            .iter()
            .filter(|f| f.kind.name() == *kind)
            .filter_map(|f| f.recovery)
            .collect();
        t.sort();
        if let (Some(p50), Some(max)) = (t.get(t.len() / 2), t.last()) {
            println!("  {kind:<16} p50 {} max {}", secs(*p50), secs(*max));
        }
    }
    figures(config, o);
    if o.violations.is_empty() {
        println!("teardown: no orphan process, no leaked shared-memory segment");
        println!("adora-chaos: PASSED (seed {seed})");
        return;
    }
    println!("adora-chaos: FAILED, {} violation(s):", o.violations.len());
    for v in o.violations.iter().take(30) {
        println!("  - {v}");
    }
    if o.violations.len() > 30 {
        println!("  ... and {} more", o.violations.len() - 30);
    }
    println!(
        "  reproduce with --seed {seed}; records and logs in {}",
        run_dir.display()
    );
}

/// Messages, instances and the coordinator's resources.
fn figures(config: &Config, o: &Outcome) {
    let a = &o.accounting;
    println!(
        "messages: sent {}, received {}, counted-dropped {} (between machines {}; the sinks saw {}), \
         lost in fault windows {}, missing outside them {}, unaccounted {}",
        a.sent,
        a.received,
        o.counted_drops.0,
        o.counted_drops.1,
        o.sink_seen_drops,
        a.lost_in_faults,
        a.missing_outside_faults,
        o.unaccounted()
    );
    let by: Vec<String> = a
        .lost_by_fault
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if !by.is_empty() {
        println!("  lost in fault windows by fault: {}", by.join(", "));
    }
    println!(
        "instances: {} source, {} sink; most live processes of one node at once: {}",
        a.source_instances,
        a.sink_instances,
        o.seen.max_instances.values().max().copied().unwrap_or(0)
    );
    println!(
        "coordinator: max RSS {} MiB, max open files {} ({} samples; last process {} -> {} MiB); limits {} MiB, {} files",
        o.seen.max_rss_bytes >> 20,
        o.seen.max_fds,
        o.seen.coordinator_samples,
        o.seen.rss_first_last.0 >> 20,
        o.seen.rss_first_last.1 >> 20,
        config.limits.rss_bytes >> 20,
        config.limits.fds
    );
}
