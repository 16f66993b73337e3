//! `adora cluster down`: stop every dataflow, every daemon and the coordinator.
//!
//! Everything goes through the coordinator (it knows every daemon), so no `cluster.yml` is
//! needed: stop each active dataflow, tell every daemon to exit (`ShutdownDaemons`) and wait until
//! they have disconnected, then stop the coordinator (`ShutdownCoordinator`; SIGTERM through its
//! pid file as a fallback when it runs on this machine).
//!
//! With a `cluster.yml`, the sites' routers are stopped over SSH, and the daemons the coordinator
//! cannot reach (lost, or no coordinator at
//! all) are stopped over SSH, from the pid file `cluster up` left in their state directory.
//!
//! Daemons that run as systemd services (`cluster install`; they say so when they register) are
//! named and left running, unless `--services` is given: then they are told to exit too (a clean
//! exit, which `Restart=on-failure` does not restart; the unit stays enabled for the next boot),
//! or stopped with `systemctl stop` over SSH when the coordinator cannot reach them.

use std::{
    collections::BTreeSet,
    process::ExitCode,
    time::{Duration, Instant},
};

use adora_cluster::{as_root, systemd, HostSession, SshTarget};
use adora_core::cluster::{ClusterConfig, Machine};
use adora_message::{
    cli_to_coordinator::ControlRequest,
    coordinator_to_cli::{ControlReply, CoordinatorStatus},
};
use anyhow::bail;
use tokio::task::JoinSet;

