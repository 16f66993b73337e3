//! Installing a machine's daemon as a systemd unit, and removing it, as explicit steps driven
//! through a [`Remote`] (the SSH session; a fake in unit tests): **probe** where `adora` and the
//! SSH user's home are → **render** the unit (the caller's renderer: it knows the daemon's flags)
//! → **install** unit and token file as root (`sudo -n` for other users) and enable it. The CLI
//! only connects, reports progress and renders the outcome.

use std::future::Future;

use adora_core::cluster::Machine;

use crate::{
    as_root,
    installed::{self, NotInstalled},
    systemd::{self, SYSTEM_PATHS},
    HostSession, RemoteOutput, SshError,
};

/// What the install and uninstall steps need of a machine.
pub trait Remote {
    /// Runs `script` with `sh -c` as the SSH user.
    fn sh(&self, script: &str) -> impl Future<Output = Result<RemoteOutput, SshError>> + Send;
    /// Runs `argv`, feeding `stdin`.
    fn run_with_input(
        &self,
        argv: &[String],
        stdin: &[u8],
    ) -> impl Future<Output = Result<RemoteOutput, SshError>> + Send;
}

impl Remote for HostSession {
    fn sh(&self, script: &str) -> impl Future<Output = Result<RemoteOutput, SshError>> + Send {
        HostSession::sh(self, script)
    }

    fn run_with_input(
        &self,
        argv: &[String],
        stdin: &[u8],
    ) -> impl Future<Output = Result<RemoteOutput, SshError>> + Send {
        HostSession::run_with_input(self, argv, stdin)
    }
}

/// A step of [`install`] or [`uninstall`], for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Finding `adora` (install_dir first, else the PATH) and the SSH user's home.
    Probe,
    /// Rendering the unit.
    Render,
    /// Writing unit and token file as root, `daemon-reload`, `enable --now`.
    Install,
    /// `disable --now`, removing unit and token file, `daemon-reload`.
    Uninstall,
}

/// What the probe found on a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The SSH user's home (`~/` in `state_dir` expands to it).
    pub home: String,
    /// The absolute path of `adora` there (systemd needs an absolute `ExecStart`).
    pub binary: String,
}

/// A rendered unit: its text, and the pid file of an ad-hoc daemon to stop first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The unit file.
    pub unit: String,
    /// Where a daemon `cluster up` started there records its pid.
    pub pid_file: String,
}

/// Why installing or uninstalling a machine's daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// SSH failed.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// `adora` is not on the machine.
    #[error(transparent)]
    NotInstalled(#[from] NotInstalled),
    /// The probe ran but found no absolute path of `adora`.
    #[error("`adora` is not installed on {machine}")]
    NoBinary {
        /// Machine id.
        machine: String,
    },
    /// The unit could not be rendered.
    #[error("{0}")]
    Render(String),
    /// The root part (systemd, files) failed.
    #[error("the systemd setup failed: {stderr}")]
    Root {
        /// The SSH user.
        user: String,
        /// Machine id.
        machine: String,
        /// What the script printed on stderr.
        stderr: String,
    },
}

impl InstallError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            InstallError::Ssh(_) => "check SSH access to the machine".into(),
            InstallError::NotInstalled(e) => e.hint(),
            InstallError::NoBinary { .. } => "install it there (or `adora cluster upgrade \
                 --binary`), or set install_dir in cluster.yml"
                .into(),
            InstallError::Render(_) => "set install_dir to an absolute path".into(),
            InstallError::Root {
                user,
                machine,
                stderr,
            } => {
                if stderr.contains("sudo") {
                    format!(
                        "{user} needs passwordless sudo on {machine} (SSH runs in batch mode), \
                         or use user: root"
                    )
                } else {
                    "is systemd running there (`systemctl is-system-running`)?".into()
                }
            }
        }
    }
}

/// How [`uninstall`] left a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uninstalled {
    /// The unit was stopped and removed.
    Removed,
    /// There was no unit.
    WasNotInstalled,
}

/// Finds `adora` and the SSH user's home on `m`.
pub async fn probe<R: Remote>(remote: &R, m: &Machine) -> Result<Probe, InstallError> {
    let out = remote
        .sh(&systemd::probe_script(m.install_dir.as_deref()))
        .await?;
    if let Some(missing) = installed::not_installed(m, &out) {
        return Err(missing.into());
    }
    let mut lines = out.stdout.lines();
    let home = lines.next().unwrap_or_default().to_owned();
    match lines.next() {
        Some(binary) if out.success() && binary.starts_with('/') => Ok(Probe {
            home,
            binary: binary.to_owned(),
        }),
        _ => Err(InstallError::NoBinary {
            machine: m.id.clone(),
        }),
    }
}

/// Installs the daemon of `m` as a systemd unit: probe, `render`, install as root with the token
/// (sent on stdin, never on a command line). `progress` hears each step as it starts.
pub async fn install<R: Remote>(
    remote: &R,
    m: &Machine,
    render: impl FnOnce(&Probe) -> Result<Rendered, String>,
    token: &str,
    progress: &(dyn Fn(Step) + Sync),
) -> Result<(), InstallError> {
    progress(Step::Probe);
    let found = probe(remote, m).await?;
    progress(Step::Render);
    let rendered = render(&found).map_err(InstallError::Render)?;
    progress(Step::Install);
    let script = systemd::install_script(&m.id, &rendered.unit, &rendered.pid_file, SYSTEM_PATHS);
    let argv = as_root(&m.user(), &["sh", "-c", &script]);
    let env = systemd::env_file_contents(token);
    let out = remote.run_with_input(&argv, env.as_bytes()).await?;
    root_result(m, out).map(drop)
}

/// Stops, disables and removes the unit of `m`.
pub async fn uninstall<R: Remote>(
    remote: &R,
    m: &Machine,
    progress: &(dyn Fn(Step) + Sync),
) -> Result<Uninstalled, InstallError> {
    progress(Step::Uninstall);
    let script = systemd::uninstall_script(&m.id, SYSTEM_PATHS);
    let argv = as_root(&m.user(), &["sh", "-c", &script]);
    let out = remote.run_with_input(&argv, &[]).await?;
    let out = root_result(m, out)?;
    Ok(if out.stdout.contains(systemd::NOT_INSTALLED) {
        Uninstalled::WasNotInstalled
    } else {
        Uninstalled::Removed
    })
}

fn root_result(m: &Machine, out: RemoteOutput) -> Result<RemoteOutput, InstallError> {
    if out.success() {
        Ok(out)
    } else {
        Err(InstallError::Root {
            user: m.user(),
            machine: m.id.clone(),
            stderr: out.stderr.trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests;
