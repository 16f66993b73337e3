//! `adora cluster up cluster.yml`: the coordinator here, a daemon on every machine over SSH.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use adora_cluster::{systemd, HostSession};
use adora_core::cluster::{ClusterConfig, Machine};
use adora_message::{
    cli_to_coordinator::ControlRequest,
    coordinator_to_cli::{ControlReply, CoordinatorStatus},
};
use anyhow::{bail, Context};
use tokio::task::JoinSet;

use super::{common::Outcome, machine};
use crate::commands::{
    client::{Client, ClientArgs, ADDR_FILE},
    common::state_dir,
    up,
};

/// How long `up` waits for the daemons it started to register.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `up` waits for systemd services to register: one that was already running retries
/// with a backoff of up to 30 s (`RECONNECT_MAX` of the daemon) while no coordinator answered.
const SERVICE_REGISTRATION_TIMEOUT: Duration = Duration::from_secs(45);
/// How long the local coordinator has to start answering.
const COORDINATOR_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound of everything done on one machine over SSH (connecting is bounded at 10 s).
const MACHINE_TIMEOUT: Duration = Duration::from_secs(90);
/// A progress line is printed this often while waiting for registrations.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Polling interval while waiting.
const POLL: Duration = Duration::from_millis(250);
/// Longest a TCP probe of the coordinator port takes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Start the coordinator here and a daemon on every machine of a cluster.yml, over SSH.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  adora cluster up cluster.yml\n  \
adora cluster up cluster.yml --ssh-config ./fleet-ssh-config\n\n\
The coordinator runs on this machine, bound to coordinator.addr:port of cluster.yml (an already \
running one is reused). On each machine, concurrently: checks `adora --version`, writes a \
single-use join code for it to <state_dir>/join-code (mode 0600, sent over stdin; the admin token \
never leaves this machine), and starts `adora daemon` detached with its log in \
<state_dir>/daemon.log; the daemon enrolls and keeps its certificate in <state_dir>/identity/. On a machine with the systemd unit of `cluster install` it runs \
`systemctl start adora-daemon-<id>` instead (never two daemons for one machine). Daemons that are \
already connected are left alone, so running it again is safe. Exits non-zero if any machine \
failed.")]
pub struct Args {
    /// The cluster file.
    cluster: PathBuf,
    /// An ssh_config file for every SSH connection (`ssh -F FILE`): jump hosts, special keys,
    /// host aliases.
    #[arg(long, value_name = "FILE")]
    ssh_config: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cluster = match super::common::load_cluster(&args.cluster) {
        Ok(cluster) => cluster,
        Err(code) => return Ok(code),
    };
    // `adora start` finds the machines of `distribute: scp` nodes here without `--cluster`.
    crate::commands::distribute::remember_cluster(&args.cluster);
    let client_args = ClientArgs::at(&cluster.coordinator.addr, cluster.coordinator.port);
    let mut client = ensure_coordinator(&cluster, &client_args).await?;
    let connected = connected_machines(&status(&mut client).await?);
    // One single-use join code per machine to start: machines never get the admin token.
    let to_start = cluster
        .machines
        .iter()
        .map(|m| m.id.as_str())
        .filter(|id| cluster.runs_daemon(id));
    let codes = super::join_code::machine_codes(
        &mut client,
        to_start.filter(|id| !connected.contains(*id)),
    )
    .await?;
    let (mut outcomes, sessions) =
        start_daemons(&cluster, &connected, args.ssh_config.as_ref(), &codes).await?;
    let started: Vec<usize> = (0..cluster.machines.len())
        .filter(|&i| {
            matches!(
                outcomes[i],
                Some(Outcome::Started | Outcome::ServiceStarted)
            )
        })
        .collect();
    let timeout = if started
        .iter()
        .any(|&i| outcomes[i] == Some(Outcome::ServiceStarted))
    {
        SERVICE_REGISTRATION_TIMEOUT
    } else {
        REGISTRATION_TIMEOUT
    };
    let missing = wait_for_registration(&mut client, &cluster.machines, &started, timeout).await?;
    for i in missing {
        let service = outcomes[i] == Some(Outcome::ServiceStarted);
        let session = sessions[i].as_ref();
        outcomes[i] = Some(not_registered(&cluster, i, session, service, timeout).await);
    }
    for session in sessions.into_iter().flatten() {
        session.close().await;
    }
    let router_failures =
        super::routers::start_routers(&cluster, args.ssh_config.as_ref(), &mut client).await?;
    let code = summary(&cluster.machines, &outcomes);
    if router_failures.is_empty() {
        return Ok(code);
    }
    for (site, reason) in router_failures {
        println!("  the router of site {site} failed: {reason}");
    }
    Ok(ExitCode::FAILURE)
}

