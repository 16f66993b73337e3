//! `adora cluster down`: stop every dataflow, every daemon and the coordinator.
//!
//! Everything goes through the coordinator (it knows every daemon), so no `cluster.yml` is
//! needed: stop each active dataflow, tell every daemon to exit (`ShutdownDaemons`) and wait until
//! they have disconnected, then stop the coordinator (`ShutdownCoordinator`; SIGTERM through its
//! pid file as a fallback when it runs on this machine).

use std::{
    collections::BTreeSet,
    process::ExitCode,
    time::{Duration, Instant},
};

use adora_message::{
    cli_to_coordinator::ControlRequest,
    coordinator_to_cli::{ControlReply, CoordinatorStatus},
};
use anyhow::bail;

use crate::commands::{
    client::{Client, ClientArgs, ADDR_FILE},
    state_dir, up,
};

/// Longest wait for one dataflow to stop.
const STOP_DATAFLOW_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the daemons to disconnect after being told to exit.
const DAEMONS_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the coordinator to stop listening.
const COORDINATOR_TIMEOUT: Duration = Duration::from_secs(10);
/// Polling interval.
const POLL: Duration = Duration::from_millis(200);
/// Longest a TCP probe of the coordinator port takes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Stop every dataflow, every daemon and the coordinator of the cluster.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  adora cluster down\n  \
adora cluster down --coordinator-addr 10.0.0.1 --coordinator-port 6013\n\n\
Dataflows get a graceful stop, daemons exit once their nodes have ended, then the coordinator \
exits. Exits non-zero if a daemon or the coordinator did not stop.")]
pub struct Args {
    #[command(flatten)]
    client: ClientArgs,
}

async fn listening(addr: &str) -> bool {
    tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .is_ok_and(|r| r.is_ok())
}

async fn status(client: &mut Client) -> anyhow::Result<CoordinatorStatus> {
    match client.call(ControlRequest::Status).await? {
        ControlReply::Status(status) => Ok(status),
        other => bail!("unexpected reply to Status: {other:?}"),
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let addr = args.client.addr();
    if !listening(&addr).await {
        println!("No coordinator at {addr}: nothing to stop.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut client = Client::connect(&args.client).await?;
    let mut failures = stop_dataflows(&mut client).await?;
    failures += stop_daemons(&mut client).await?;
    failures += stop_coordinator(client, &addr).await;
    if failures == 0 {
        println!("Cluster is down.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{failures} part(s) of the cluster did not stop (see above).");
        Ok(ExitCode::FAILURE)
    }
}

/// Stops every active dataflow; returns how many failed to stop.
async fn stop_dataflows(client: &mut Client) -> anyhow::Result<usize> {
    let ControlReply::List(flows) = client.call(ControlRequest::List).await? else {
        bail!("unexpected reply to List");
    };
    let mut failures = 0;
    for f in flows.iter().filter(|f| !f.status.is_done()) {
        let stop = ControlRequest::Stop {
            dataflow: f.id.to_string(),
            grace: None,
        };
        let result = tokio::time::timeout(STOP_DATAFLOW_TIMEOUT, client.call(stop)).await;
        match result {
            Ok(Ok(_)) => println!("Stopping dataflow {} ({})... OK", f.name, f.id),
            Ok(Err(e)) => {
                failures += 1;
                println!("Stopping dataflow {} ({})... FAILED: {e}", f.name, f.id);
            }
            Err(_) => {
                failures += 1;
                println!(
                    "Stopping dataflow {} ({})... FAILED: not stopped within {STOP_DATAFLOW_TIMEOUT:?}",
                    f.name, f.id
                );
            }
        }
    }
    Ok(failures)
}

/// Tells every daemon to exit and waits until they disconnected; returns how many did not.
async fn stop_daemons(client: &mut Client) -> anyhow::Result<usize> {
    for d in status(client)
        .await?
        .daemons
        .iter()
        .filter(|d| !d.connected)
    {
        let name = d.machine_id.as_deref().unwrap_or(&d.hostname);
        println!("Daemon {name} is lost (not connected): it cannot be told to exit from here.");
    }
    let ControlReply::ShuttingDown { daemons } =
        client.call(ControlRequest::ShutdownDaemons).await?
    else {
        bail!("unexpected reply to ShutdownDaemons");
    };
    let mut waiting: BTreeSet<String> = daemons.into_iter().collect();
    let begin = Instant::now();
    while !waiting.is_empty() && begin.elapsed() < DAEMONS_TIMEOUT {
        let connected: BTreeSet<String> = status(client)
            .await?
            .daemons
            .into_iter()
            .filter(|d| d.connected)
            .map(|d| d.machine_id.unwrap_or(d.hostname))
            .collect();
        let gone: Vec<String> = waiting.difference(&connected).cloned().collect();
        for name in gone {
            println!("Stopping daemon {name}... OK");
            waiting.remove(&name);
        }
        if !waiting.is_empty() {
            tokio::time::sleep(POLL).await;
        }
    }
    for name in &waiting {
        println!("Stopping daemon {name}... FAILED: still connected after {DAEMONS_TIMEOUT:?}");
    }
    Ok(waiting.len())
}

/// Stops the coordinator; returns 1 when it is still running.
async fn stop_coordinator(mut client: Client, addr: &str) -> usize {
    // The reply may not make it out before the coordinator closes the connection: both are fine.
    if client
        .send(ControlRequest::ShutdownCoordinator)
        .await
        .is_ok()
    {
        let _ = tokio::time::timeout(COORDINATOR_TIMEOUT, client.next()).await;
    }
    drop(client);
    let begin = Instant::now();
    while listening(addr).await && begin.elapsed() < COORDINATOR_TIMEOUT {
        tokio::time::sleep(POLL).await;
    }
    let state = state_dir();
    let pid_file = up::pid_file(&state, "coordinator");
    // Fallback when the coordinator runs here (its recorded address is this one) and still
    // listens, or lingers after closing its port.
    let recorded = std::fs::read_to_string(state.join(ADDR_FILE)).unwrap_or_default();
    if recorded.trim() == addr {
        if let Some(pid) = up::running_pid(&pid_file) {
            up::stop_process(pid, "coordinator").await;
        }
    }
    if listening(addr).await {
        println!("Stopping coordinator on {addr}... FAILED: it still listens");
        return 1;
    }
    let _ = std::fs::remove_file(&pid_file);
    let _ = std::fs::remove_file(state.join(ADDR_FILE));
    println!("Stopping coordinator on {addr}... OK");
    0
}
