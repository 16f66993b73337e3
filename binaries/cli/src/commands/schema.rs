//! `adora schema`: print the JSON Schema of the dataflow format, for editors.

use std::process::ExitCode;

/// Print the JSON Schema of `dataflow.yml` (generated from Adora's descriptor types).
///
/// Save it and point your editor at it, e.g. with the YAML language server:
/// `# yaml-language-server: $schema=./adora-dataflow.schema.json` as the first line.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  adora schema > adora-dataflow.schema.json\n  # first line of dataflow.yml:\n  # yaml-language-server: $schema=./adora-dataflow.schema.json"
)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    print!("{}", adora_core::schema::dataflow_schema_json());
    ExitCode::SUCCESS
}