/// Starts a daemon on every machine of `cluster` not in `connected`, concurrently; returns each
/// machine's outcome and its SSH session (kept to read the log of a daemon that never registers).
async fn start_daemons(
    cluster: &ClusterConfig,
    connected: &BTreeSet<String>,
    ssh_config: Option<&PathBuf>,
    codes: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<(Vec<Option<Outcome>>, Vec<Option<HostSession>>)> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; cluster.machines.len()];
    let mut sessions: Vec<Option<HostSession>> = Vec::new();
    sessions.resize_with(cluster.machines.len(), || None);
    let mut tasks = JoinSet::new();
    for (i, m) in cluster.machines.iter().enumerate() {
        if !cluster.runs_daemon(&m.id) {
            println!("{} ({}) runs only a site's router.", m.id, m.destination());
            outcomes[i] = Some(Outcome::Done);
            continue;
        }
        if connected.contains(&m.id) {
            println!(
                "Daemon on {} ({}) already connected.",
                m.id,
                m.destination()
            );
            outcomes[i] = Some(Outcome::AlreadyConnected);
            continue;
        }
        let (cluster, m) = (cluster.clone(), m.clone());
        let code = codes.get(&m.id).cloned().unwrap_or_default();
        let ssh_config = ssh_config.cloned();
        tasks.spawn(async move {
            let work = machine::start_daemon(&cluster, &m, ssh_config, &code);
            let result = tokio::time::timeout(MACHINE_TIMEOUT, work).await;
            let (outcome, session) = result.unwrap_or_else(|_| {
                let reason = format!("no answer over SSH within {MACHINE_TIMEOUT:?}");
                (
                    Outcome::failed(reason, "check the machine's load and sshd"),
                    None,
                )
            });
            (i, outcome, session)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, outcome, session) = joined.context("a machine task panicked")?;
        let m = &cluster.machines[i];
        let unit;
        let verdict = match outcome {
            Outcome::Started => "OK",
            Outcome::ServiceStarted => {
                unit = format!("OK (systemd service {})", systemd::unit_name(&m.id));
                &unit
            }
            _ => "FAILED",
        };
        println!(
            "Starting daemon on {} ({})... {verdict}",
            m.id,
            m.destination()
        );
        outcomes[i] = Some(outcome);
        sessions[i] = session;
    }
    Ok((outcomes, sessions))
}

/// The failure of machine `i`, whose daemon started (an ad-hoc one, or its systemd `service`)
/// but did not register within `timeout`: with the last lines of its log (its log file, or the
/// unit's journal, read over `session`) and what to check.
async fn not_registered(
    cluster: &ClusterConfig,
    i: usize,
    session: Option<&HostSession>,
    service: bool,
    timeout: Duration,
) -> Outcome {
    let m = &cluster.machines[i];
    let read = async {
        let session = session?;
        let out = if service {
            session.run(&machine::journal_tail_argv(m)).await
        } else {
            session.sh(&machine::log_tail_script(m)).await
        };
        out.ok().map(|out| out.stdout)
    };
    let log = read.await.unwrap_or_default();
    let source = if service {
        format!("journalctl -u {}", systemd::unit_name(&m.id))
    } else {
        format!("{}/daemon.log", machine::state_dir(m))
    };
    let mut hint = format!(
        "check that {} can reach the coordinator at {}:{} (coordinator.addr in cluster.yml, firewalls)",
        m.id, cluster.coordinator.addr, cluster.coordinator.port
    );
    if service {
        hint.push_str(
            ", and that its unit has this coordinator's token (run `cluster install` again)",
        );
    }
    Outcome::failed(
        format!(
            "the daemon did not register within {timeout:?}; last lines of {source}:\n{}",
            indent(log.trim_end(), "      ")
        ),
        hint,
    )
}

