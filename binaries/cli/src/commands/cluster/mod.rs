//! `adora cluster up|status|down|install|uninstall|upgrade|restart`: a whole fleet from a
//! `cluster.yml`, over SSH.
//!
//! `up` starts the coordinator on this machine and, concurrently on every machine, a detached
//! `adora daemon` (see [`machine`] for exactly what runs there); `status`, `down` and `restart`
//! only talk to the coordinator, which knows every daemon. `install`/`uninstall` manage systemd
//! units ([`install`]); `upgrade` replaces the binary machine by machine ([`upgrade`]).

mod down;
mod install;
mod machine;
mod restart;
mod status;
mod up;
mod upgrade;

use std::{path::Path, process::ExitCode};

use adora_core::cluster::{ClusterConfig, Machine};

use clap::Subcommand;

/// Manage a fleet of machines described by a `cluster.yml` (coordinator here, daemons over SSH).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora cluster up cluster.yml\n  adora cluster status\n  \
adora cluster install cluster.yml\n  adora cluster upgrade cluster.yml --binary target/release/adora\n  \
adora cluster restart demo\n  adora cluster down\n\nSee the guide's \"Clusters\" chapter for the cluster.yml reference."
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Up(up::Args),
    Status(status::Args),
    Down(down::Args),
    Install(install::InstallArgs),
    Uninstall(install::UninstallArgs),
    Upgrade(upgrade::Args),
    Restart(restart::Args),
}

/// Runs a `cluster` subcommand.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Up(args) => up::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Down(args) => down::run(args).await,
        Command::Install(args) => install::install(args).await,
        Command::Uninstall(args) => install::uninstall(args).await,
        Command::Upgrade(args) => upgrade::run(args).await,
        Command::Restart(args) => restart::run(args).await,
    }
}

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
        ExitCode::from(crate::commands::EXIT_INVALID)
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
pub(super) fn failed_machines<'a>(
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use adora_core::cluster::ClusterConfig;

    #[test]
    fn cluster_examples_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster-examples");
        for example in ["edge-ai", "robot-fleet", "ci-pipeline"] {
            let file = root.join(example).join("cluster.yml");
            if let Err(errors) = ClusterConfig::read(&file) {
                panic!("{}: {errors:?}", file.display());
            }
        }
    }
}
