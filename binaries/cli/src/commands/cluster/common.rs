//! Helpers shared by the `adora cluster` subcommands: reading `cluster.yml` and reporting how
//! each machine fared. A leaf: it imports no cluster subcommand.

use std::{path::Path, process::ExitCode};

use adora_core::cluster::{ClusterConfig, Machine};

use crate::commands::common::EXIT_INVALID;

/// Reads and validates a cluster file, or prints every problem and returns the exit code.
pub(crate) fn load_cluster(path: &Path) -> Result<ClusterConfig, ExitCode> {
    ClusterConfig::read(path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{e}");
        }
        let n = errors.0.len();
        eprintln!(
            "{n} problem{} found in {}",
            if n == 1 { "" } else { "s" },
            path.display()
        );
        ExitCode::from(EXIT_INVALID)
    })
}

/// Prints `N/M <verb>` and the failed machines with reason and hint; exit code 1 on failure.
pub(crate) fn print_outcomes(
    machines: &[Machine],
    outcomes: &[Option<Outcome>],
    verb: &str,
) -> ExitCode {
    let failed = failed_machines(machines, outcomes);
    let n = machines.len();
    println!("{}/{n} {verb}.", n - failed.len());
    for (m, reason, hint) in &failed {
        println!("  {} ({}): {reason}", m.id, m.destination());
        if let Some(hint) = hint {
            println!("    hint: {hint}");
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// How one machine fared, for the per-machine outcome every cluster command ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The daemon was started (and, after the wait, registered).
    Started,
    /// The machine's daemon is a systemd service: it was started (or left running), not
    /// doubled by an ad-hoc daemon (and, after the wait, registered).
    ServiceStarted,
    /// A daemon with this machine id was already connected: left alone.
    AlreadyConnected,
    /// The operation (install, uninstall) succeeded.
    Done,
    /// `uninstall`: there was no unit to remove.
    NotInstalled,
    /// Something went wrong: what, and what to do about it.
    Failed {
        /// What went wrong.
        reason: String,
        /// What to try.
        hint: Option<String>,
    },
}

impl Outcome {
    /// A failure with a hint.
    pub(crate) fn failed(reason: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Failed {
            reason: reason.into(),
            hint: Some(hint.into()),
        }
    }
}

/// The machines whose outcome is a failure, with the reason and hint.
pub(crate) fn failed_machines<'a>(
    machines: &'a [Machine],
    outcomes: &'a [Option<Outcome>],
) -> Vec<(&'a Machine, &'a String, &'a Option<String>)> {
    machines
        .iter()
        .zip(outcomes)
        .filter_map(|(m, o)| match o {
            Some(Outcome::Failed { reason, hint }) => Some((m, reason, hint)),
            _ => None,
        })
        .collect()
}
