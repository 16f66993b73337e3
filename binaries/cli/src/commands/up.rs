//! `adora up` / `adora down`: a local coordinator and daemon in the background, with pid and log
//! files in the state directory.

use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use adora_message::{cli_to_coordinator::ControlRequest, coordinator_to_cli::ControlReply};
use anyhow::{bail, Context};
use nix::{sys::signal::Signal, unistd::Pid};

use super::client::{Client, ClientArgs, ADDR_FILE};

/// How long `up` waits for the coordinator to listen and the daemon to register.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `down` waits after SIGTERM before SIGKILL (the daemon stops its nodes first).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);
/// Polling interval while waiting.
const POLL: Duration = Duration::from_millis(100);

/// Start a coordinator and a daemon on this machine in the background (idempotent).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  adora up\n  adora up --port 7000\n\n\
Pid and log files go to the state directory ($ADORA_STATE_DIR, else ~/.local/state/adora): \
coordinator.{pid,log}, daemon.{pid,log}, and the token file `token` (mode 0600). \
See the logs with `adora logs --coordinator` / `adora logs --daemon`.")]
pub struct UpArgs {
    /// Address the coordinator listens on.
    #[arg(long, default_value = "127.0.0.1")]
    addr: String,
    /// Port the coordinator listens on (0 picks a free one).
    #[arg(long, default_value_t = adora_client::DEFAULT_PORT)]
    port: u16,
}

/// Stop the coordinator and daemon started by `adora up` (their nodes are stopped first).
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  adora down")]
pub struct DownArgs {}

pub(super) fn pid_file(state: &Path, service: &str) -> PathBuf {
    state.join(format!("{service}.pid"))
}

/// The pid in `file` if that process is alive and is an adora process.
pub(super) fn running_pid(file: &Path) -> Option<Pid> {
    let pid: i32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    let pid = Pid::from_raw(pid);
    nix::sys::signal::kill(pid, None).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("adora")
        .then_some(pid)
}

pub(super) fn spawn_service(
    state: &Path,
    service: &str,
    args: &[String],
) -> anyhow::Result<std::process::Child> {
    let log_path = state.join(format!("{service}.log"));
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the adora executable")?;
    use std::os::unix::process::CommandExt;
    let child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0) // not killed by a Ctrl-C in the terminal that ran `adora up`
        .spawn()
        .with_context(|| format!("cannot start the {service}"))?;
    let pid = child.id();
    super::common::write_atomic(&pid_file(state, service), &format!("{pid}\n"))?;
    Ok(child)
}

/// True while the service we just spawned is running (it is our child until `up` exits).
pub(super) fn still_running(child: &mut std::process::Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

pub(super) fn log_tail(state: &Path, service: &str) -> String {
    let text = std::fs::read_to_string(state.join(format!("{service}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

pub async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let state = super::common::state_dir();
    std::fs::create_dir_all(&state)
        .with_context(|| format!("cannot create {}", state.display()))?;
    let addr_file = state.join(ADDR_FILE);
    match running_pid(&pid_file(&state, "coordinator")) {
        Some(pid) => eprintln!("coordinator already running (pid {pid})"),
        None => {
            let _ = std::fs::remove_file(&addr_file);
            let argv = [
                "coordinator",
                "--addr",
                &args.addr,
                "--port",
                &args.port.to_string(),
            ];
            let mut child = spawn_service(&state, "coordinator", &argv.map(String::from))?;
            let pid = child.id();
            let started = Instant::now();
            let progress = crate::output::Progress::start("starting the coordinator");
            while !addr_file.exists() {
                if !still_running(&mut child) || started.elapsed() > STARTUP_TIMEOUT {
                    bail!(
                        "the coordinator did not start; last lines of its log:\n{}",
                        log_tail(&state, "coordinator")
                    );
                }
                tokio::time::sleep(POLL).await;
            }
            progress.finish(true);
            eprintln!(
                "coordinator started (pid {pid}, log {})",
                state.join("coordinator.log").display()
            );
        }
    }
    let addr =
        std::fs::read_to_string(&addr_file).context("cannot read the coordinator address")?;
    let (host, port) = addr
        .trim()
        .rsplit_once(':')
        .context("malformed coordinator address file")?;
    match running_pid(&pid_file(&state, "daemon")) {
        Some(pid) => eprintln!("daemon already running (pid {pid})"),
        None => {
            let token = state.join(adora_client::token::TOKEN_FILE);
            let argv = [
                "daemon",
                "--coordinator-addr",
                host,
                "--coordinator-port",
                port,
                "--token-file",
                &token.to_string_lossy(),
            ];
            let mut child = spawn_service(&state, "daemon", &argv.map(String::from))?;
            let pid = child.id();
            let progress = crate::output::Progress::start("starting the daemon");
            wait_for_daemon(&state, &mut child).await?;
            progress.finish(true);
            eprintln!(
                "daemon started (pid {pid}, log {})",
                state.join("daemon.log").display()
            );
        }
    }
    println!("adora is up: coordinator at {}", addr.trim());
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_daemon(state: &Path, child: &mut std::process::Child) -> anyhow::Result<()> {
    let started = Instant::now();
    let client_args = ClientArgs::default();
    loop {
        if let Ok(mut client) = Client::connect(&client_args).await {
            if let Ok(ControlReply::Status(s)) = client.call(ControlRequest::Status).await {
                if s.daemons
                    .iter()
                    .any(|d| d.connected && d.machine_id.is_none())
                {
                    return Ok(());
                }
            }
        }
        if !still_running(child) || started.elapsed() > STARTUP_TIMEOUT {
            bail!(
                "the daemon did not register; last lines of its log:\n{}",
                log_tail(state, "daemon")
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

pub async fn down(_args: DownArgs) -> anyhow::Result<ExitCode> {
    let state = super::common::state_dir();
    let mut stopped = 0;
    for service in ["daemon", "coordinator"] {
        let file = pid_file(&state, service);
        if let Some(pid) = running_pid(&file) {
            stop_process(pid, service).await;
            stopped += 1;
        }
        let _ = std::fs::remove_file(&file);
    }
    if stopped == 0 {
        eprintln!("nothing to stop: no coordinator or daemon of `adora up` is running");
    } else {
        eprintln!("adora is down");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn stop_process(pid: Pid, service: &str) {
    let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
    let started = Instant::now();
    while nix::sys::signal::kill(pid, None).is_ok() && !is_zombie(pid) {
        if started.elapsed() > SHUTDOWN_TIMEOUT {
            eprintln!("the {service} (pid {pid}) did not exit after SIGTERM; killing it");
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    eprintln!("stopped the {service} (pid {pid})");
}

fn is_zombie(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}
