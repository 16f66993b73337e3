//! The [`RolloutHost`] of `adora cluster upgrade`: the remote steps as the
//! [`adora_cluster::upgrade`] scripts over one SSH session per machine — run as root (`sudo -n`
//! unless the SSH user is root) when the SSH user cannot write the install directory — and the
//! health gate's look at the machine through the coordinator (`Status` and `Nodes`).

use std::{path::PathBuf, time::Duration};

use adora_cluster::{
    as_root,
    rollout::{ClaimError, DaemonSeen, NodeSeen, Observation, RolloutHost, StepError},
    systemd, upgrade, HostSession, SshError, SshTarget,
};
use adora_core::cluster::{ClusterConfig, Machine};
use adora_message::{
    cli_to_coordinator::ControlRequest, coordinator_to_cli::ControlReply, stats::NodeStatus,
};

use super::super::machine;
use crate::commands::client::{Client, ClientArgs};

/// Lines of the daemon's log (or journal) shown when it does not come back.
const LOG_TAIL_LINES: usize = 15;
/// Upper bound of one question to the coordinator during the health gate.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The new binary and what every machine needs to receive it.
pub(super) struct SshFleet {
    /// The cluster.
    pub cluster: ClusterConfig,
    /// The coordinator.
    pub client: ClientArgs,
    /// The new binary.
    pub bytes: Vec<u8>,
    /// Its SHA-256 (hex).
    pub sha256: String,
    /// `ssh -F FILE`.
    pub ssh_config: Option<PathBuf>,
    /// This upgrade's claims on its machines, renewed until released.
    pub claims: super::claims::Claims,
}

impl SshFleet {
    /// A single-use join code bound to `machine`, from the coordinator.
    async fn join_code(&self, machine: &str) -> Result<String, StepError> {
        let failed = |e: anyhow::Error| {
            StepError::new(
                format!("cannot get a join code from the coordinator: {e:#}"),
                "check that the coordinator runs",
            )
        };
        let mut client = Client::connect(&self.client).await.map_err(failed)?;
        let codes = crate::commands::cluster::join_code::machine_codes(&mut client, [machine])
            .await
            .map_err(failed)?;
        Ok(codes.get(machine).cloned().unwrap_or_default())
    }
}

/// One machine's session and what the steps learned.
pub(super) struct Conn {
    session: HostSession,
    machine: Machine,
    /// The directory of the installed `adora`.
    dir: String,
    /// Whether writing there needs root.
    root: bool,
    /// Whether its daemon is a systemd unit (`cluster install`).
    systemd: bool,
    /// The uploaded copy, until it is swapped in.
    temp: Option<String>,
}

fn ssh_failed(e: SshError) -> StepError {
    StepError::new(e.to_string(), "check SSH access to the machine")
}

impl Conn {
    /// `argv` as the SSH user, or as root when the install directory needs it.
    fn writer(&self, argv: &[&str]) -> Vec<String> {
        if self.root {
            as_root(&self.machine.user(), argv)
        } else {
            argv.iter().map(|w| (*w).to_owned()).collect()
        }
    }

    /// Runs a script as [`Self::writer`]; its stderr is the failure.
    async fn write_sh(&self, script: &str, what: &str) -> Result<(), StepError> {
        let out = self
            .session
            .run(&self.writer(&["sh", "-c", script]))
            .await
            .map_err(ssh_failed)?;
        if out.success() {
            return Ok(());
        }
        Err(StepError::new(
            format!("{what} in {}: {}", self.dir, out.stderr.trim()),
            self.access_hint(),
        ))
    }

    fn access_hint(&self) -> String {
        if self.root {
            format!(
                "{} needs passwordless sudo on {} to write {} (SSH runs in batch mode)",
                self.machine.user(),
                self.machine.id,
                self.dir
            )
        } else {
            "check the permissions and free space of install_dir".to_owned()
        }
    }
}

