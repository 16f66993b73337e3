//! The systemd unit of a machine's daemon (`adora cluster install`).

use std::fmt::Write;

/// Name of the unit of machine `id`.
pub fn unit_name(machine_id: &str) -> String {
    format!("adora-daemon-{machine_id}.service")
}

/// Where units are installed.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// Directory of the root-only environment files holding the cluster token.
pub const ENV_DIR: &str = "/etc/adora";

/// Path of the environment file of machine `id` (mode 0600, owned by root).
pub fn env_file(machine_id: &str) -> String {
    format!("{ENV_DIR}/adora-daemon-{machine_id}.env")
}

/// Contents of the environment file: the token, read by systemd (as root) before starting the
/// daemon, so it never appears on a command line.
pub fn env_file_contents(token: &str) -> String {
    format!("ADORA_TOKEN={token}\n")
}

/// Everything the unit needs.
#[derive(Debug, Clone)]
pub struct DaemonUnit<'a> {
    /// Machine id.
    pub machine_id: &'a str,
    /// Absolute path of the installed `adora` binary.
    pub adora_path: &'a str,
    /// Arguments after the program (see [`crate::daemon_args`]).
    pub args: &'a [String],
    /// Run as this user instead of root.
    pub user: Option<&'a str>,
    /// `ADORA_STATE_DIR` of the daemon, when not the default.
    pub state_dir: Option<&'a str>,
}

/// Errors rendering a unit.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    /// ExecStart needs an absolute path.
    #[error("the adora binary path `{0}` is not absolute: systemd needs an absolute ExecStart")]
    RelativePath(String),
}

/// Quotes one word for an `ExecStart=` line (systemd's own rules: double quotes, `%` and `$`
/// doubled so they are not expanded).
pub fn exec_quote(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    let simple = !escaped.is_empty()
        && escaped
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=,@+%$".contains(c));
    if simple {
        escaped
    } else {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

impl DaemonUnit<'_> {
    /// The unit file's text.
    pub fn render(&self) -> Result<String, UnitError> {
        if !self.adora_path.starts_with('/') {
            return Err(UnitError::RelativePath(self.adora_path.to_owned()));
        }
        let mut exec = exec_quote(self.adora_path);
        for arg in self.args {
            exec.push(' ');
            exec.push_str(&exec_quote(arg));
        }
        let mut unit = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(unit, "[Unit]");
        let _ = writeln!(
            unit,
            "Description=Adora daemon (machine {})",
            self.machine_id
        );
        let _ = writeln!(unit, "After=network-online.target");
        let _ = writeln!(unit, "Wants=network-online.target");
        let _ = writeln!(unit);
        let _ = writeln!(unit, "[Service]");
        let _ = writeln!(unit, "Type=simple");
        let _ = writeln!(unit, "ExecStart={exec}");
        let _ = writeln!(unit, "EnvironmentFile={}", env_file(self.machine_id));
        if let Some(dir) = self.state_dir {
            let _ = writeln!(
                unit,
                "Environment={}",
                exec_quote(&format!("ADORA_STATE_DIR={dir}"))
            );
        }
        if let Some(user) = self.user.filter(|u| *u != "root") {
            let _ = writeln!(unit, "User={user}");
        }
        let _ = writeln!(unit, "Restart=on-failure");
        let _ = writeln!(unit, "RestartSec=5");
        let _ = writeln!(unit);
        let _ = writeln!(unit, "[Install]");
        let _ = writeln!(unit, "WantedBy=multi-user.target");
        Ok(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> Vec<String> {
        [
            "daemon",
            "--machine-id",
            "robot",
            "--coordinator-addr",
            "10.0.0.1",
            "--coordinator-port",
            "6013",
            "--labels",
            "room=lab 1,cost=$5",
            "--quiet",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn unit_has_every_required_line() {
        let args = args();
        let unit = DaemonUnit {
            machine_id: "robot",
            adora_path: "/usr/local/bin/adora",
            args: &args,
            user: Some("ubuntu"),
            state_dir: None,
        }
        .render()
        .expect("renders");
        let lines: Vec<&str> = unit.lines().collect();
        assert_eq!(
            lines,
            vec![
                "[Unit]",
                "Description=Adora daemon (machine robot)",
                "After=network-online.target",
                "Wants=network-online.target",
                "",
                "[Service]",
                "Type=simple",
                "ExecStart=/usr/local/bin/adora daemon --machine-id robot --coordinator-addr 10.0.0.1 --coordinator-port 6013 --labels \"room=lab 1,cost=$$5\" --quiet",
                "EnvironmentFile=/etc/adora/adora-daemon-robot.env",
                "User=ubuntu",
                "Restart=on-failure",
                "RestartSec=5",
                "",
                "[Install]",
                "WantedBy=multi-user.target",
            ]
        );
        assert_eq!(unit_name("robot"), "adora-daemon-robot.service");
        assert_eq!(env_file_contents("ab12"), "ADORA_TOKEN=ab12\n");
    }

    #[test]
    fn relative_binary_is_refused() {
        let args = args();
        let unit = DaemonUnit {
            machine_id: "r",
            adora_path: "adora",
            args: &args,
            user: None,
            state_dir: None,
        };
        assert!(matches!(unit.render(), Err(UnitError::RelativePath(_))));
    }

    #[test]
    fn exec_quoting_follows_systemd_rules() {
        assert_eq!(exec_quote("plain"), "plain");
        assert_eq!(exec_quote("100%"), "100%%");
        assert_eq!(exec_quote("a \"b\""), "\"a \\\"b\\\"\"");
        assert_eq!(exec_quote(""), "\"\"");
    }

    /// `systemd-analyze verify` accepts the unit (skipped, with a message, where systemd is absent).
    #[test]
    fn unit_passes_systemd_analyze_verify() {
        let Ok(probe) = std::process::Command::new("systemd-analyze")
            .arg("--version")
            .output()
        else {
            eprintln!("SKIPPED: systemd-analyze is not installed");
            return;
        };
        assert!(probe.status.success());
        let dir = tempfile::tempdir().expect("tempdir");
        // verify checks that ExecStart exists and is executable: use a real binary.
        let sh = "/bin/sh";
        let args = args();
        let unit = DaemonUnit {
            machine_id: "robot",
            adora_path: sh,
            args: &args,
            user: None,
            state_dir: Some("/var/lib/adora"),
        }
        .render()
        .expect("renders");
        let path = dir.path().join(unit_name("robot"));
        std::fs::write(&path, unit).expect("write");
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .env("SYSTEMD_LOG_LEVEL", "warning")
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "systemd-analyze verify failed: {stderr}"
        );
        // verify exits 0 even for unknown keys, so any remark at all is a failure.
        assert!(
            stderr.trim().is_empty(),
            "systemd-analyze verify complained: {stderr}"
        );
    }
}
