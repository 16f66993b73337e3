//! `adora cluster drain MACHINE [--deadline D] [--force] [--detach] [--lock-timeout D] [--json]`:
//! the coordinator cordons the machine, moves its label-placed and unnamed nodes live to other
//! machines and stops its pinned nodes at the deadline; this command starts it (waiting for the
//! machine's update locks) and follows it, one line per node as it goes.

use std::{collections::BTreeMap, process::ExitCode, time::Duration};

use adora_message::{
    cli_to_coordinator::ControlRequest,
    control::{ControlError, ErrorKind},
    coordinator_to_cli::ControlReply,
    maintenance::{DrainNodeState, DrainedNode, MachineMaintenance},
};
use anyhow::{bail, Context};
use tokio::time::Instant;

use crate::{
    commands::client::{Client, ClientArgs},
    output::print_json,
};

/// How often the drain is looked at.
const POLL: Duration = Duration::from_millis(500);
/// How often a locked machine is asked again.
const LOCK_POLL: Duration = Duration::from_secs(2);

/// Take a machine out of service: cordon it, move its nodes to other machines while they run,
/// stop the ones pinned to it.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  adora cluster drain robot-1\n  \
adora cluster drain robot-1 --deadline 10m\n  adora cluster drain robot-1 --force --json\n  \
adora cluster drain robot-1 --detach && adora cluster status\n\n\
The machine is cordoned first (no new nodes). A node placed by `deploy.labels` or without \
`deploy` is moved live: started on another machine that placement accepts, its inputs and \
outputs re-wired, then the old instance stopped (its receivers see no gap beyond the node's own \
start). A node pinned by `deploy.machine` cannot move: it is stopped at --deadline (at once with \
--force) and its dataflow is shown `degraded`. While the machine has update locks (nodes' \
`update_lock`, `adora cluster lock`) the drain waits for them up to --lock-timeout; --force \
ignores them. The drain runs in the coordinator: --detach (or Ctrl-C) leaves it running; \
`adora cluster status` follows it, `adora cluster uncordon` makes the machine eligible again \
afterwards (nothing moves back on its own).\n\n\
Exit codes: 0 every node moved (or there was none); 1 some node was stopped or could not move, \
the machine stayed locked, or the drain was refused (another operation has the machine).")]
pub struct Args {
    /// The machine (its machine id, or the hostname of an unnamed daemon).
    machine: String,
    /// When the nodes that cannot move are stopped, from now.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "1h")]
    deadline: Duration,
    /// Stop pinned nodes at once and ignore update locks.
    #[arg(long)]
    force: bool,
    /// Start the drain and return; it goes on in the coordinator.
    #[arg(long)]
    detach: bool,
    /// How long to wait for the machine's update locks before giving up.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "10m")]
    lock_timeout: Duration,
    /// Print the machine's maintenance record (with every node's outcome) as JSON at the end.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut client = Client::connect(&args.client).await?;
    let Some(started) = start(&mut client, &args).await? else {
        return Ok(ExitCode::FAILURE);
    };
    let nodes = started.drain.as_ref().map_or(0, |d| d.nodes.len());
    eprintln!(
        "Draining `{}`: {nodes} node(s); pinned nodes are stopped {}.",
        args.machine,
        if args.force {
            "at once".to_owned()
        } else {
            format!("in {}", humantime::format_duration(args.deadline))
        }
    );
    if args.detach {
        eprintln!("The drain goes on in the coordinator; follow it with `adora cluster status`.");
        if args.json {
            print_json(&started)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let done = follow(&mut client, &args.machine, started).await?;
    let Some(drain) = &done.drain else {
        bail!("the drain of `{}` was cancelled (uncordoned)", args.machine);
    };
    if args.json {
        print_json(&done)?;
    } else {
        print_summary(&drain.nodes);
    }
    let all_moved = drain
        .nodes
        .iter()
        .all(|n| matches!(n.state, DrainNodeState::Moved { .. }));
    Ok(if all_moved {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Asks the coordinator to drain, again while the machine is locked (until the lock timeout).
/// `None` (after saying why) when it stays locked or is refused.
async fn start(client: &mut Client, args: &Args) -> anyhow::Result<Option<MachineMaintenance>> {
    let begin = Instant::now();
    let mut said: Option<(String, Instant)> = None;
    loop {
        let request = ControlRequest::Drain {
            machine: args.machine.clone(),
            deadline: args.deadline,
            force: args.force,
        };
        let e = match client.call(request).await {
            Ok(ControlReply::Maintenance(mut machines)) if !machines.is_empty() => {
                return Ok(Some(machines.remove(0)));
            }
            Ok(_) => bail!("unexpected reply to Drain"),
            Err(e) => e,
        };
        let Some(e) = e.downcast_ref::<ControlError>().cloned() else {
            return Err(e).context("cannot start the drain");
        };
        if e.kind != ErrorKind::Locked {
            eprintln!("error: {}", e.message);
            return Ok(None);
        }
        if begin.elapsed() >= args.lock_timeout {
            eprintln!(
                "error: still locked after {}: {}\n  hint: wait for the lock holders, raise \
                 --lock-timeout, or drain anyway with --force",
                humantime::format_duration(args.lock_timeout),
                e.message
            );
            return Ok(None);
        }
        let repeat = said
            .as_ref()
            .is_none_or(|(last, at)| *last != e.message || at.elapsed() >= Duration::from_secs(30));
        if repeat {
            eprintln!(
                "  {}: waiting for its update locks: {}",
                args.machine, e.message
            );
            said = Some((e.message.clone(), Instant::now()));
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}

/// Follows the drain until it is done, printing each node's changes; returns the final record.
async fn follow(
    client: &mut Client,
    machine: &str,
    started: MachineMaintenance,
) -> anyhow::Result<MachineMaintenance> {
    let begin = Instant::now();
    let mut seen: BTreeMap<(String, String), DrainNodeState> = BTreeMap::new();
    let mut record = started;
    loop {
        let Some(drain) = &record.drain else {
            return Ok(record);
        };
        for n in &drain.nodes {
            let key = (n.dataflow_name.clone(), n.node.to_string());
            if seen.get(&key) != Some(&n.state) {
                eprintln!("  {}", progress_line(n, machine, begin.elapsed()));
                seen.insert(key, n.state.clone());
            }
        }
        if drain.done {
            return Ok(record);
        }
        tokio::time::sleep(POLL).await;
        let ControlReply::Maintenance(machines) = client.call(ControlRequest::Maintenance).await?
        else {
            bail!("unexpected reply to Maintenance");
        };
        record = machines
            .into_iter()
            .find(|m| m.machine == machine)
            .with_context(|| format!("the coordinator forgot machine `{machine}`"))?;
    }
}

/// One node's state as a progress line.
fn progress_line(n: &DrainedNode, machine: &str, elapsed: Duration) -> String {
    let what = match &n.state {
        DrainNodeState::Pending => "waiting to move".to_owned(),
        DrainNodeState::Moving { to } => format!("moving to `{to}`"),
        DrainNodeState::Moved { to } => format!("moved to `{to}`"),
        DrainNodeState::Pinned => {
            format!("pinned to `{machine}`: stopped at the deadline")
        }
        DrainNodeState::Stopped => "stopped".to_owned(),
        DrainNodeState::Failed { reason } => format!("could not move ({reason}): stopped"),
    };
    format!(
        "{}/{}: {what} ({:.1}s)",
        n.dataflow_name,
        n.node,
        elapsed.as_secs_f64()
    )
}

/// The per-node table and `N/M moved.`
fn print_summary(nodes: &[DrainedNode]) {
    let width = nodes
        .iter()
        .map(|n| n.dataflow_name.len() + n.node.to_string().len() + 1)
        .max()
        .unwrap_or(0);
    for n in nodes {
        let name = format!("{}/{}", n.dataflow_name, n.node);
        let outcome = match &n.state {
            DrainNodeState::Moved { to } => format!("moved to {to}"),
            DrainNodeState::Stopped => "stopped (pinned)".to_owned(),
            DrainNodeState::Failed { reason } => format!("stopped: could not move: {reason}"),
            other => format!("{other:?}"),
        };
        println!("{name:width$}  {outcome}");
    }
    let moved = nodes
        .iter()
        .filter(|n| matches!(n.state, DrainNodeState::Moved { .. }))
        .count();
    println!("{moved}/{} moved.", nodes.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_say_where_each_node_is() {
        let node = |state| DrainedNode {
            dataflow: uuid::Uuid::nil(),
            dataflow_name: "demo".into(),
            node: "relay".into(),
            state,
        };
        let at = Duration::from_millis(1500);
        let line = |state| progress_line(&node(state), "robot-1", at);
        assert_eq!(
            line(DrainNodeState::Moving {
                to: "robot-2".into()
            }),
            "demo/relay: moving to `robot-2` (1.5s)"
        );
        assert_eq!(
            line(DrainNodeState::Moved {
                to: "robot-2".into()
            }),
            "demo/relay: moved to `robot-2` (1.5s)"
        );
        assert_eq!(
            line(DrainNodeState::Pinned),
            "demo/relay: pinned to `robot-1`: stopped at the deadline (1.5s)"
        );
        assert_eq!(
            line(DrainNodeState::Failed {
                reason: "no daemon matches labels".into()
            }),
            "demo/relay: could not move (no daemon matches labels): stopped (1.5s)"
        );
    }
}
