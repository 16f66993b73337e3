//! `adora node list|info|move`: the nodes of one dataflow with their machine, pid, status,
//! restarts and last error; moving one to another machine (`node_move.rs`).

use std::process::ExitCode;

use adora_core::NodeId;
use adora_message::{
    cli_to_coordinator::ControlRequest, coordinator_to_cli::ControlReply, stats::NodeInfo,
};
use anyhow::bail;

use super::{
    client::{Client, ClientArgs},
    top::{human_bytes, human_uptime},
};
use crate::table::Table;

/// Inspect the nodes of a dataflow, or move one to another machine.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(Debug, clap::Subcommand)]
enum NodeCommand {
    List(ListArgs),
    Info(InfoArgs),
    Move(super::node_move::MoveArgs),
}

/// List the nodes of a dataflow: machine, status, pid, restarts, inputs and outputs.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  adora node list demo
  adora node list 0b9c7a6e-3f1d-4a55-9a43-3c2f0d1e7b10 --json")]
pub struct ListArgs {
    /// Dataflow name or uuid.
    dataflow: String,
    /// Print JSON (an array of nodes; fields in the guide's JSON chapter).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Show one node: inputs, outputs, machine, pid, status, restarts, last error and figures.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  adora node info demo camera
  adora node info demo camera --json | jq .last_error")]
pub struct InfoArgs {
    /// Dataflow name or uuid.
    dataflow: String,
    /// Node id.
    node: NodeId,
    /// Print JSON (one object; fields in the guide's JSON chapter).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

async fn nodes(client: &ClientArgs, dataflow: &str) -> anyhow::Result<Vec<NodeInfo>> {
    let mut client = Client::connect(client).await?;
    let request = ControlRequest::Nodes {
        dataflow: Some(dataflow.to_owned()),
    };
    match client.call(request).await? {
        ControlReply::Nodes(nodes) => Ok(nodes),
        other => bail!("unexpected reply to Nodes: {other:?}"),
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        NodeCommand::List(args) => list(args).await,
        NodeCommand::Info(args) => info(args).await,
        NodeCommand::Move(args) => super::node_move::run(args).await,
    }
}

async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let nodes = nodes(&args.client, &args.dataflow).await?;
    if args.json {
        crate::output::print_json(&nodes)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new([
        "NODE", "MACHINE", "STATUS", "PID", "RESTARTS", "INPUTS", "OUTPUTS",
    ])
    .min_width(2, 10)
    .min_width(3, 7)
    .min_width(4, 8)
    .min_width(5, 24)
    .right_align(&[3, 4]);
    for n in &nodes {
        let inputs: Vec<String> = n.inputs.keys().map(ToString::to_string).collect();
        let outputs: Vec<String> = n.outputs.iter().map(ToString::to_string).collect();
        table.row([
            n.node.to_string(),
            n.machine.clone(),
            n.status.to_string(),
            n.pid.map_or_else(|| "-".into(), |p| p.to_string()),
            n.restarts.to_string(),
            inputs.join(","),
            outputs.join(","),
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}

async fn info(args: InfoArgs) -> anyhow::Result<ExitCode> {
    let nodes = nodes(&args.client, &args.dataflow).await?;
    let Some(n) = nodes.into_iter().find(|n| n.node == args.node) else {
        bail!(
            "dataflow `{}` has no node `{}` (see `adora node list {}`)",
            args.dataflow,
            args.node,
            args.dataflow
        );
    };
    if args.json {
        crate::output::print_json(&n)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("node:      {}", n.node);
    println!("dataflow:  {} ({})", n.dataflow, n.dataflow_id);
    println!("machine:   {}", n.machine);
    println!("status:    {}", n.status);
    println!(
        "pid:       {}",
        n.pid.map_or_else(|| "-".into(), |p| p.to_string())
    );
    println!("restarts:  {}", n.restarts);
    println!("uptime:    {}", human_uptime(n.uptime_secs));
    println!(
        "cpu:       {:.1}%   rss: {}",
        n.cpu_percent,
        human_bytes(n.rss_bytes)
    );
    println!(
        "messages:  {} in ({:.1}/s), {} out ({:.1}/s), {} dropped",
        n.messages_received,
        n.messages_received_per_sec,
        n.messages_sent,
        n.messages_sent_per_sec,
        n.dropped
    );
    println!("inputs:");
    if n.inputs.is_empty() {
        println!("  (none)");
    }
    for (input, source) in &n.inputs {
        let remote: Vec<String> = n
            .remote_dropped
            .iter()
            .filter(|d| &d.input == input && d.count > 0)
            .map(|d| format!("{} {}", d.count, d.reason.as_str().replace('_', " ")))
            .collect();
        if remote.is_empty() {
            println!("  {input} <- {source}");
        } else {
            println!(
                "  {input} <- {source}   (missing between machines: {})",
                remote.join(", ")
            );
        }
    }
    let outputs: Vec<String> = n.outputs.iter().map(ToString::to_string).collect();
    println!(
        "outputs:   {}",
        if outputs.is_empty() {
            "(none)".into()
        } else {
            outputs.join(", ")
        }
    );
    println!(
        "last error: {}",
        n.last_error.as_deref().unwrap_or("(none)")
    );
    Ok(ExitCode::SUCCESS)
}