impl SshFleet {
    async fn status_and_nodes(&self) -> anyhow::Result<(ControlReply, ControlReply)> {
        let mut client = Client::connect(&self.client).await?;
        let status = client.call(ControlRequest::Status).await?;
        let nodes = client
            .call(ControlRequest::Nodes { dataflow: None })
            .await?;
        Ok((status, nodes))
    }
}

impl RolloutHost for SshFleet {
    async fn claim(&self, m: &Machine, force: bool) -> Result<(), ClaimError> {
        self.claims.claim(&self.client, &m.id, force).await
    }

    async fn release(&self, m: &Machine) {
        self.claims.release(&self.client, &m.id).await
    }

    type Conn = Conn;

    async fn connect(&self, m: &Machine) -> Result<Conn, StepError> {
        let target = SshTarget::of(m, self.ssh_config.clone());
        let session = HostSession::connect(target).await.map_err(ssh_failed)?;
        let located = match session
            .sh(&upgrade::locate_script(m.install_dir.as_deref()))
            .await
        {
            Ok(out) => upgrade::parse_located(&out.stdout).ok_or_else(|| {
                StepError::new(
                    format!("cannot find the install directory: {}", out.stderr.trim()),
                    "set install_dir in cluster.yml to an absolute directory",
                )
            }),
            Err(e) => Err(ssh_failed(e)),
        };
        let enabled = session.run(&systemd::is_enabled_argv(&m.id)).await;
        let ((dir, writable), enabled) = match (located, enabled) {
            (Ok(located), Ok(enabled)) => (located, enabled),
            (Err(e), _) => return Err(close_with(session, e).await),
            (_, Err(e)) => return Err(close_with(session, ssh_failed(e)).await),
        };
        Ok(Conn {
            session,
            machine: m.clone(),
            dir,
            root: !writable && m.user() != "root",
            systemd: enabled.success(),
            temp: None,
        })
    }

    async fn observe(&self, m: &Machine) -> Result<Observation, StepError> {
        let asked = tokio::time::timeout(OBSERVE_TIMEOUT, self.status_and_nodes()).await;
        let (status, nodes) = match asked {
            Ok(Ok(replies)) => replies,
            Ok(Err(e)) => return Err(StepError::new(format!("{e:#}"), "is the coordinator up?")),
            Err(_) => return Err(StepError::new("the coordinator did not answer", "")),
        };
        let mut seen = Observation::default();
        if let ControlReply::Status(status) = status {
            seen.daemon = status
                .daemons
                .iter()
                .find(|d| d.machine_id.as_deref() == Some(&m.id))
                .map(|d| DaemonSeen {
                    connected: d.connected,
                    version: d.adora_version.clone(),
                    registered_ago: Duration::from_millis(d.registered_ms_ago),
                });
        }
        if let ControlReply::Nodes(nodes) = nodes {
            seen.nodes = nodes
                .into_iter()
                .filter(|n| n.machine == m.id)
                .map(|n| NodeSeen {
                    dataflow: n.dataflow,
                    node: n.node.to_string(),
                    running: n.status == NodeStatus::Running,
                    pid: n.pid,
                    restarts: n.restarts,
                    reported_ago: n.stats_age_ms.map(Duration::from_millis),
                })
                .collect();
        }
        Ok(seen)
    }

    async fn copy(&self, conn: &mut Conn) -> Result<(), StepError> {
        let script = upgrade::upload_script(&conn.dir);
        let out = conn
            .session
            .run_with_input(&conn.writer(&["sh", "-c", &script]), &self.bytes)
            .await
            .map_err(ssh_failed)?;
        let parsed = upgrade::parse_sha256sum(&out.stdout);
        let Some((remote, temp)) = parsed.filter(|_| out.success()) else {
            return Err(StepError::new(
                format!(
                    "copying the binary into {} failed: {}",
                    conn.dir,
                    out.stderr.trim()
                ),
                conn.access_hint(),
            ));
        };
        conn.temp = Some(temp);
        if remote != self.sha256 {
            return Err(StepError::new(
                format!(
                    "checksum mismatch: sha256 {remote} on the machine, {} here",
                    self.sha256
                ),
                "the copy was corrupted: run the upgrade again",
            ));
        }
        Ok(())
    }