/// Connects to the coordinator of `cluster.yml`, starting it on this machine when nothing
/// listens there.
async fn ensure_coordinator(
    cluster: &ClusterConfig,
    client_args: &ClientArgs,
) -> anyhow::Result<Client> {
    let addr = format!("{}:{}", cluster.coordinator.addr, cluster.coordinator.port);
    let listening = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(&addr))
        .await
        .is_ok_and(|r| r.is_ok());
    if listening {
        let client = Client::connect(client_args).await.with_context(|| {
            format!(
                "something listens on {addr} but it is not a coordinator that accepts our token"
            )
        })?;
        println!("Coordinator already running on {addr}.");
        return Ok(client);
    }
    println!("Starting coordinator on {addr}...");
    let state = state_dir();
    std::fs::create_dir_all(&state)
        .with_context(|| format!("cannot create {}", state.display()))?;
    if let Some(pid) = up::running_pid(&up::pid_file(&state, "coordinator")) {
        bail!(
            "a coordinator started here is already running (pid {pid}) but not on {addr}; \
             stop it with `adora down` or `adora cluster down` first"
        );
    }
    let _ = std::fs::remove_file(state.join(ADDR_FILE));
    let argv = [
        "coordinator".to_owned(),
        "--addr".to_owned(),
        cluster.coordinator.addr.clone(),
        "--port".to_owned(),
        cluster.coordinator.port.to_string(),
    ];
    let mut child = up::spawn_service(&state, "coordinator", &argv)?;
    let started = Instant::now();
    loop {
        if let Ok(client) = Client::connect(client_args).await {
            return Ok(client);
        }
        if !up::still_running(&mut child) || started.elapsed() > COORDINATOR_START_TIMEOUT {
            bail!(
                "the coordinator did not start; last lines of its log:\n{}",
                up::log_tail(&state, "coordinator")
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn status(client: &mut Client) -> anyhow::Result<CoordinatorStatus> {
    match client.call(ControlRequest::Status).await? {
        ControlReply::Status(status) => Ok(status),
        other => bail!("unexpected reply to Status: {other:?}"),
    }
}

/// Machine ids of the connected daemons.
fn connected_machines(status: &CoordinatorStatus) -> BTreeSet<String> {
    status
        .daemons
        .iter()
        .filter(|d| d.connected)
        .filter_map(|d| d.machine_id.clone())
        .collect()
}

/// Waits until the daemons of `started` registered; returns the ones that did not within
/// `timeout`.
async fn wait_for_registration(
    client: &mut Client,
    machines: &[Machine],
    started: &[usize],
    timeout: Duration,
) -> anyhow::Result<Vec<usize>> {
    let begin = Instant::now();
    let mut next_progress = PROGRESS_EVERY;
    loop {
        let connected = connected_machines(&status(client).await?);
        let missing: Vec<usize> = started
            .iter()
            .copied()
            .filter(|&i| !connected.contains(&machines[i].id))
            .collect();
        if missing.is_empty() || begin.elapsed() >= timeout {
            return Ok(missing);
        }
        if begin.elapsed() >= next_progress {
            let ids: Vec<&str> = missing.iter().map(|&i| machines[i].id.as_str()).collect();
            println!(
                "Waiting for {} to connect... ({}s of {}s)",
                ids.join(", "),
                begin.elapsed().as_secs(),
                timeout.as_secs()
            );
            next_progress += PROGRESS_EVERY;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Prints the final per-machine outcome; the exit code is 1 when any machine failed.
fn summary(machines: &[Machine], outcomes: &[Option<Outcome>]) -> ExitCode {
    let failed = super::common::failed_machines(machines, outcomes);
    // Dedicated router machines (`Done`) run no daemon.
    let n = outcomes
        .iter()
        .filter(|o| !matches!(o, Some(Outcome::Done)))
        .count();
    if failed.is_empty() {
        println!("All {n} daemon{} connected.", if n == 1 { "" } else { "s" });
        return ExitCode::SUCCESS;
    }
    println!("{} of {n} daemons connected.", n - failed.len());
    println!(
        "{} machine{} failed:",
        failed.len(),
        if failed.len() == 1 { "" } else { "s" }
    );
    for (m, reason, hint) in failed {
        println!("  {} ({}): {}", m.id, m.destination(), reason);
        if let Some(hint) = hint {
            println!("    hint: {hint}");
        }
    }
    ExitCode::FAILURE
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
