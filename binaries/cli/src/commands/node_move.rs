//! `adora node move DATAFLOW NODE [--to MACHINE]`: moves a running node to another daemon,
//! make-before-break, printing the steps as they happen.

use std::process::ExitCode;

use adora_core::NodeId;
use adora_message::{cli_to_coordinator::ControlRequest, coordinator_to_cli::ControlReply};
use anyhow::bail;

use super::client::{Client, ClientArgs};

/// Move a running node to another machine without stopping its dataflow.
///
/// The new instance starts on the target and connects while the old one keeps delivering;
/// then the node's receivers switch to the new instance and the old one is stopped quietly
/// (receivers see no end of input; one message may arrive twice during the switch). A node
/// pinned with `deploy.machine` cannot move. If the new instance cannot start, the old one
/// keeps running and the command exits with status 1.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  adora node move demo detector                 # to a daemon placement picks (not its current one)
  adora node move demo detector --to gpu-2      # to this machine (it must match the node's labels)
  adora node move demo detector --json | jq .total_ms")]
pub struct MoveArgs {
    /// Dataflow name or uuid.
    dataflow: String,
    /// Node id.
    node: NodeId,
    /// The machine (daemon name) to move it to; by default placement picks one.
    #[arg(long, value_name = "MACHINE")]
    to: Option<String>,
    /// Print the report as JSON (from, to, start_ms, overlap_ms, total_ms) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Exit code 0 when the node moved, 1 when it did not (it then still runs where it was).
pub async fn run(args: MoveArgs) -> anyhow::Result<ExitCode> {
    let mut client = Client::connect(&args.client).await?;
    client
        .send(ControlRequest::MoveNode {
            dataflow: args.dataflow.clone(),
            node: args.node.clone(),
            to: args.to.clone(),
        })
        .await?;
    loop {
        match client.next().await? {
            ControlReply::MoveProgress(line) => {
                if !args.json {
                    println!("{line}");
                }
            }
            ControlReply::Moved(report) => {
                if args.json {
                    crate::output::print_json(&report)?;
                } else {
                    println!(
                        "moved `{}` from `{}` to `{}` in {} ms (new instance ready after {} ms; both delivered for at most {} ms)",
                        report.node,
                        report.from,
                        report.to,
                        report.total_ms,
                        report.start_ms,
                        report.overlap_ms
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            ControlReply::Error(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::FAILURE);
            }
            other => bail!("unexpected reply to MoveNode: {other:?}"),
        }
    }
}
