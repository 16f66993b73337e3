//! SSH sessions to fleet machines: one multiplexed `ssh` master per host (openssh crate), with
//! `BatchMode=yes` (never prompt), `ConnectTimeout=10` and `StrictHostKeyChecking=accept-new`.
//! Failures are classified so the CLI can say *why* a machine failed and what to do about it.

use std::{path::PathBuf, time::Duration};

use adora_core::cluster::Machine;
use openssh::{KnownHosts, Session, SessionBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long an SSH connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to reach a machine.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// Host name or IP.
    pub host: String,
    /// User.
    pub user: String,
    /// Port, when not 22.
    pub port: Option<u16>,
    /// Private key.
    pub identity_file: Option<PathBuf>,
    /// An `ssh_config` file to use instead of the user's (`ssh -F`).
    pub ssh_config: Option<PathBuf>,
}

impl SshTarget {
    /// The target of a `cluster.yml` machine; `~/` in `identity_file` is expanded locally.
    pub fn of(machine: &Machine, ssh_config: Option<PathBuf>) -> Self {
        let identity_file = machine
            .identity_file
            .as_deref()
            .map(|f| match f.strip_prefix("~/") {
                Some(rest) => std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_default()
                    .join(rest),
                None => PathBuf::from(f),
            });
        Self {
            host: machine.host.clone(),
            user: machine.user(),
            port: machine.ssh_port,
            identity_file,
            ssh_config,
        }
    }

    /// `user@host[:port]` for messages.
    pub fn display(&self) -> String {
        match self.port {
            Some(p) => format!("{}@{}:{p}", self.user, self.host),
            None => format!("{}@{}", self.user, self.host),
        }
    }
}

/// Why SSH failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The host could not be reached at all.
    #[error("cannot reach {target}: {detail} (hint: check the host and port in cluster.yml, that the machine is up and that sshd runs on it)")]
    Unreachable {
        /// `user@host`.
        target: String,
        /// What ssh said.
        detail: String,
    },
    /// The host refused the credentials.
    #[error("SSH authentication refused by {target}: {detail} (hint: `ssh-copy-id {target}`, or set identity_file in cluster.yml; SSH runs with BatchMode, so it never prompts)")]
    AuthRefused {
        /// `user@host`.
        target: String,
        /// What ssh said.
        detail: String,
    },
    /// Any other SSH failure.
    #[error("SSH to {target} failed: {detail}")]
    Other {
        /// `user@host`.
        target: String,
        /// What happened.
        detail: String,
    },
}

fn classify(target: &SshTarget, detail: String) -> SshError {
    let target = target.display();
    let lower = detail.to_ascii_lowercase();
    if lower.contains("permission denied") || lower.contains("too many authentication failures") {
        SshError::AuthRefused { target, detail }
    } else if [
        "timed out",
        "no route to host",
        "connection refused",
        "could not resolve",
        "network is unreachable",
        "name or service not known",
    ]
    .iter()
    .any(|p| lower.contains(p))
    {
        SshError::Unreachable { target, detail }
    } else {
        SshError::Other { target, detail }
    }
}

/// Exit code of a remote shell when a command is not found; [`HostSession`] reports it as a
/// [`RemoteOutput`] with its output, like any other exit code.
pub const COMMAND_NOT_FOUND: i32 = 127;

/// Reads a pipe of a remote command to its end (nothing when it was not captured).
async fn read_all<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(mut pipe) = pipe {
        pipe.read_to_end(&mut buf).await?;
    }
    Ok(buf)
}

