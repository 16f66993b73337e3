//! `adora list`: the dataflows the coordinator knows.

use std::process::ExitCode;

use adora_message::{
    cli_to_coordinator::ControlRequest, control::DataflowStatus, coordinator_to_cli::ControlReply,
};
use anyhow::bail;
use serde::Serialize;

use super::client::{Client, ClientArgs};
use crate::table::Table;

/// List dataflows: name, uuid, status, nodes and machines.
///
/// Running dataflows, and finished ones as the coordinator keeps them: the last 100 or those that
/// ended in the last 24 h, whichever keeps more (`adora coordinator --keep-finished N
/// --keep-finished-for DURATION`).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora list\n  adora list --json | jq '.[] | select(.status == \"running\")'"
)]
pub struct Args {
    /// Print JSON (one array, with each node's machine).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    info: &'a adora_message::coordinator_to_cli::DataflowInfo,
    machines: Vec<String>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut client = Client::connect(&args.client).await?;
    let ControlReply::List(list) = client.call(ControlRequest::List).await? else {
        bail!("unexpected reply to List");
    };
    if args.json {
        let rows: Vec<Row<'_>> = list
            .iter()
            .map(|info| Row {
                info,
                machines: info.machines(),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        eprintln!("no dataflows (start one with `adora start dataflow.yml`)");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(["NAME", "UUID", "STATUS", "NODES", "RESTARTS", "MACHINES"])
        .min_width(2, 8)
        .min_width(3, 5)
        .min_width(4, 8)
        .right_align(&[3, 4]);
    for d in &list {
        // A running dataflow without some of its nodes (a drain stopped them) says so.
        let status = match (d.status, d.degraded.is_empty()) {
            (DataflowStatus::Running, false) => "degraded".to_owned(),
            (status, _) => status.to_string(),
        };
        table.row([
            d.name.clone(),
            d.id.to_string(),
            status,
            d.nodes.len().to_string(),
            d.total_restarts().to_string(),
            d.machines().join(","),
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}
