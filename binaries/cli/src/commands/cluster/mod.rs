//! `adora cluster up|status|down`: a whole fleet from a `cluster.yml`, over SSH.
//!
//! `up` starts the coordinator on this machine and, concurrently on every machine, a detached
//! `adora daemon` (see [`machine`] for exactly what runs there); `status` and `down` only talk to
//! the coordinator, which knows every daemon.

mod down;
mod machine;
mod status;
mod up;

use std::process::ExitCode;

use clap::Subcommand;

/// Manage a fleet of machines described by a `cluster.yml` (coordinator here, daemons over SSH).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora cluster up cluster.yml\n  adora cluster status\n  \
adora cluster down\n\nSee the guide's \"Clusters\" chapter for the cluster.yml reference."
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
}

/// Runs a `cluster` subcommand.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Up(args) => up::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Down(args) => down::run(args).await,
    }
}

/// How one machine fared, for the per-machine outcome every cluster command ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The daemon was started (and, after the wait, registered).
    Started,
    /// A daemon with this machine id was already connected: left alone.
    AlreadyConnected,
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
