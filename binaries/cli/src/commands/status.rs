//! `adora status`: is the coordinator reachable, which daemons are connected.

use std::process::ExitCode;

use adora_message::{cli_to_coordinator::ControlRequest, coordinator_to_cli::ControlReply};
use anyhow::bail;

use super::client::{Client, ClientArgs};
use crate::table::Table;

/// Show the coordinator and its daemons with their last heartbeat.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  adora status\n  adora status --json")]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let addr = args.client.addr();
    let mut client = Client::connect(&args.client).await?;
    let ControlReply::Status(status) = client.call(ControlRequest::Status).await? else {
        bail!("unexpected reply to Status");
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "coordinator at {addr}: reachable (adora {}), {} running dataflow(s)",
        status.adora_version, status.running_dataflows
    );
    if status.daemons.is_empty() {
        println!("no daemons connected (start one with `adora daemon` or `adora up`)");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(["MACHINE", "HOSTNAME", "STATE", "LAST HEARTBEAT", "LABELS"])
        .min_width(0, 16)
        .min_width(1, 20)
        .min_width(2, 9)
        .min_width(3, 14);
    for d in &status.daemons {
        let labels: Vec<String> = d.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        table.row([
            d.machine_id.as_deref().unwrap_or("-").to_owned(),
            d.hostname.clone(),
            if d.connected { "connected" } else { "lost" }.to_owned(),
            format!("{:.1}s ago", d.last_heartbeat_ms as f64 / 1000.0),
            labels.join(","),
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}
