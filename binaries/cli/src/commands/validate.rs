//! `adora validate`: check a dataflow file and report every problem at once.

use std::{path::PathBuf, process::ExitCode};

use adora_core::Descriptor;

use super::common::EXIT_INVALID;

/// Check a dataflow file; print every problem with file, line, node and field.
///
/// Type problems (`output_types`/`input_types`) are warnings unless the dataflow sets
/// `strict_types: true` or `--strict-types` is given.
///
/// Example: `adora validate examples/rust-dataflow/dataflow.yml`
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  adora validate examples/rust-dataflow/dataflow.yml")]
pub struct Args {
    /// The dataflow file.
    dataflow: PathBuf,
    /// Treat warnings (type problems) as errors: exit with status 2 when there are any.
    #[arg(long)]
    strict_types: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (d, warnings) = match Descriptor::read_with_warnings(&args.dataflow) {
        Ok(found) => found,
        Err(errors) => return Ok(super::common::report_invalid(&args.dataflow, &errors)),
    };
    let label = if args.strict_types {
        "error:"
    } else {
        "warning:"
    };
    for w in &warnings {
        eprintln!("{} {w}", crate::output::warning(label));
    }
    if args.strict_types && !warnings.is_empty() {
        let n = warnings.len();
        eprintln!(
            "{n} problem{} found in {} (--strict-types)",
            if n == 1 { "" } else { "s" },
            args.dataflow.display()
        );
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let n = warnings.len();
    let note = match n {
        0 => String::new(),
        1 => ", 1 warning".to_owned(),
        n => format!(", {n} warnings"),
    };
    println!(
        "{} {} is valid ({} node{}{note})",
        crate::output::success("ok:"),
        args.dataflow.display(),
        d.nodes.len(),
        if d.nodes.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}
