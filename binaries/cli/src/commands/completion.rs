//! `adora completion SHELL`: prints a shell completion script generated from the command tree.

use std::process::ExitCode;

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

/// Prints the completion script of `command` (the whole `adora` command tree).
pub fn run(args: Args, mut command: clap::Command) -> ExitCode {
    clap_complete::generate(args.shell, &mut command, "adora", &mut std::io::stdout());
    ExitCode::SUCCESS
}
