//! `adora cluster status`: the daemons of the cluster and its active dataflows.

use std::process::ExitCode;

use adora_message::{
    cli_to_coordinator::ControlRequest,
    control::Labels,
    coordinator_to_cli::{ControlReply, DataflowInfo},
};
use anyhow::bail;
use serde::Serialize;

use crate::{
    commands::client::{Client, ClientArgs},
    table::Table,
};

/// Show every daemon of the cluster with its last heartbeat and labels, and the active dataflows.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  adora cluster status\n  \
adora cluster status --coordinator-addr 10.0.0.1 --coordinator-port 6013 --json")]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// `--json` output.
#[derive(Debug, Serialize)]
struct ClusterStatus {
    coordinator: String,
    adora_version: String,
    daemons: Vec<Daemon>,
    active_dataflows: Vec<Dataflow>,
}

#[derive(Debug, Serialize)]
struct Daemon {
    /// Machine id, or the hostname of a daemon without one.
    id: String,
    machine_id: Option<String>,
    hostname: String,
    labels: Labels,
    connected: bool,
    last_heartbeat_ms: u64,
    /// The version the daemon registered with (`cluster upgrade` checks it).
    adora_version: String,
}

#[derive(Debug, Serialize)]
struct Dataflow {
    id: String,
    name: String,
    machines: Vec<String>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let addr = args.client.addr();
    let mut client = Client::connect(&args.client).await?;
    let ControlReply::Status(status) = client.call(ControlRequest::Status).await? else {
        bail!("unexpected reply to Status");
    };
    let ControlReply::List(flows) = client.call(ControlRequest::List).await? else {
        bail!("unexpected reply to List");
    };
    let report = ClusterStatus {
        coordinator: addr,
        adora_version: status.adora_version,
        daemons: status
            .daemons
            .into_iter()
            .map(|d| Daemon {
                id: d.machine_id.clone().unwrap_or_else(|| d.hostname.clone()),
                machine_id: d.machine_id,
                hostname: d.hostname,
                labels: d.labels,
                connected: d.connected,
                last_heartbeat_ms: d.last_heartbeat_ms,
                adora_version: d.adora_version,
            })
            .collect(),
        active_dataflows: flows
            .iter()
            .filter(|f| !f.status.is_done())
            .map(dataflow)
            .collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn dataflow(f: &DataflowInfo) -> Dataflow {
    Dataflow {
        id: f.id.to_string(),
        name: f.name.clone(),
        machines: f.machines(),
    }
}

/// The human-readable table.
fn render(report: &ClusterStatus) -> String {
    let mut out = format!(
        "Coordinator at {} (adora {})\n\n",
        report.coordinator, report.adora_version
    );
    if report.daemons.is_empty() {
        out.push_str("No daemons connected (start them with `adora cluster up cluster.yml`).\n");
    } else {
        let mut table = Table::new(["DAEMON ID", "LAST HEARTBEAT", "LABELS"]).min_width(1, 16);
        for d in &report.daemons {
            let secs = d.last_heartbeat_ms / 1000;
            let heartbeat = if d.connected {
                format!("{secs}s ago")
            } else {
                format!("lost ({secs}s ago)")
            };
            let labels: Vec<String> = d.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            table.row([d.id.clone(), heartbeat, labels.join(",")]);
        }
        out.push_str(&table.render());
    }
    out.push_str(&format!(
        "\nActive dataflows: {}\n",
        report.active_dataflows.len()
    ));
    for f in &report.active_dataflows {
        out.push_str(&format!(
            "  {} ({}) on {}\n",
            f.name,
            f.id,
            f.machines.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_daemons_and_dataflows() {
        let report = ClusterStatus {
            coordinator: "10.0.0.1:6013".into(),
            adora_version: "0.1.0".into(),
            daemons: vec![
                Daemon {
                    id: "robot".into(),
                    machine_id: Some("robot".into()),
                    hostname: "r".into(),
                    labels: [("arch".into(), "arm64".into())].into(),
                    connected: true,
                    last_heartbeat_ms: 2300,
                    adora_version: "0.1.0".into(),
                },
                Daemon {
                    id: "gpu-server".into(),
                    machine_id: Some("gpu-server".into()),
                    hostname: "g".into(),
                    labels: Labels::new(),
                    connected: false,
                    last_heartbeat_ms: 25_000,
                    adora_version: "0.1.0".into(),
                },
            ],
            active_dataflows: vec![Dataflow {
                id: "u".into(),
                name: "demo".into(),
                machines: vec!["gpu-server".into(), "robot".into()],
            }],
        };
        assert_eq!(
            render(&report),
            "Coordinator at 10.0.0.1:6013 (adora 0.1.0)\n\n\
             DAEMON ID   LAST HEARTBEAT    LABELS\n\
             robot       2s ago            arch=arm64\n\
             gpu-server  lost (25s ago)\n\
             \nActive dataflows: 1\n  demo (u) on gpu-server, robot\n"
        );
    }
}
