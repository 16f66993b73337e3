//! `adora stop`: stop a running dataflow and wait until its nodes have ended.

use std::{process::ExitCode, time::Duration};

use adora_message::{cli_to_coordinator::ControlRequest, coordinator_to_cli::ControlReply};
use anyhow::bail;

use super::client::{Client, ClientArgs};

/// How long `stop` waits beyond the grace period for the daemons to report the end.
const STOP_MARGIN: Duration = Duration::from_secs(30);

/// Stop a running dataflow: Stop event, then SIGTERM after the grace period, then SIGKILL.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora stop demo\n  adora stop 4f1c2a7e-0a8c-4a51-9b7e-3d2f5c6e7a8b --grace 10s"
)]
pub struct Args {
    /// Name or uuid of the dataflow (see `adora list`).
    dataflow: String,
    /// Time nodes get after the Stop event before SIGTERM [default: the daemon's, 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    grace: Option<Duration>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut client = Client::connect(&args.client).await?;
    let wait = args.grace.unwrap_or(adora_daemon::DEFAULT_STOP_GRACE) + STOP_MARGIN;
    let request = ControlRequest::Stop {
        dataflow: args.dataflow.clone(),
        grace: args.grace,
    };
    let reply = tokio::time::timeout(wait, client.call_idempotent(request)).await;
    match reply {
        Err(_) => bail!(
            "dataflow `{}` did not stop within {wait:?}; is its daemon connected? (`adora status`)",
            args.dataflow
        ),
        Ok(reply) => match reply? {
            ControlReply::Stopped { id, outcome } => {
                super::start::report(&args.dataflow, id, &outcome);
                eprintln!("stopped {id}");
                Ok(ExitCode::SUCCESS)
            }
            other => bail!("unexpected reply {other:?}"),
        },
    }
}
