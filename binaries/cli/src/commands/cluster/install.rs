//! `adora cluster install|uninstall cluster.yml`: the daemon of every machine as a systemd unit
//! `adora-daemon-<id>.service`, so it survives reboots and crashes.
//!
//! On each machine, concurrently, over one SSH session:
//!
//! 1. as the SSH user (the unit's `User=`): [`systemd::probe_script`] — `$HOME` and the absolute
//!    path of `adora` (`install_dir` first, else `command -v adora`, resolved with `readlink -f`);
//! 2. the unit is rendered here ([`systemd::DaemonUnit`]) with that path and the daemon flags of
//!    `cluster up`;
//! 3. as root (`sudo -n` unless the SSH user is root): [`systemd::install_script`] with the
//!    environment file (the token) on stdin — never on a command line.
//!
//! `--print ID` renders the unit without SSH, for review or a manual install.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use adora_cluster::{
    daemon_args, install,
    systemd::{self, DaemonUnit},
    HostSession, SshTarget,
};
use adora_core::cluster::{ClusterConfig, Machine};
use anyhow::Context;
use tokio::task::JoinSet;

use super::{
    common::{load_cluster, print_outcomes, print_outcomes_json, Outcome},
    machine,
};
use crate::commands::{
    client::{Client, ClientArgs},
    common::EXIT_INVALID,
};

/// Upper bound of everything done on one machine over SSH.
const MACHINE_TIMEOUT: Duration = Duration::from_secs(90);
/// `ExecStart` of `install --print` when `install_dir` is not an absolute path.
const PRINT_DEFAULT_BINARY: &str = "/usr/local/bin/adora";

/// Install the daemon of every machine of a cluster.yml as a systemd unit (enabled and started).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  adora cluster install cluster.yml\n  \
adora cluster install cluster.yml --print robot > adora-daemon-robot.service\n\n\
Installs /etc/systemd/system/adora-daemon-<id>.service on every machine (concurrently), with \
ExecStart= the absolute path of the adora found on the machine (install_dir first) and the daemon \
flags of `cluster up`, and a single-use join code for the machine in \
/etc/adora/adora-daemon-<id>.env (mode 0600, root only): the daemon enrolls with it once and keeps \
its own certificate; the admin token never leaves this machine. Then `systemctl daemon-reload` \
and `enable --now`. A daemon a `cluster up` started there is stopped first. Needs root or \
passwordless sudo on the machines, and the cluster's coordinator running (it issues the codes).")]
pub struct InstallArgs {
    /// The cluster file.
    cluster: PathBuf,
    /// Print the unit of machine ID instead of installing anything (no SSH).
    #[arg(long, value_name = "ID")]
    print: Option<String>,
    /// An ssh_config file for every SSH connection (`ssh -F FILE`).
    #[arg(long, value_name = "FILE")]
    ssh_config: Option<PathBuf>,
    /// Print the per-machine outcome as JSON on stdout (progress goes to stderr).
    #[arg(long)]
    json: bool,
}

/// Stop, disable and remove the systemd unit of every machine of a cluster.yml.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  adora cluster uninstall cluster.yml\n\n\
Runs `systemctl disable --now adora-daemon-<id>.service` on every machine, removes the unit and \
its environment file and reloads systemd.")]
pub struct UninstallArgs {
    /// The cluster file.
    cluster: PathBuf,
    /// An ssh_config file for every SSH connection (`ssh -F FILE`).
    #[arg(long, value_name = "FILE")]
    ssh_config: Option<PathBuf>,
    /// Print the per-machine outcome as JSON on stdout (progress goes to stderr).
    #[arg(long)]
    json: bool,
}

/// The unit of `machine`, with `adora` at `adora_path` and `~/` in `state_dir` expanded to `home`.
pub(crate) fn render_unit(
    cluster: &ClusterConfig,
    machine: &Machine,
    adora_path: &str,
    home: &str,
) -> anyhow::Result<String> {
    let args = daemon_args(cluster, machine);
    let user = machine.user();
    let state_dir = expand_home(machine::state_dir(machine), home);
    Ok(DaemonUnit {
        machine_id: &machine.id,
        adora_path,
        args: &args,
        user: Some(&user),
        state_dir: Some(&state_dir),
    }
    .render()?)
}

fn expand_home(path: &str, home: &str) -> String {
    match path.strip_prefix("~/") {
        Some(rest) => format!("{}/{rest}", home.trim_end_matches('/')),
        None if path == "~" => home.to_owned(),
        None => path.to_owned(),
    }
}

