//! `adora cluster upgrade cluster.yml [--binary PATH] [--max-parallel N] [--canary N]
//! [--min-healthy-time D] [--healthy-deadline D] [--no-auto-revert] [--lock-timeout D]
//! [--on-lock-timeout skip|fail] [--force] [--json]`: a rolling upgrade with a health gate,
//! automatic rollback, and respect for update locks (machines are claimed through [`claims`]).
//!
//! The rollout itself is [`adora_cluster::rollout`] (the order, the steps, the gate, the
//! rollback); this file reads the binary, checks the coordinator answers, prints the progress and
//! the per-machine table (or `--json`), and maps the result to the exit code. The remote side —
//! scripts over SSH, with `sudo -n` where the SSH user cannot write, and the coordinator's view
//! of a machine — is [`ssh_host`].
//!
//! Nodes on the machine being upgraded die with their daemon (parent-death signal); the
//! coordinator's auto-recovery re-spawns them once the daemon is back, which the gate waits for.
//! Nodes elsewhere keep running.

mod claims;
mod ssh_host;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use adora_cluster::{
    rollout::{self, MachineReport, Outcome, Policy, Progress},
    upgrade,
};
use anyhow::Context;
use serde::Serialize;

use super::common::load_cluster;
use crate::commands::client::{Client, ClientArgs};
use ssh_host::SshFleet;

/// Roll a new adora binary over the machines of a cluster.yml, health-gated, with rollback.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora cluster upgrade cluster.yml --binary target/release/adora\n  \
adora cluster upgrade cluster.yml --binary ./adora-aarch64 --max-parallel 3 --json > upgrade.json\n\n\
Every machine is reached over SSH first; an unreachable one stops the upgrade before anything \
changes. Then per machine: copy the binary next to the installed adora (install_dir, else the one \
on PATH, else ~/.local/bin; through `sudo -n` when the SSH user cannot write there), verify its \
SHA-256 there, check its `--version`, keep the old binary as adora.prev, swap the new one in with \
an atomic rename, restart the daemon (its systemd unit after `cluster install`, else the detached \
daemon of `cluster up`) and wait for the health gate: the daemon reconnected with the new version \
and every node that ran on the machine runs again, without restarting, for --min-healthy-time. \
A machine not healthy by --healthy-deadline is rolled back (adora.prev restored, daemon restarted, \
healthy again) and the upgrade stops: exit code 1, the machines not reached are untouched.\n\n\
Before its first step a machine is claimed at the coordinator: one maintenance operation at a \
time per machine (a second gets \"machine x is being upgraded by another operation\"), and while \
the machine has update locks (nodes' `update_lock`, `adora cluster lock`) the upgrade waits, \
printing who holds them and why, until --lock-timeout; then --on-lock-timeout skip leaves it \
untouched and goes on (exit code 1), fail stops there. --force ignores the locks."
)]
pub struct Args {
    /// The cluster file.
    cluster: PathBuf,
    /// The new adora binary (built for the machines' architecture) [default: this adora].
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Machines upgraded at the same time, after the canaries.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    max_parallel: u16,
    /// The first N machines go one at a time and must pass the gate before the rest go.
    #[arg(long, value_name = "N", default_value_t = 1)]
    canary: u16,
    /// How long a machine must stay healthy (no node restarting) to pass its gate.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "10s")]
    min_healthy_time: Duration,
    /// How long after its restart a machine has to pass its gate before it is rolled back.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "2m")]
    healthy_deadline: Duration,
    /// Leave a machine that failed its gate on the new binary instead of rolling it back.
    #[arg(long)]
    no_auto_revert: bool,
    /// How long to wait for a machine's update locks (held by nodes or `cluster lock`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "10m")]
    lock_timeout: Duration,
    /// What a machine still locked at --lock-timeout does: `skip` leaves it untouched and goes
    /// on with the others (exit code 1), `fail` stops the upgrade there.
    #[arg(long, value_enum, value_name = "ACTION", default_value = "skip")]
    on_lock_timeout: LockTimeoutAction,
    /// Upgrade machines even while they hold update locks.
    #[arg(long)]
    force: bool,
    /// Print the per-machine outcome as JSON on stdout (progress goes to stderr).
    #[arg(long)]
    json: bool,
    /// An ssh_config file for every SSH connection (`ssh -F FILE`).
    #[arg(long, value_name = "FILE")]
    ssh_config: Option<PathBuf>,
}

