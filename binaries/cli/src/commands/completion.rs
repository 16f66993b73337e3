//! `adora completion SHELL`: prints a shell completion script generated from the command tree.

use std::process::ExitCode;

use clap::CommandFactory;

/// Print a shell completion script to stdout.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  adora completion bash > ~/.local/share/bash-completion/completions/adora
  adora completion zsh > ~/.zfunc/_adora      # with `fpath+=~/.zfunc` before compinit
  adora completion fish > ~/.config/fish/completions/adora.fish")]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub fn run(args: Args) -> ExitCode {
    let mut command = super::Cli::command();
    clap_complete::generate(args.shell, &mut command, "adora", &mut std::io::stdout());
    ExitCode::SUCCESS
}
