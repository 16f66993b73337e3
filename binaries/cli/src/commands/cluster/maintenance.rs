//! `adora cluster cordon|uncordon|lock|unlock MACHINE`: take a machine out of placement, or hold
//! off its maintenance, through the coordinator (which keeps both in its store). Also the text
//! `cluster status` prints about cordons, locks, claims and drains ([`describe`]).

use std::process::ExitCode;

use adora_message::{
    cli_to_coordinator::ControlRequest,
    coordinator_to_cli::ControlReply,
    maintenance::{DrainNodeState, MachineMaintenance},
};
use anyhow::bail;

use crate::{
    commands::client::{Client, ClientArgs},
    output::print_json,
};

/// Take a machine out of placement: new dataflows (and restarts elsewhere) skip it, a node pinned
/// to it by `deploy.machine` fails to start with the reason; what runs there keeps running.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora cluster cordon robot-1 --reason \"battery swap\"\n  \
adora cluster cordon robot-1 --json\n  adora cluster uncordon robot-1\n\n\
`adora cluster status` shows the machine `cordoned` with its reason. To move its nodes away as \
well: `adora cluster drain robot-1`. The cordon is kept by the coordinator (it survives a \
restart) until `adora cluster uncordon`."
)]
pub struct CordonArgs {
    /// The machine (its machine id, or the hostname of an unnamed daemon).
    machine: String,
    /// Why (shown by `cluster status` and in placement errors).
    #[arg(long, value_name = "TEXT", default_value = "cordoned by an operator")]
    reason: String,
    /// Print the machine's maintenance state as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Let new nodes go to a cordoned (or drained) machine again. Nothing moves back on its own.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  adora cluster uncordon robot-1\n  \
adora cluster uncordon robot-1 --json")]
pub struct UncordonArgs {
    /// The machine.
    machine: String,
    /// Print the machine's maintenance state as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Hold an operator's update lock on a machine: `cluster upgrade` and `cluster drain` wait for it
/// (until their --lock-timeout) until `cluster unlock`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora cluster lock robot-1 --reason \"calibrating the arm\"\n  \
adora cluster unlock robot-1\n\n\
Nodes take locks themselves with `node.update_lock(\"grasping\")` (Rust and Python); \
`adora cluster status` lists every lock with its holder, reason and age. Taking the lock again \
replaces its reason."
)]
pub struct LockArgs {
    /// The machine.
    machine: String,
    /// Why (shown to whoever waits for the machine).
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// Print the machine's maintenance state as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Release the operator's update lock on a machine (nodes' locks stay).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  adora cluster unlock robot-1")]
pub struct UnlockArgs {
    /// The machine.
    machine: String,
    /// Print the machine's maintenance state as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn cordon(args: CordonArgs) -> anyhow::Result<ExitCode> {
    let request = ControlRequest::SetCordon {
        machine: args.machine,
        reason: Some(args.reason),
    };
    change(&args.client, request, args.json).await
}

pub async fn uncordon(args: UncordonArgs) -> anyhow::Result<ExitCode> {
    let request = ControlRequest::SetCordon {
        machine: args.machine,
        reason: None,
    };
    change(&args.client, request, args.json).await
}

pub async fn lock(args: LockArgs) -> anyhow::Result<ExitCode> {
    let request = ControlRequest::SetOperatorLock {
        machine: args.machine,
        reason: Some(args.reason),
    };
    change(&args.client, request, args.json).await
}

pub async fn unlock(args: UnlockArgs) -> anyhow::Result<ExitCode> {
    let request = ControlRequest::SetOperatorLock {
        machine: args.machine,
        reason: None,
    };
    change(&args.client, request, args.json).await
}

/// Sends one change and prints the machine's state after it.
async fn change(
    client: &ClientArgs,
    request: ControlRequest,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut client = Client::connect(client).await?;
    let ControlReply::Maintenance(machines) = client.call(request).await? else {
        bail!("unexpected reply to a maintenance request");
    };
    let Some(machine) = machines.first() else {
        bail!("the coordinator answered without the machine");
    };
    if json {
        print_json(machine)?;
    } else {
        println!("{}", summary(machine, now_ms()));
    }
    Ok(ExitCode::SUCCESS)
}

/// Milliseconds since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// "robot-1: cordoned (battery swap); 1 update lock: ..." — one line.
pub(super) fn summary(m: &MachineMaintenance, now: u64) -> String {
    let mut parts = vec![match &m.cordon {
        Some(c) => format!("cordoned ({})", c.reason),
        None => "not cordoned".to_owned(),
    }];
    match m.locks.len() {
        0 => parts.push("no update locks".to_owned()),
        n => {
            let locks: Vec<String> = m
                .locks
                .iter()
                .map(|l| format!("{l}, held {}", age(now, l.since_ms)))
                .collect();
            parts.push(format!(
                "{n} update lock{}: {}",
                if n == 1 { "" } else { "s" },
                locks.join("; ")
            ));
        }
    }
    format!("machine `{}`: {}", m.machine, parts.join("; "))
}

/// `12s`, `3m04s`, `2h05m`.
pub(super) fn age(now: u64, since_ms: u64) -> String {
    let secs = now.saturating_sub(since_ms) / 1000;
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The "Maintenance:" section of `cluster status`: one line per cordon, lock, operation and
/// drain; empty when no machine has any.
pub(super) fn describe<'a>(
    machines: impl Iterator<Item = &'a MachineMaintenance>,
    now: u64,
) -> String {
    let mut lines = Vec::new();
    for m in machines {
        if let Some(c) = &m.cordon {
            lines.push(format!(
                "  {}: cordoned {} ago: {}",
                m.machine,
                age(now, c.since_ms),
                c.reason
            ));
        }
        for l in &m.locks {
            lines.push(format!(
                "  {}: update lock by {l}, held {}",
                m.machine,
                age(now, l.since_ms)
            ));
        }
        if let Some(c) = m.live_claim(now) {
            lines.push(format!(
                "  {}: being {} for {}",
                m.machine,
                c.operation.participle(),
                age(now, c.since_ms)
            ));
        }
        if let Some(d) = &m.drain {
            let handled = d
                .nodes
                .iter()
                .filter(|n| {
                    !matches!(
                        n.state,
                        DrainNodeState::Pending
                            | DrainNodeState::Moving { .. }
                            | DrainNodeState::Pinned
                    )
                })
                .count();
            let what = if d.done { "drained" } else { "draining" };
            lines.push(format!(
                "  {}: {what}: {handled}/{} node(s) handled{}",
                m.machine,
                d.nodes.len(),
                d.waiting
                    .as_deref()
                    .map(|w| format!(", waiting: {w}"))
                    .unwrap_or_default()
            ));
        }
    }
    if lines.is_empty() {
        return String::new();
    }
    format!("\nMaintenance:\n{}\n", lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use adora_message::maintenance::{Cordon, LockHolder, UpdateLock};

    use super::*;

    #[test]
    fn summary_and_status_lines_name_reasons_holders_and_ages() {
        let mut m = MachineMaintenance::new("robot-1");
        assert_eq!(
            summary(&m, 0),
            "machine `robot-1`: not cordoned; no update locks"
        );
        assert_eq!(describe([&m].into_iter(), 0), "");
        m.cordon = Some(Cordon {
            reason: "battery swap".into(),
            since_ms: 1_000,
        });
        m.locks.push(UpdateLock {
            holder: LockHolder::Node {
                dataflow: uuid::Uuid::nil(),
                dataflow_name: "demo".into(),
                node: "arm".into(),
                lock: 1,
            },
            reason: "grasping".into(),
            since_ms: 60_000,
        });
        let now = 185_000;
        assert_eq!(
            summary(&m, now),
            "machine `robot-1`: cordoned (battery swap); 1 update lock: node `arm` of dataflow \
             `demo` (grasping), held 2m05s"
        );
        assert_eq!(
            describe([&m].into_iter(), now),
            "\nMaintenance:\n  robot-1: cordoned 3m04s ago: battery swap\n  robot-1: update lock by \
             node `arm` of dataflow `demo` (grasping), held 2m05s\n"
        );
        assert_eq!(age(0, 0), "0s");
        assert_eq!(age(7_500_000, 0), "2h05m");
    }
}
