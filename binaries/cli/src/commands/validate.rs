//! `adora validate`: check a dataflow file and report every problem at once.

use std::{path::PathBuf, process::ExitCode};

/// Check a dataflow file; print every problem with file, line, node and field.
///
/// Example: `adora validate examples/rust-dataflow/dataflow.yml`
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  adora validate examples/rust-dataflow/dataflow.yml")]
pub struct Args {
    /// The dataflow file.
    dataflow: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match super::common::load_descriptor(&args.dataflow) {
        Ok(d) => {
            println!(
                "{} {} is valid ({} node{})",
                crate::output::success("ok:"),
                args.dataflow.display(),
                d.nodes.len(),
                if d.nodes.len() == 1 { "" } else { "s" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}
