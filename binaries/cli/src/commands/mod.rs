//! Subcommands, one module each.

mod build;
mod client;
mod cluster;
mod common;
mod completion;
mod coordinator;
mod coordinator_tls;
mod daemon;
mod daemon_identity;
mod distribute;
mod graph;
mod list;
mod local_build;
mod logs;
mod node;
mod node_move;
mod record;
mod recording;
mod replay;
mod replay_node;
mod restart;
mod router;
mod run;
mod schema;
mod start;
mod status;
mod stop;
mod tap_stream;
mod top;
mod topic;
mod up;
mod validate;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Adora: run dataflows of node processes on one machine or a fleet.
#[derive(Debug, Parser)]
#[command(name = "adora", version = adora_message::ADORA_VERSION, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More log output from adora itself (-v info, -vv debug; RUST_LOG overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(run::Args),
    Build(build::Args),
    Validate(validate::Args),
    Graph(graph::Args),
    Schema(schema::Args),
    Up(up::UpArgs),
    Down(up::DownArgs),
    Start(start::Args),
    Stop(stop::Args),
    Restart(restart::Args),
    List(list::Args),
    Logs(logs::Args),
    Status(status::Args),
    Top(top::Args),
    Node(node::Args),
    Record(record::Args),
    Recording(recording::Args),
    Replay(replay::Args),
    /// The player of `adora replay` (a node; started by `adora replay`, not by hand).
    #[command(hide = true)]
    ReplayNode(replay_node::Args),
    Topic(topic::Args),
    Coordinator(coordinator::Args),
    Daemon(daemon::Args),
    Router(router::Args),
    Cluster(cluster::Args),
    Completion(completion::Args),
}

impl Cli {
    /// The verbosity to log at: services (`coordinator`, `daemon`) log at info level by default
    /// (`daemon --quiet`: warnings only); everything else at warning level unless `-v`.
    pub fn verbosity(&self) -> u8 {
        match &self.command {
            Command::Coordinator(_) | Command::Router(_) => self.verbose.max(1),
            Command::Daemon(args) if !args.quiet => self.verbose.max(1),
            _ => self.verbose,
        }
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(args).await,
        Command::Build(args) => build::run(args).await,
        Command::Validate(args) => validate::run(args),
        Command::Graph(args) => graph::run(args),
        Command::Schema(args) => Ok(schema::run(args)),
        Command::Up(args) => up::up(args).await,
        Command::Down(args) => up::down(args).await,
        Command::Start(args) => start::run(args).await,
        Command::Stop(args) => stop::run(args).await,
        Command::Restart(args) => restart::run(args).await,
        Command::List(args) => list::run(args).await,
        Command::Logs(args) => logs::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Top(args) => top::run(args).await,
        Command::Node(args) => node::run(args).await,
        Command::Record(args) => record::run(args).await,
        Command::Recording(args) => recording::run(args),
        Command::Replay(args) => replay::run(args).await,
        Command::ReplayNode(args) => replay_node::run(args).await,
        Command::Topic(args) => topic::run(args).await,
        Command::Completion(args) => Ok(completion::run(args, Cli::command())),
        Command::Coordinator(args) => coordinator::run(args).await,
        Command::Daemon(args) => daemon::run(args).await,
        Command::Router(args) => router::run(args).await,
        Command::Cluster(args) => cluster::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every leaf subcommand (`adora run`, `adora cluster up`, ...) and its path.
    fn leaves(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        let subs: Vec<&clap::Command> = cmd
            .get_subcommands()
            .filter(|s| s.get_name() != "help" && !s.is_hide_set())
            .collect();
        if subs.is_empty() {
            out.push((path.clone(), cmd.clone()));
        }
        for sub in subs {
            leaves(sub, format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_subcommand_help_has_an_example() {
        let mut all = Vec::new();
        leaves(&super::Cli::command(), "adora".into(), &mut all);
        assert!(all.len() > 15, "{} leaves", all.len());
        let missing: Vec<&str> = all
            .iter_mut()
            .filter_map(|(path, cmd)| {
                let help = cmd.render_long_help().to_string();
                (!help.contains("Example")).then_some(path.as_str())
            })
            .collect();
        assert!(missing.is_empty(), "no example in --help of: {missing:?}");
    }

    #[test]
    fn the_cli_reference_covers_every_subcommand() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../guide/src/cli-reference.md"
        );
        let reference = std::fs::read_to_string(path).expect("guide/src/cli-reference.md");
        let mut all = Vec::new();
        leaves(&super::Cli::command(), "adora".into(), &mut all);
        let missing: Vec<&str> = all
            .iter()
            .map(|(path, _)| path.as_str())
            .filter(|path| !reference.contains(&format!("# `{path}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "not in the CLI reference (run scripts/cli-reference.py): {missing:?}"
        );
    }

    #[test]
    fn the_command_tree_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
