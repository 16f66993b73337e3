//! `adora graph`: print the dataflow as a Mermaid flowchart.

use std::{path::PathBuf, process::ExitCode};

/// Print the dataflow as a Mermaid flowchart (paste into any Mermaid renderer).
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  adora graph examples/rust-dataflow/dataflow.yml > graph.mmd")]
pub struct Args {
    /// The dataflow file.
    dataflow: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match super::common::load_descriptor(&args.dataflow) {
        Ok(d) => {
            print!("{}", adora_core::graph::mermaid(&d));
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}