    async fn check(&self, conn: &mut Conn) -> Result<String, StepError> {
        let temp = conn.temp.clone().unwrap_or_default();
        let out = conn
            .session
            .run(&[temp.as_str(), "--version"])
            .await
            .map_err(ssh_failed)?;
        let version = machine::parse_version(&out.stdout).map(str::to_owned);
        let Some(version) = version.filter(|_| out.success()) else {
            return Err(StepError::new(
                format!(
                    "the new binary does not run there (`adora --version`: {})",
                    out.stderr.trim()
                ),
                "build it for the machine's architecture and libc",
            ));
        };
        let ours = adora_message::ADORA_VERSION;
        if !machine::compatible(ours, &version) {
            return Err(StepError::new(
                format!("adora {version} cannot talk to the coordinator (adora {ours})"),
                "upgrade across minor versions with `cluster down`, a new coordinator, `cluster up`",
            ));
        }
        Ok(version)
    }

    async fn swap(&self, conn: &mut Conn) -> Result<(), StepError> {
        let temp = conn.temp.clone().unwrap_or_default();
        let script = upgrade::swap_script(&conn.dir, &temp);
        conn.write_sh(&script, "cannot rename the new binary into place")
            .await?;
        conn.temp = None;
        Ok(())
    }

    async fn restart(&self, conn: &mut Conn) -> Result<(), StepError> {
        let m = &conn.machine;
        let out = if conn.systemd {
            let script = upgrade::restart_unit_script(&systemd::unit_name(&m.id));
            conn.session
                .run(&as_root(&m.user(), &["sh", "-c", &script]))
                .await
        } else {
            let state = adora_cluster::quote::path(machine::state_dir(m));
            let script = format!(
                "{}{}",
                upgrade::kill_ad_hoc_script(&state),
                machine::start_script(&self.cluster, m)
            );
            // A daemon that enrolled restarts with its identity and ignores the code; one that
            // never ran (`upgrade --binary` as the first install) enrolls with it.
            let code = self.join_code(&m.id).await?;
            conn.session.sh_with_stdin(&script, code.as_bytes()).await
        }
        .map_err(ssh_failed)?;
        if out.success() {
            return Ok(());
        }
        Err(StepError::new(
            format!("the daemon did not restart: {}", out.stderr.trim()),
            "see the daemon's log on the machine",
        ))
    }

    async fn revert(&self, conn: &mut Conn) -> Result<(), StepError> {
        let script = upgrade::revert_script(&conn.dir);
        conn.write_sh(&script, "cannot put the previous binary back")
            .await?;
        self.restart(conn).await
    }

    async fn discard(&self, conn: &mut Conn) {
        if let Some(temp) = conn.temp.take() {
            let argv = upgrade::cleanup_argv(&temp);
            let words: Vec<&str> = argv.iter().map(String::as_str).collect();
            let _ = conn.session.run(&conn.writer(&words)).await;
        }
    }

    async fn daemon_log(&self, conn: &mut Conn) -> String {
        let m = &conn.machine;
        let out = if conn.systemd {
            let unit = systemd::unit_name(&m.id);
            let lines = LOG_TAIL_LINES.to_string();
            let argv = ["journalctl", "-u", &unit, "-n", &lines, "--no-pager"];
            conn.session.run(&as_root(&m.user(), &argv)).await
        } else {
            conn.session.sh(&machine::log_tail_script(m)).await
        };
        let text = out.map(|o| o.stdout).unwrap_or_default();
        let source = if conn.systemd {
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

    async fn close(&self, conn: Conn) {
        conn.session.close().await;
    }
}

/// Closes a session that failed half-way through connecting; returns the failure.
async fn close_with(session: HostSession, e: StepError) -> StepError {
    session.close().await;
    e
}