/// `--on-lock-timeout`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LockTimeoutAction {
    Skip,
    Fail,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    /// The new binary's SHA-256.
    sha256: &'a str,
    /// Whether every machine was upgraded.
    success: bool,
    /// One entry per machine, in cluster.yml order.
    machines: &'a [MachineReport],
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cluster = match load_cluster(&args.cluster) {
        Ok(cluster) => cluster,
        Err(code) => return Ok(code),
    };
    let binary = match &args.binary {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("cannot find this adora binary")?,
    };
    let (bytes, sha256) = read_binary(&binary).await?;
    let client = ClientArgs::at(&cluster.coordinator.addr, cluster.coordinator.port);
    // Fail before touching any machine when the coordinator is not there to gate the upgrade.
    Client::connect(&client).await.context(
        "the coordinator of cluster.yml does not answer: upgrade a running cluster (`adora cluster up` first)",
    )?;
    let policy = Policy {
        max_parallel: usize::from(args.max_parallel),
        canary: usize::from(args.canary),
        min_healthy_time: args.min_healthy_time,
        healthy_deadline: args.healthy_deadline,
        auto_revert: !args.no_auto_revert,
        lock_timeout: args.lock_timeout,
        on_lock_timeout: match args.on_lock_timeout {
            LockTimeoutAction::Skip => rollout::OnLockTimeout::Skip,
            LockTimeoutAction::Fail => rollout::OnLockTimeout::Fail,
        },
        force: args.force,
    };
    let n = cluster.machines.len();
    eprintln!(
        "Rolling upgrade of {n} machine{} to {} ({:.1} MB, sha256 {}): {} canary, then {} at a \
         time; healthy for {:?} within {:?}.",
        if n == 1 { "" } else { "s" },
        binary.display(),
        bytes.len() as f64 / 1e6,
        &sha256[..12],
        policy.canary,
        policy.max_parallel,
        policy.min_healthy_time,
        policy.healthy_deadline,
    );
    let fleet = SshFleet {
        cluster: cluster.clone(),
        client,
        bytes,
        sha256: sha256.clone(),
        ssh_config: args.ssh_config,
        claims: claims::Claims::new(adora_message::maintenance::Operation::Upgrade),
    };
    let reports = rollout::run(&fleet, &cluster.machines, &policy, &print_progress).await;
    let success = reports.iter().all(|r| r.outcome == Outcome::Upgraded);
    if args.json {
        let json = JsonReport {
            sha256: &sha256,
            success,
            machines: &reports,
        };
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_table(&reports);
    }
    Ok(if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The new binary's bytes and SHA-256 (hex), hashed off the async runtime.
async fn read_binary(binary: &Path) -> anyhow::Result<(Vec<u8>, String)> {
    let bytes = tokio::fs::read(binary)
        .await
        .with_context(|| format!("cannot read {}", binary.display()))?;
    let hash_path = binary.to_owned();
    let sha256 = tokio::task::spawn_blocking(move || upgrade::sha256_file(&hash_path))
        .await
        .context("hashing task panicked")?
        .with_context(|| format!("cannot hash {}", binary.display()))?;
    Ok((bytes, sha256))
}

/// One line per step on stderr (stdout stays for the table or the JSON).
fn print_progress(p: Progress<'_>) {
    match p {
        Progress::Step {
            id,
            step,
            elapsed,
            error,
        } => {
            let secs = elapsed.as_secs_f64();
            match error {
                None => eprintln!("  {id}: {step}... OK ({secs:.1}s)"),
                Some(e) => eprintln!("  {id}: {step}... FAILED ({secs:.1}s): {}", e.reason),
            }
        }
        Progress::Waiting { id, why } => {
            eprintln!("  {id}: waiting for its update locks: {why}")
        }
        Progress::Done(report) => eprintln!(
            "{}: {} ({:.1}s)",
            report.id,
            outcome_text(report.outcome),
            report.seconds
        ),
    }
}

/// The words of an outcome in the table.
fn outcome_text(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Upgraded => "upgraded",
        Outcome::RolledBack => "rolled back",
        Outcome::RollbackFailed => "ROLLBACK FAILED",
        Outcome::NotReverted => "failed, left on the new binary",
        Outcome::Failed => "failed, unchanged",
        Outcome::Unreachable => "unreachable",
        Outcome::Untouched => "untouched",
        Outcome::Locked => "skipped: locked",
    }
}

/// The per-machine table, then `N/M upgraded.` and every failure with its hint.
fn print_table(reports: &[MachineReport]) {
    let width = reports.iter().map(|r| r.id.len()).max().unwrap_or(0);
    for r in reports {
        let version = r.version.as_deref().unwrap_or("-");
        println!(
            "{:width$}  {:<30}  adora {version:<24}  {:.1}s",
            r.id,
            outcome_text(r.outcome),
            r.seconds
        );
    }
    let upgraded = reports
        .iter()
        .filter(|r| r.outcome == Outcome::Upgraded)
        .count();
    println!("{upgraded}/{} upgraded.", reports.len());
    for r in reports.iter().filter(|r| r.error.is_some()) {
        println!(
            "{} ({}): {}",
            r.id,
            r.destination,
            r.error.as_deref().unwrap_or_default()
        );
        if let Some(hint) = r.hint.as_deref().filter(|h| !h.is_empty()) {
            println!("  hint: {hint}");
        }
    }
}
