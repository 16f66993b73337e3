//! `adora cluster up|status|down|install|uninstall|upgrade|restart`: a whole fleet from a
//! `cluster.yml`, over SSH; `join-code` and `revoke`: who may join it ([`join_code`],
//! [`revoke`]).
//!
//! `up` starts the coordinator on this machine and, concurrently on every machine, a detached
//! `adora daemon` (see [`machine`] for exactly what runs there); `status`, `down` and `restart`
//! only talk to the coordinator, which knows every daemon. `install`/`uninstall` manage systemd
//! units ([`install`]); `upgrade` replaces the binary machine by machine ([`upgrade`]).

mod common;
mod down;
mod drain;
mod install;
pub(crate) mod join_code;
mod links;
mod machine;
mod maintenance;
mod restart;
mod revoke;
mod routers;
mod status;
mod up;
mod upgrade;

use std::process::ExitCode;

use clap::Subcommand;

/// Manage a fleet of machines described by a `cluster.yml` (coordinator here, daemons over SSH).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora cluster up cluster.yml\n  adora cluster status\n  \
adora cluster install cluster.yml\n  adora cluster upgrade cluster.yml --binary target/release/adora\n  \
adora cluster restart demo\n  adora cluster down\n  \
CODE=$(adora cluster join-code create --machine robot-1)\n  adora cluster revoke robot-1\n  \
adora cluster cordon robot-1 --reason \"battery swap\"\n  adora cluster drain robot-1 --deadline 10m\n  \
adora cluster lock robot-1 --reason calibrating\n\nSee the guide's \"Clusters\" chapter for the cluster.yml reference."
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
    JoinCode(join_code::Args),
    Revoke(revoke::Args),
    Cordon(maintenance::CordonArgs),
    Drain(drain::Args),
    Uncordon(maintenance::UncordonArgs),
    Lock(maintenance::LockArgs),
    Unlock(maintenance::UnlockArgs),
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
        Command::JoinCode(args) => join_code::run(args).await,
        Command::Revoke(args) => revoke::run(args).await,
        Command::Cordon(args) => maintenance::cordon(args).await,
        Command::Drain(args) => drain::run(args).await,
        Command::Uncordon(args) => maintenance::uncordon(args).await,
        Command::Lock(args) => maintenance::lock(args).await,
        Command::Unlock(args) => maintenance::unlock(args).await,
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
