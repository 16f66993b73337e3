//! `adora cluster restart NAME|UUID`: restart a running dataflow of the cluster from the
//! descriptor the coordinator stored (same request as `adora restart`).

use std::process::ExitCode;

use crate::commands::{client::ClientArgs, restart::restart};

/// Restart a running dataflow from its stored descriptor; prints `dataflow restarted: OLD -> NEW`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  adora cluster restart demo\n  \
adora cluster restart 0b5c6a2e-6c43-4a8e-9f5e-3f1f4f2d2b11\n\n\
The dataflow is stopped gracefully and started again under the same name with a new uuid, placed \
anew on the daemons connected now.")]
pub struct Args {
    /// Name or uuid of the dataflow.
    dataflow: String,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (old, new) = restart(&args.client, &args.dataflow).await?;
    println!("dataflow restarted: {old} -> {new}");
    Ok(ExitCode::SUCCESS)
}
