//! `adora cluster upgrade cluster.yml [--binary PATH]`: a rolling upgrade, one machine at a time.
//!
//! Per machine, over one SSH session (scripts in [`adora_cluster::upgrade`]):
//! copy the binary into a temporary file next to the installed `adora` (streamed over the
//! session's stdin), compare its remote `sha256sum` with ours, run `<temp> --version` there,
//! rename it over `adora` (the old one kept as `adora.previous`), restart the daemon — with
//! `systemctl restart` when its unit is enabled, else like `cluster up` (stop the detached daemon
//! from its pid file, start a new one) — and wait until the coordinator sees it registered again
//! *after* the restart with the new version. The first machine that fails stops the rollout; the
//! machines after it are not touched.
//!
//! Nodes on the machine being upgraded die with their daemon (parent-death signal); the
//! coordinator's auto-recovery re-spawns them once the daemon is back. Nodes elsewhere keep
//! running.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use adora_cluster::{as_root, systemd, upgrade, HostSession, SshError, SshTarget};
use adora_core::cluster::{ClusterConfig, Machine};
use adora_message::{cli_to_coordinator::ControlRequest, coordinator_to_cli::ControlReply};
use anyhow::{bail, Context};

use super::{
    common::{load_cluster, Outcome},
    machine,
};
use crate::commands::client::{Client, ClientArgs};

/// How long a restarted daemon has to register again with the new version.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Polling interval while waiting for the reconnect.
const POLL: Duration = Duration::from_millis(250);
/// Lines of the daemon's log (or journal) shown when it does not come back.
const LOG_TAIL_LINES: usize = 15;

/// Replace the adora binary of every machine of a cluster.yml, one machine at a time.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora cluster upgrade cluster.yml --binary target/release/adora\n  \
adora cluster upgrade cluster.yml --binary ./adora-aarch64 --ssh-config ./fleet-ssh-config\n\n\
For each machine in turn: copy the binary next to the installed adora (install_dir, else the one \
on PATH, else ~/.local/bin), verify its SHA-256 there, check `adora --version`, swap it in with \
an atomic rename (the old one stays as adora.previous), restart the daemon (systemd when \
`cluster install` set it up, else the detached daemon of `cluster up`) and wait up to 30 s for it \
to reconnect with the new version. Stops at the first machine that fails; the others keep the \
old version. Nodes on the restarted machine come back through the coordinator's auto-recovery."
)]
pub struct Args {
    /// The cluster file.
    cluster: PathBuf,
    /// The new adora binary (built for the machines' architecture) [default: this adora].
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// An ssh_config file for every SSH connection (`ssh -F FILE`).
    #[arg(long, value_name = "FILE")]
    ssh_config: Option<PathBuf>,
}