/// The home directory `--print` assumes for `user` (install asks the machine).
fn assumed_home(user: &str) -> String {
    if user == "root" {
        "/root".to_owned()
    } else {
        format!("/home/{user}")
    }
}

pub async fn install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    let cluster = match load_cluster(&args.cluster) {
        Ok(cluster) => cluster,
        Err(code) => return Ok(code),
    };
    if let Some(id) = &args.print {
        return print(&cluster, id);
    }
    // Like `cluster up`: later `adora start`s copy `distribute: scp` nodes to these machines.
    crate::commands::distribute::remember_cluster(&args.cluster);
    // One single-use join code per machine, from the running coordinator: the unit gets it,
    // never the admin token.
    let client_args = ClientArgs::at(&cluster.coordinator.addr, cluster.coordinator.port);
    let mut client = Client::connect(&client_args).await.context(
        "`cluster install` needs the cluster's coordinator running (`adora cluster up \
         cluster.yml` starts it): each machine gets a join code from it",
    )?;
    let codes = super::join_code::machine_codes(
        &mut client,
        cluster.machines.iter().map(|m| m.id.as_str()),
    )
    .await?;
    let mut tasks = JoinSet::new();
    for (i, m) in cluster.machines.iter().enumerate() {
        let (cluster, m, ssh_config, token) = (
            cluster.clone(),
            m.clone(),
            args.ssh_config.clone(),
            codes.get(&m.id).cloned().unwrap_or_default(),
        );
        tasks.spawn(async move {
            let work = install_on(&cluster, &m, ssh_config, &token);
            (i, bounded(work).await)
        });
    }
    let outcomes = collect(&cluster, tasks, "Installing", args.json).await?;
    Ok(report(&cluster.machines, &outcomes, "installed", args.json))
}

pub async fn uninstall(args: UninstallArgs) -> anyhow::Result<ExitCode> {
    let cluster = match load_cluster(&args.cluster) {
        Ok(cluster) => cluster,
        Err(code) => return Ok(code),
    };
    let mut tasks = JoinSet::new();
    for (i, m) in cluster.machines.iter().enumerate() {
        let (m, ssh_config) = (m.clone(), args.ssh_config.clone());
        tasks.spawn(async move { (i, bounded(uninstall_on(&m, ssh_config)).await) });
    }
    let outcomes = collect(&cluster, tasks, "Uninstalling", args.json).await?;
    Ok(report(
        &cluster.machines,
        &outcomes,
        "uninstalled",
        args.json,
    ))
}

fn print(cluster: &ClusterConfig, id: &str) -> anyhow::Result<ExitCode> {
    let Some(m) = cluster.machine(id) else {
        let ids: Vec<&str> = cluster.machines.iter().map(|m| m.id.as_str()).collect();
        eprintln!(
            "error: no machine `{id}` in the cluster file (machines: {})",
            ids.join(", ")
        );
        return Ok(ExitCode::from(EXIT_INVALID));
    };
    let binary = match m.install_dir.as_deref() {
        Some(dir) if dir.starts_with('/') => format!("{}/adora", dir.trim_end_matches('/')),
        _ => {
            eprintln!(
                "note: ExecStart assumes {PRINT_DEFAULT_BINARY}; `cluster install` uses the \
                 absolute path of the adora it finds on {id}"
            );
            PRINT_DEFAULT_BINARY.to_owned()
        }
    };
    let home = assumed_home(&m.user());
    if machine::state_dir(m).starts_with('~') {
        eprintln!("note: `~` of state_dir assumed to be {home}");
    }
    print!("{}", render_unit(cluster, m, &binary, &home)?);
    Ok(ExitCode::SUCCESS)
}

/// Bounds one machine's work by [`MACHINE_TIMEOUT`].
async fn bounded(work: impl std::future::Future<Output = Outcome>) -> Outcome {
    tokio::time::timeout(MACHINE_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Outcome::failed(
                format!("no answer over SSH within {MACHINE_TIMEOUT:?}"),
                "check the machine's load and sshd",
            )
        })
}

/// The per-machine outcome: JSON on stdout with `json`, else the `N/M <verb>` summary.
fn report(machines: &[Machine], outcomes: &[Option<Outcome>], verb: &str, json: bool) -> ExitCode {
    if json {
        print_outcomes_json(machines, outcomes)
    } else {
        print_outcomes(machines, outcomes, verb)
    }
}

