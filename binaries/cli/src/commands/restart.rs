//! `adora restart`: stop a dataflow and start it again from its stored descriptor.

use std::{process::ExitCode, time::Duration};

use adora_message::{cli_to_coordinator::ControlRequest, coordinator_to_cli::ControlReply};
use anyhow::bail;
use uuid::Uuid;

use super::client::{Client, ClientArgs};

/// Longest `restart` waits for the stop and the new start.
const RESTART_TIMEOUT: Duration = Duration::from_secs(60);

/// Restart a dataflow (same name, new uuid); prints `old-uuid -> new-uuid`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  adora restart demo")]
pub struct Args {
    /// Name or uuid of the dataflow.
    dataflow: String,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (old, new) = restart(&args.client, &args.dataflow).await?;
    println!("{old} -> {new}");
    Ok(ExitCode::SUCCESS)
}

/// Restarts `dataflow` (name or uuid); returns its old and new uuid. Also `adora cluster restart`.
pub(crate) async fn restart(client: &ClientArgs, dataflow: &str) -> anyhow::Result<(Uuid, Uuid)> {
    let mut client = Client::connect(client).await?;
    let request = ControlRequest::Restart {
        dataflow: dataflow.to_owned(),
    };
    match tokio::time::timeout(RESTART_TIMEOUT, client.call_idempotent(request)).await {
        Err(_) => bail!("restart of `{dataflow}` did not complete within {RESTART_TIMEOUT:?}"),
        Ok(reply) => match reply? {
            ControlReply::Restarted { old, new, .. } => Ok((old, new)),
            other => bail!("unexpected reply {other:?}"),
        },
    }
}