use super::{common::load_cluster, machine};
use crate::commands::{
    client::{Client, ClientArgs, ADDR_FILE},
    common::state_dir,
    up,
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
adora cluster down --coordinator-addr 10.0.0.1 --coordinator-port 6013\n  \
adora cluster down cluster.yml\n\n\
Dataflows get a graceful stop, daemons exit once their nodes have ended, then the coordinator \
exits. With cluster.yml, daemons the coordinator cannot reach (lost, or no coordinator) are \
stopped over SSH. Daemons installed as systemd services (`cluster install`) are left running \
unless --services is given. Exits non-zero if a daemon or the coordinator did not stop.")]
pub struct Args {
    /// The cluster file: its coordinator is the one stopped, and daemons the coordinator cannot
    /// reach are stopped over SSH.
    cluster: Option<std::path::PathBuf>,
    /// An ssh_config file for every SSH connection (`ssh -F FILE`).
    #[arg(long, value_name = "FILE", requires = "cluster")]
    ssh_config: Option<std::path::PathBuf>,
    /// Stop the daemons that run as systemd services too (they stay enabled: they start again
    /// at the next boot, or with `cluster up`).
    #[arg(long)]
    services: bool,
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
    let cluster = match &args.cluster {
        Some(path) => match load_cluster(path) {
            Ok(cluster) => Some(cluster),
            Err(code) => return Ok(code),
        },
        None => None,
    };
    let client_args = match &cluster {
        Some(c) => ClientArgs::at(&c.coordinator.addr, c.coordinator.port),
        None => args.client,
    };
    let addr = client_args.addr();
    let mut failures = 0;
    let mut stopped = BTreeSet::new();
    let client = if listening(&addr).await {
        let mut client = Client::connect(&client_args).await?;
        failures += stop_dataflows(&mut client).await?;
        let (ok, not_stopped) = stop_daemons(&mut client, cluster.as_ref(), args.services).await?;
        stopped = ok;
        // Daemons of the cluster file that did not stop are retried over SSH below.
        failures += not_stopped
            .iter()
            .filter(|name| !in_cluster(cluster.as_ref(), name))
            .count();
        Some(client)
    } else if cluster.is_some() {
        println!("No coordinator at {addr}: stopping the daemons over SSH.");
        None
    } else {
        println!("No coordinator at {addr}: nothing to stop.");
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(cluster) = &cluster {
        failures += super::routers::stop_routers(cluster, args.ssh_config.as_ref()).await;
        let rest: Vec<Machine> = cluster
            .machines
            .iter()
            .filter(|m| !stopped.contains(&m.id))
            .cloned()
            .collect();
        failures += stop_over_ssh(rest, args.ssh_config, args.services).await;
    }
    if let Some(client) = client {
        failures += stop_coordinator(client, &addr).await;
    }
    if failures == 0 {
        println!("Cluster is down.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{failures} part(s) of the cluster did not stop (see above).");
        Ok(ExitCode::FAILURE)
    }
}

fn in_cluster(cluster: Option<&ClusterConfig>, name: &str) -> bool {
    cluster.is_some_and(|c| c.machines.iter().any(|m| m.id == name))
}

/// What [`stop_on_machine`] did.
enum SshStop {
    /// The ad-hoc daemon was stopped (`stopped PID`) or was not running (`not-running`).
    AdHoc(String),
    /// The machine's daemon is a systemd service: stopped (`--services`) or left running.
    Service { unit: String, stopped: bool },
}

/// Stops the daemon of `m` over SSH: its systemd unit with `services` (left running without),
/// else the detached daemon of `cluster up` from its pid file.
async fn stop_on_machine(
    m: &Machine,
    ssh_config: Option<std::path::PathBuf>,
    services: bool,
) -> Result<SshStop, String> {
    let session = HostSession::connect(SshTarget::of(m, ssh_config))
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        let has_unit = session
            .run(&machine::unit_installed_argv(m))
            .await
            .is_ok_and(|out| out.success());
        if has_unit {
            let unit = systemd::unit_name(&m.id);
            if services {
                let stop = as_root(&m.user(), &["systemctl", "stop", &unit]);
                let out = session.run(&stop).await.map_err(|e| e.to_string())?;
                if !out.success() {
                    return Err(out.stderr.trim().to_owned());
                }
            }
            return Ok(SshStop::Service {
                unit,
                stopped: services,
            });
        }
        match session.sh(&machine::stop_script(m)).await {
            Ok(out) if out.success() => Ok(SshStop::AdHoc(out.stdout.trim().to_owned())),
            Ok(out) => Err(out.stderr.trim().to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }
    .await;
    session.close().await;
    result
}

/// Stops the daemons of `machines` over SSH, concurrently (systemd services only with
/// `services`); returns how many failed.
async fn stop_over_ssh(
    machines: Vec<Machine>,
    ssh_config: Option<std::path::PathBuf>,
    services: bool,
) -> usize {
    let mut tasks = JoinSet::new();
    for m in machines {
        let ssh_config = ssh_config.clone();
        tasks.spawn(async move {
            let result = stop_on_machine(&m, ssh_config, services).await;
            (m, result)
        });
    }
    let mut failures = 0;
    while let Some(joined) = tasks.join_next().await {
        let Ok((m, result)) = joined else {
            failures += 1;
            continue;
        };
        let what = format!("Stopping daemon {} over SSH ({})...", m.id, m.destination());
        match result {
            Ok(SshStop::AdHoc(out)) if out == "not-running" => {
                println!("{what} OK (it was not running)")
            }
            Ok(SshStop::AdHoc(out)) => println!(
                "{what} OK (pid {})",
                out.strip_prefix("stopped ").unwrap_or(&out)
            ),
            Ok(SshStop::Service {
                unit,
                stopped: true,
            }) => println!("{what} OK (systemd service {unit} stopped)"),
            Ok(SshStop::Service { unit, .. }) => println!(
                "Daemon {} is the systemd service {unit}: left running (`cluster down --services` stops it).",
                m.id
            ),
            Err(e) => {
                failures += 1;
                println!("{what} FAILED: {e}");
            }
        }
    }
    failures
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

/// Tells every daemon to exit (systemd services only with `services`: the others are named and
/// left running) and waits until they disconnected; returns the names of those that did (or
/// were left running on purpose) and of those that did not.
async fn stop_daemons(
    client: &mut Client,
    cluster: Option<&ClusterConfig>,
    services: bool,
) -> anyhow::Result<(BTreeSet<String>, BTreeSet<String>)> {
    let mut not_stopped = BTreeSet::new();
    let mut kept = BTreeSet::new();
    let mut to_stop = Vec::new();
    for d in status(client).await?.daemons {
        let name = d.machine_id.unwrap_or(d.hostname);
        if d.connected {
            match d.systemd_unit {
                Some(unit) if !services => {
                    println!(
                        "Daemon {name} is the systemd service {unit}: left running \
                         (`cluster down --services` stops it)."
                    );
                    kept.insert(name);
                }
                _ => to_stop.push(name),
            }
        } else if in_cluster(cluster, &name) {
            println!("Daemon {name} is lost (not connected): stopping it over SSH.");
            not_stopped.insert(name);
        } else {
            println!(
                "Daemon {name} is lost (not connected): it cannot be told to exit from here \
                 (with the cluster file, `cluster down` stops it over SSH)."
            );
            not_stopped.insert(name);
        }
    }
    let request = ControlRequest::ShutdownMachines { machines: to_stop };
    let ControlReply::ShuttingDown { daemons } = client.call(request).await? else {
        bail!("unexpected reply to ShutdownMachines");
    };
    let mut waiting: BTreeSet<String> = daemons.into_iter().collect();
    let mut stopped = BTreeSet::new();
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
            stopped.insert(name);
        }
        if !waiting.is_empty() {
            tokio::time::sleep(POLL).await;
        }
    }
    for name in &waiting {
        println!("Stopping daemon {name}... FAILED: still connected after {DAEMONS_TIMEOUT:?}");
    }
    not_stopped.extend(waiting);
    stopped.extend(kept);
    Ok((stopped, not_stopped))
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