/// Prints `<verb> adora-daemon-<id>.service on <id> (<dest>)... OK|FAILED` as machines finish
/// (on stderr with `json`, where stdout carries the JSON only).
async fn collect(
    cluster: &ClusterConfig,
    mut tasks: JoinSet<(usize, Outcome)>,
    verb: &str,
    json: bool,
) -> anyhow::Result<Vec<Option<Outcome>>> {
    let mut outcomes = vec![None; cluster.machines.len()];
    while let Some(joined) = tasks.join_next().await {
        let (i, outcome) = joined.context("a machine task panicked")?;
        let m = &cluster.machines[i];
        let verdict = match &outcome {
            Outcome::Failed { .. } => "FAILED",
            Outcome::NotInstalled => "not installed",
            _ => "OK",
        };
        let line = format!(
            "{verb} {} on {} ({})... {verdict}",
            systemd::unit_name(&m.id),
            m.id,
            m.destination()
        );
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
        outcomes[i] = Some(outcome);
    }
    Ok(outcomes)
}

async fn install_on(
    cluster: &ClusterConfig,
    m: &Machine,
    ssh_config: Option<PathBuf>,
    token: &str,
) -> Outcome {
    let session = match HostSession::connect(SshTarget::of(m, ssh_config)).await {
        Ok(session) => session,
        Err(e) => return Outcome::failed(e.to_string(), "check SSH access to the machine"),
    };
    let render = |probe: &install::Probe| {
        let unit =
            render_unit(cluster, m, &probe.binary, &probe.home).map_err(|e| e.to_string())?;
        let state = expand_home(machine::state_dir(m), &probe.home);
        let pid_file = format!("{}/daemon.pid", state.trim_end_matches('/'));
        Ok(install::Rendered { unit, pid_file })
    };
    let progress = |step| tracing::debug!("{}: {step:?}", m.id);
    let outcome = match install::install(&session, m, render, token, &progress).await {
        Ok(()) => Outcome::Done,
        Err(e) => Outcome::failed(e.to_string(), e.hint()),
    };
    session.close().await;
    outcome
}

async fn uninstall_on(m: &Machine, ssh_config: Option<PathBuf>) -> Outcome {
    let session = match HostSession::connect(SshTarget::of(m, ssh_config)).await {
        Ok(session) => session,
        Err(e) => return Outcome::failed(e.to_string(), "check SSH access to the machine"),
    };
    let progress = |step| tracing::debug!("{}: {step:?}", m.id);
    let outcome = match install::uninstall(&session, m, &progress).await {
        Ok(install::Uninstalled::Removed) => Outcome::Done,
        Ok(install::Uninstalled::WasNotInstalled) => Outcome::NotInstalled,
        Err(e) => Outcome::failed(e.to_string(), e.hint()),
    };
    session.close().await;
    outcome
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn printed_unit_is_the_daemon_of_cluster_up_line_by_line() {
        let c = ClusterConfig::parse(
            "coordinator: { addr: 10.0.0.1, port: 7000 }\nmachines:\n  \
             - { id: robot, host: r, user: ubuntu, labels: { arch: arm64 }, install_dir: /opt/adora/bin, state_dir: ~/adora-state }\n",
            Path::new("cluster.yml"),
        )
        .expect("valid");
        let m = &c.machines[0];
        let unit = render_unit(&c, m, "/opt/adora/bin/adora", "/home/ubuntu").expect("renders");
        assert_eq!(
            unit.lines().collect::<Vec<_>>(),
            [
                "[Unit]",
                "Description=Adora daemon (machine robot)",
                "After=network-online.target",
                "Wants=network-online.target",
                "",
                "[Service]",
                "Type=simple",
                "ExecStart=/opt/adora/bin/adora daemon --machine-id robot --coordinator-addr 10.0.0.1 --coordinator-port 7000 --labels arch=arm64 --quiet",
                "EnvironmentFile=/etc/adora/adora-daemon-robot.env",
                "Environment=ADORA_STATE_DIR=/home/ubuntu/adora-state",
                "User=ubuntu",
                "Restart=on-failure",
                "RestartSec=5",
                "",
                "[Install]",
                "WantedBy=multi-user.target",
            ]
        );
        assert!(render_unit(&c, m, "adora", "/h").is_err());
        assert_eq!(assumed_home("root"), "/root");
        assert_eq!(expand_home("~", "/root"), "/root");
        assert_eq!(expand_home("/var/lib/a", "/root"), "/var/lib/a");
    }
}
