//! `adora-chaos`: a chaos soak on namespaced test hosts. Three daemons and a coordinator run a
//! sender → relay → sink chain across machines plus an idle node on each, every node with a
//! restart policy; for `--duration` the soak injects random faults at random times (kill -9 of
//! the coordinator, of a daemon, of a node; a network cut of one host; `adora stop` + `start`),
//! one at a time, waits for each recovery, and checks its invariants continuously and at the
//! end. It prints figures and exits non-zero, naming the invariant and the seed, when one broke.
//!
//! ```text
//! adora-chaos [--duration 2m] [--seed N] [--faults KIND,...] [--recover-within 60s] ...
//! ```
//!
//! Needs root (network namespaces) and the `adora` and `adora-test-node` binaries next to it
//! (`cargo build -p adora-cli -p adora-test-node -p adora-chaos`). See the guide, "Resilience".

mod cluster;
mod faults;
mod monitor;
mod records;
mod report;
mod soak;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;

use crate::faults::{FaultKind, ALL};

/// One `--faults` item: a kind, or `all`.
#[derive(Debug, Clone)]
enum FaultChoice {
    All,
    Kind(FaultKind),
}

impl std::str::FromStr for FaultChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Self::All),
            kind => kind.parse().map(Self::Kind),
        }
    }
}

/// Exit status of a run that could not create test hosts (not root, tools missing).
const EXIT_SKIPPED: u8 = 3;

/// Chaos soak: random faults on three test hosts while invariants are checked.
#[derive(Debug, Parser)]
#[command(name = "adora-chaos")]
struct Args {
    /// How long faults are injected (then the soak stops the dataflow and checks the teardown).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
    duration: Duration,
    /// Seed of the fault schedule (kinds, targets, delays); a run prints its seed [default: random].
    #[arg(long)]
    seed: Option<u64>,
    /// The kinds of fault to inject, comma separated: coordinator-kill, daemon-kill, node-kill,
    /// cut, stop-start, or `all`.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    faults: Vec<FaultChoice>,
    /// Every node must run and the chain deliver again within this after a fault healed.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    recover_within: Duration,
    /// Shortest quiet time between a recovery and the next fault.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    min_gap: Duration,
    /// Longest quiet time between a recovery and the next fault.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "8s")]
    max_gap: Duration,
    /// The coordinator's RSS must stay below this many MiB.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65536))]
    max_coordinator_rss_mib: u64,
    /// The coordinator must keep fewer open files than this.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_coordinator_fds: u64,
    /// The source's tick in milliseconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    tick_ms: u64,
    /// Bytes per message (at least 16; from 4096 on they travel through shared memory).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u64).range(16..=(64 << 20)))]
    payload_bytes: u64,
    /// Zenoh between the daemons over TLS instead of plain TCP (see the guide: a known issue
    /// makes the cross-machine stream stall after some cuts with TLS under load).
    #[arg(long)]
    zenoh_tls: bool,
    /// Directory with `adora` and `adora-test-node` [default: the directory of this program].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Keep the run directory (records, logs) after a passing run too.
    #[arg(long)]
    keep: bool,
    /// Print the first N faults of the seed's schedule (gaps, kinds, targets, delays) and exit.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    plan: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("adora-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.min_gap > args.max_gap {
        anyhow::bail!("--min-gap must not be longer than --max-gap");
    }
    if args.faults.is_empty() {
        anyhow::bail!("--faults names no fault kind");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let bin_dir = match args.bin_dir.clone() {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .ok_or_else(|| anyhow::anyhow!("this program has no directory"))?,
    };
    for bin in ["adora", "adora-test-node"] {
        if !bin_dir.join(bin).is_file() {
            anyhow::bail!(
                "{} is missing: build it (`cargo build -p adora-cli -p adora-test-node`) or pass --bin-dir",
                bin_dir.join(bin).display()
            );
        }
    }
    let mut kinds: Vec<FaultKind> = args
        .faults
        .iter()
        .flat_map(|c| match c {
            FaultChoice::All => ALL.to_vec(),
            FaultChoice::Kind(k) => vec![*k],
        })
        .collect();
    kinds.sort();
    kinds.dedup();
    if let Some(n) = args.plan {
        let gaps = (
            args.min_gap.as_millis() as u64,
            args.max_gap.as_millis() as u64,
        );
        let mut schedule = faults::Schedule::new(seed, &kinds, gaps);
        println!("seed {seed}:");
        for i in 1..=n {
            let gap = schedule.gap();
            println!("{i:>4}. after {gap:?}: {}", schedule.fault());
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Report the seed even when a fixture panics.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        hook(info);
        eprintln!("adora-chaos: FAILED (panic) — reproduce with --seed {seed}");
    }));
    let run_dir = std::env::temp_dir().join(format!("adora-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let config = config(&args, seed, kinds, bin_dir, run_dir.clone());
    report::header(&config);
    let hosts = match adora_test_support::hosts::TestHosts::create("chaos_soak", 3) {
        Ok(hosts) => hosts,
        Err(skip) => {
            skip.print();
            return Ok(ExitCode::from(EXIT_SKIPPED));
        }
    };
    let outcome = soak::run(hosts, &config);
    let passed = matches!(&outcome, Ok(o) if o.violations.is_empty());
    report::print(&config, &outcome, &run_dir);
    if passed && !args.keep {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The soak's configuration from the command line.
fn config(
    args: &Args,
    seed: u64,
    kinds: Vec<FaultKind>,
    bin_dir: PathBuf,
    run_dir: PathBuf,
) -> soak::Config {
    soak::Config {
        duration: args.duration,
        seed,
        kinds,
        recover_within: args.recover_within,
        gap_ms: (
            args.min_gap.as_millis() as u64,
            args.max_gap.as_millis() as u64,
        ),
        limits: monitor::Limits {
            rss_bytes: args.max_coordinator_rss_mib << 20,
            fds: args.max_coordinator_fds as usize,
        },
        settings: cluster::Settings {
            bin_dir,
            run_dir,
            coordinator_args: vec!["--recovery-backoff".into(), "5s".into()],
            daemon_args: match args.zenoh_tls {
                true => vec![],
                false => vec!["--insecure-zenoh".into()],
            },
            payload_bytes: args.payload_bytes as usize,
            tick_ms: args.tick_ms,
            run_tag: format!("{}-{seed}", std::process::id()),
        },
    }
}