/// The new binary and what every machine needs to receive it.
struct Upgrade {
    cluster: ClusterConfig,
    client: ClientArgs,
    token: String,
    bytes: Vec<u8>,
    sha256: String,
    ssh_config: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cluster = match load_cluster(&args.cluster) {
        Ok(cluster) => cluster,
        Err(code) => return Ok(code),
    };
    let binary = match args.binary {
        Some(path) => path,
        None => std::env::current_exe().context("cannot find this adora binary")?,
    };
    let (bytes, sha256) = read_binary(&binary).await?;
    let client = ClientArgs::at(&cluster.coordinator.addr, cluster.coordinator.port);
    // Fail before touching any machine when the coordinator is not there to confirm reconnects.
    Client::connect(&client).await.context(
        "the coordinator of cluster.yml does not answer: upgrade a running cluster (`adora cluster up` first)",
    )?;
    let token = client
        .token()?
        .context("no cluster token found (ADORA_TOKEN or the local state directory)")?;
    let n = cluster.machines.len();
    println!(
        "Rolling upgrade of {n} machine{} to {} ({:.1} MB, sha256 {}), one at a time.",
        if n == 1 { "" } else { "s" },
        binary.display(),
        bytes.len() as f64 / 1e6,
        &sha256[..12]
    );
    let up = Upgrade {
        cluster,
        client,
        token,
        bytes,
        sha256,
        ssh_config: args.ssh_config,
    };
    let succeeded = roll(&up).await?;
    println!("{succeeded}/{n} succeeded.");
    Ok(if succeeded == n {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The new binary's bytes and SHA-256 (hex), hashed off the async runtime.
async fn read_binary(binary: &Path) -> anyhow::Result<(Vec<u8>, String)> {
    let bytes = tokio::fs::read(binary)
        .await
        .with_context(|| format!("cannot read {}", binary.display()))?;
    let hash_path = binary.to_owned();
    let sha256 = tokio::task::spawn_blocking(move || upgrade::sha256_file(&hash_path))
        .await
        .context("hashing task panicked")?
        .with_context(|| format!("cannot hash {}", binary.display()))?;
    Ok((bytes, sha256))
}

/// Upgrades the machines one at a time, stopping at the first failure; returns how many
/// succeeded.
async fn roll(up: &Upgrade) -> anyhow::Result<usize> {
    let mut succeeded = 0;
    for (i, m) in up.cluster.machines.iter().enumerate() {
        println!("Upgrading {} ({})...", m.id, m.destination());
        let begin = Instant::now();
        match upgrade_machine(up, m).await {
            Ok(version) => {
                succeeded += 1;
                println!(
                    "  {} now runs adora {version} ({:.1}s)",
                    m.id,
                    begin.elapsed().as_secs_f64()
                );
            }
            Err(Outcome::Failed { reason, hint }) => {
                println!(
                    "Upgrade stopped at {} ({}): {reason}",
                    m.id,
                    m.destination()
                );
                if let Some(hint) = hint {
                    println!("  hint: {hint}");
                }
                let rest: Vec<&str> = up.cluster.machines[i + 1..]
                    .iter()
                    .map(|m| m.id.as_str())
                    .collect();
                if !rest.is_empty() {
                    println!(
                        "Not touched (still on the old version): {}",
                        rest.join(", ")
                    );
                }
                break;
            }
            Err(other) => bail!("unexpected outcome {other:?}"),
        }
    }
    Ok(succeeded)
}

/// Prints `  <label>... ` now and `OK (<secs>)` or `FAILED` when `work` ends.
async fn step<T>(
    label: &str,
    work: impl std::future::Future<Output = Result<T, Outcome>>,
) -> Result<T, Outcome> {
    print!("  {label}... ");
    let _ = std::io::stdout().flush();
    let begin = Instant::now();
    let result = work.await;
    match &result {
        Ok(_) => println!("OK ({:.1}s)", begin.elapsed().as_secs_f64()),
        Err(_) => println!("FAILED ({:.1}s)", begin.elapsed().as_secs_f64()),
    }
    result
}

fn ssh_failed(e: SshError) -> Outcome {
    Outcome::failed(e.to_string(), "check SSH access to the machine")
}

/// Upgrades one machine; returns the version its daemon reconnected with.
async fn upgrade_machine(up: &Upgrade, m: &Machine) -> Result<String, Outcome> {
    let target = SshTarget::of(m, up.ssh_config.clone());
    let session = HostSession::connect(target).await.map_err(ssh_failed)?;
    let result = upgrade_over(up, m, &session).await;
    session.close().await;
    result
}

async fn upgrade_over(up: &Upgrade, m: &Machine, session: &HostSession) -> Result<String, Outcome> {
    let located = session
        .sh(&upgrade::locate_script(m.install_dir.as_deref()))
        .await
        .map_err(ssh_failed)?;
    let dir = located.stdout.trim().to_owned();
    if !located.success() || !dir.starts_with('/') {
        return Err(Outcome::failed(
            format!(
                "cannot prepare the install directory: {}",
                located.stderr.trim()
            ),
            "set install_dir in cluster.yml to a directory the SSH user can write",
        ));
    }
    let temp = step("Copy binary", copy(up, session, &dir)).await?;
    let version = step("Check new binary", check_binary(session, &temp)).await;
    let version = match version {
        Ok(version) => version,
        Err(e) => {
            let _ = session.run(&upgrade::cleanup_argv(&temp)).await;
            return Err(e);
        }
    };
    step("Swap binary", async {
        let out = session
            .sh(&upgrade::swap_script(&dir, &temp))
            .await
            .map_err(ssh_failed)?;
        if out.success() {
            Ok(())
        } else {
            Err(Outcome::failed(
                format!(
                    "cannot rename the new binary into {dir}: {}",
                    out.stderr.trim()
                ),
                "check the permissions of install_dir",
            ))
        }
    })
    .await?;
    let restarted = Instant::now();
    let systemd = step("Restart", restart(up, m, session, &dir)).await?;
    let rollback = rollback_hint(m, &dir, systemd);
    let wait = wait_for_reconnect(up, m, &version, restarted);
    match step("Waiting for reconnect", wait).await {
        Ok(()) => Ok(version),
        Err(Outcome::Failed { reason, .. }) => {
            let log = daemon_log(m, session, systemd).await;
            Err(Outcome::failed(format!("{reason}; {log}"), rollback))
        }
        Err(other) => Err(other),
    }
}

/// Streams the binary into a temporary file next to `adora` and verifies its SHA-256 there;
/// returns the temporary path.
async fn copy(up: &Upgrade, session: &HostSession, dir: &str) -> Result<String, Outcome> {
    let script = upgrade::upload_script(dir);
    let out = session
        .run_with_input(&["sh", "-c", &script], &up.bytes)
        .await
        .map_err(ssh_failed)?;
    let parsed = upgrade::parse_sha256sum(&out.stdout);
    let Some((remote, temp)) = parsed.filter(|_| out.success()) else {
        return Err(Outcome::failed(
            format!("copying the binary failed: {}", out.stderr.trim()),
            "check free space in install_dir and that `sha256sum` exists there",
        ));
    };
    if remote != up.sha256 {
        let _ = session.run(&upgrade::cleanup_argv(&temp)).await;
        return Err(Outcome::failed(
            format!(
                "checksum mismatch: sha256 {remote} on the machine, {} here",
                up.sha256
            ),
            "the copy was corrupted: run the upgrade again",
        ));
    }
    Ok(temp)
}

/// Runs `<temp> --version` on the machine: the binary runs there, and says which version to wait
/// for; refused when the coordinator could not talk to it.
async fn check_binary(session: &HostSession, temp: &str) -> Result<String, Outcome> {
    let out = session
        .run(&[temp, "--version"])
        .await
        .map_err(ssh_failed)?;
    let version = machine::parse_version(&out.stdout).map(str::to_owned);
    let Some(version) = version.filter(|_| out.success()) else {
        return Err(Outcome::failed(
            format!(
                "the new binary does not run there (`adora --version`: {})",
                out.stderr.trim()
            ),
            "build it for the machine's architecture and libc",
        ));
    };
    let ours = adora_message::ADORA_VERSION;
    if !machine::compatible(ours, &version) {
        return Err(Outcome::failed(
            format!("adora {version} cannot talk to the coordinator (adora {ours})"),
            "upgrade across minor versions with `cluster down`, a new coordinator, `cluster up`",
        ));
    }
    Ok(version)
}

/// Restarts the daemon; returns whether systemd runs it.
async fn restart(
    up: &Upgrade,
    m: &Machine,
    session: &HostSession,
    dir: &str,
) -> Result<bool, Outcome> {
    let enabled = session
        .run(&systemd::is_enabled_argv(&m.id))
        .await
        .map_err(ssh_failed)?;
    let out = if enabled.success() {
        let unit = systemd::unit_name(&m.id);
        session
            .run(&as_root(&m.user(), &["systemctl", "restart", &unit]))
            .await
    } else {
        let script = machine::start_script(&up.cluster, m);
        session.sh_with_stdin(&script, up.token.as_bytes()).await
    }
    .map_err(ssh_failed)?;
    if out.success() {
        Ok(enabled.success())
    } else {
        Err(Outcome::failed(
            format!("the daemon did not restart: {}", out.stderr.trim()),
            rollback_hint(m, dir, enabled.success()),
        ))
    }
}

/// Waits until the daemon of `m` registered after `restarted` with `version`.
async fn wait_for_reconnect(
    up: &Upgrade,
    m: &Machine,
    version: &str,
    restarted: Instant,
) -> Result<(), Outcome> {
    let mut seen = String::from("never registered");
    let begin = Instant::now();
    while begin.elapsed() < RECONNECT_TIMEOUT {
        if let Ok(mut client) = Client::connect(&up.client).await {
            if let Ok(ControlReply::Status(status)) = client.call(ControlRequest::Status).await {
                let daemon = status
                    .daemons
                    .iter()
                    .find(|d| d.machine_id.as_deref() == Some(&m.id));
                if let Some(d) = daemon {
                    let fresh = u128::from(d.registered_ms_ago) < restarted.elapsed().as_millis();
                    if d.connected && fresh && d.adora_version == version {
                        return Ok(());
                    }
                    seen = match (d.connected, fresh) {
                        (true, true) => format!("reconnected with adora {}", d.adora_version),
                        (true, false) => "the old connection is still open".into(),
                        (false, _) => "disconnected".into(),
                    };
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
    Err(Outcome::Failed {
        reason: format!(
            "the daemon did not reconnect with adora {version} within {RECONNECT_TIMEOUT:?} ({seen})"
        ),
        hint: None,
    })
}

/// The end of the daemon's log (ad-hoc daemon) or journal (systemd), for the failure message.
async fn daemon_log(m: &Machine, session: &HostSession, systemd: bool) -> String {
    let out = if systemd {
        let unit = systemd::unit_name(&m.id);
        let lines = LOG_TAIL_LINES.to_string();
        let argv = ["journalctl", "-u", &unit, "-n", &lines, "--no-pager"];
        session.run(&as_root(&m.user(), &argv)).await
    } else {
        session.sh(&machine::log_tail_script(m)).await
    };
    let text = out.map(|o| o.stdout).unwrap_or_default();
    let source = if systemd {
        "its journal".to_owned()
    } else {
        format!("{}/daemon.log", machine::state_dir(m))
    };
    let lines: Vec<String> = text
        .trim_end()
        .lines()
        .map(|l| format!("    {l}"))
        .collect();
    format!("last lines of {source}:\n{}", lines.join("\n"))
}

fn rollback_hint(m: &Machine, dir: &str, systemd: bool) -> String {
    let restart = if systemd {
        format!("sudo systemctl restart {}", systemd::unit_name(&m.id))
    } else {
        "adora cluster up cluster.yml".to_owned()
    };
    format!(
        "the previous binary is kept on {}: `mv {dir}/{} {dir}/adora` there, then `{restart}`",
        m.id,
        upgrade::PREVIOUS
    )
}