/// The result of a remote command.
#[derive(Debug, Clone)]
pub struct RemoteOutput {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl RemoteOutput {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// An open SSH session to one machine.
pub struct HostSession {
    session: Session,
    target: SshTarget,
}

impl HostSession {
    /// Opens the multiplexed master connection.
    pub async fn connect(target: SshTarget) -> Result<Self, SshError> {
        let mut builder = SessionBuilder::default();
        builder
            .user(target.user.clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .known_hosts_check(KnownHosts::Add)
            .server_alive_interval(Duration::from_secs(5));
        if let Some(port) = target.port {
            builder.port(port);
        }
        if let Some(key) = &target.identity_file {
            builder.keyfile(key);
        }
        if let Some(config) = &target.ssh_config {
            builder.config_file(config);
        }
        match builder.connect(&target.host).await {
            Ok(session) => Ok(Self { session, target }),
            Err(e) => {
                let detail = match &e {
                    openssh::Error::Connect(io) => io.to_string(),
                    other => format!(
                        "{other}: {}",
                        std::error::Error::source(other)
                            .map(|s| s.to_string())
                            .unwrap_or_default()
                    ),
                };
                Err(classify(&target, detail.trim().to_owned()))
            }
        }
    }

    /// The target, for messages.
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// Runs `argv` (each word quoted) and captures its output.
    pub async fn run<S: AsRef<str>>(&self, argv: &[S]) -> Result<RemoteOutput, SshError> {
        self.run_with_stdin(argv, None).await
    }

    /// Runs a shell script through `sh -c` (the script is passed as one quoted word; build it with
    /// [`crate::quote`]).
    pub async fn sh(&self, script: &str) -> Result<RemoteOutput, SshError> {
        self.run(&["sh", "-c", script]).await
    }

    /// Runs a shell script with `stdin` as its standard input (for secrets: never on a command line).
    pub async fn sh_with_stdin(
        &self,
        script: &str,
        stdin: &[u8],
    ) -> Result<RemoteOutput, SshError> {
        self.run_with_stdin(&["sh", "-c", script], Some(stdin))
            .await
    }

    /// Runs `argv` (each word quoted) with `stdin` as its standard input: for secrets and for
    /// file contents (a binary streamed to `cat >`; openssh's process-mux has no SFTP).
    pub async fn run_with_input<S: AsRef<str>>(
        &self,
        argv: &[S],
        stdin: &[u8],
    ) -> Result<RemoteOutput, SshError> {
        self.run_with_stdin(argv, Some(stdin)).await
    }

    async fn run_with_stdin<S: AsRef<str>>(
        &self,
        argv: &[S],
        stdin: Option<&[u8]>,
    ) -> Result<RemoteOutput, SshError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(SshError::Other {
                target: self.target.display(),
                detail: "empty command".into(),
            });
        };
        let mut cmd = self.session.command(program.as_ref());
        for a in args {
            cmd.arg(a.as_ref());
        }
        let err = |e: openssh::Error| classify(&self.target, e.to_string());
        let io_err = |e: std::io::Error| classify(&self.target, e.to_string());
        cmd.stdin(match stdin {
            Some(_) => openssh::Stdio::piped(),
            None => openssh::Stdio::null(),
        })
        .stdout(openssh::Stdio::piped())
        .stderr(openssh::Stdio::piped());
        let mut child = cmd.spawn().await.map_err(err)?;
        let (pipe_in, pipe_out, pipe_err) = (
            child.stdin().take(),
            child.stdout().take(),
            child.stderr().take(),
        );
        let write = async move {
            if let (Some(mut pipe), Some(input)) = (pipe_in, stdin) {
                pipe.write_all(input).await?;
                pipe.shutdown().await?;
            }
            Ok::<_, std::io::Error>(())
        };
        let (written, stdout, stderr) = tokio::join!(write, read_all(pipe_out), read_all(pipe_err));
        let code = match child.wait().await {
            Ok(status) => status.code(),
            // openssh turns the remote exit code 127 ("command not found") into an error and
            // drops the output; keep both: the caller knows what 127 means for its script.
            Err(openssh::Error::Remote(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                Some(COMMAND_NOT_FOUND)
            }
            Err(e) => return Err(err(e)),
        };
        // A command that exits without reading all its input closes the pipe: its exit code
        // says what happened, not the broken pipe.
        if let Err(e) = written {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(io_err(e));
            }
        }
        Ok(RemoteOutput {
            code,
            stdout: String::from_utf8_lossy(&stdout.map_err(io_err)?).into_owned(),
            stderr: String::from_utf8_lossy(&stderr.map_err(io_err)?).into_owned(),
        })
    }

    /// Closes the master connection.
    pub async fn close(self) {
        if let Err(e) = self.session.close().await {
            tracing::debug!("closing SSH session: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SshTarget {
        SshTarget {
            host: "10.0.0.9".into(),
            user: "ubuntu".into(),
            port: Some(2222),
            identity_file: None,
            ssh_config: None,
        }
    }

    #[test]
    fn failures_are_classified_with_hints() {
        let e = classify(
            &target(),
            "ssh: connect to host 10.0.0.9 port 2222: Connection timed out".into(),
        );
        assert!(matches!(e, SshError::Unreachable { .. }));
        assert!(
            e.to_string().contains("cannot reach ubuntu@10.0.0.9:2222"),
            "{e}"
        );
        let e = classify(
            &target(),
            "ubuntu@10.0.0.9: Permission denied (publickey).".into(),
        );
        assert!(matches!(e, SshError::AuthRefused { .. }));
        assert!(e.to_string().contains("ssh-copy-id"), "{e}");
        assert!(matches!(
            classify(&target(), "weird".into()),
            SshError::Other { .. }
        ));
    }

    #[tokio::test]
    async fn unreachable_port_is_reported_as_unreachable() {
        // A port on loopback where nothing listens: refused immediately, no traffic leaves the host.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let target = SshTarget {
            host: "127.0.0.1".into(),
            user: "nobody".into(),
            port: Some(port),
            identity_file: None,
            ssh_config: None,
        };
        let result = tokio::time::timeout(Duration::from_secs(30), HostSession::connect(target))
            .await
            .expect("in time");
        match result {
            Err(SshError::Unreachable { detail, .. }) => {
                assert!(detail.to_lowercase().contains("refused"), "{detail}")
            }
            Err(other) => panic!("expected unreachable, got {other}"),
            Ok(_) => panic!("nothing listens there"),
        }
    }
}
