//! The systemd unit of a machine's daemon (`adora cluster install`), and the root scripts that
//! install and remove it on a machine.

use std::fmt::Write;

use crate::quote::quote;

/// Name of the unit of machine `id`.
pub fn unit_name(machine_id: &str) -> String {
    format!("adora-daemon-{machine_id}.service")
}

/// Where units are installed.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// Directory of the root-only environment files holding a machine's join code.
pub const ENV_DIR: &str = "/etc/adora";

/// Path of the environment file of machine `id` (mode 0600, owned by root).
pub fn env_file(machine_id: &str) -> String {
    format!("{ENV_DIR}/adora-daemon-{machine_id}.env")
}

/// Contents of the environment file: the machine's one-time join code, read by systemd (as
/// root) before starting the daemon, so it never appears on a command line. The daemon enrolls
/// with it once; later starts use the identity it keeps and ignore the (then used) code.
pub fn env_file_contents(join_code: &str) -> String {
    format!("ADORA_JOIN_CODE={join_code}\n")
}

/// Where the unit and the environment file go; [`SYSTEM_PATHS`] on a real machine, a temporary
/// directory in tests.
#[derive(Debug, Clone, Copy)]
pub struct InstallPaths<'a> {
    /// Directory of the unit file.
    pub unit_dir: &'a str,
    /// Directory of the token's environment file (created mode 0700).
    pub env_dir: &'a str,
}

/// The system locations: [`UNIT_DIR`] and [`ENV_DIR`].
pub const SYSTEM_PATHS: InstallPaths<'static> = InstallPaths {
    unit_dir: UNIT_DIR,
    env_dir: ENV_DIR,
};

/// Remote script that prints `$HOME`, then the absolute path of the `adora` binary
/// (`install_dir` first, else `command -v adora`, symlinks resolved with `readlink -f`), or fails
/// as [`crate::installed::find_adora`] does when there is none. Run it as the SSH user (the
/// unit's `User=`).
pub fn probe_script(install_dir: Option<&str>) -> String {
    format!(
        "printf '%s\\n' \"$HOME\"\n{}readlink -f \"$adora\"\n",
        crate::installed::find_adora(install_dir)
    )
}

/// Remote script (run as root, the environment file's contents on stdin) that installs the unit
/// of `machine_id`: writes the environment file (mode 0600 in a 0700 directory), the unit file,
/// stops a detached daemon a `cluster up` left (its pid in `ad_hoc_pid_file`) so two daemons never
/// run with one machine id, then `systemctl daemon-reload` and `enable --now`.
pub fn install_script(
    machine_id: &str,
    unit_text: &str,
    ad_hoc_pid_file: &str,
    paths: InstallPaths<'_>,
) -> String {
    let name = unit_name(machine_id);
    let env = format!("{}/adora-daemon-{machine_id}.env", paths.env_dir);
    format!(
        r#"set -e
unit={unit}
env={env}
umask 077
mkdir -p {env_dir}
chmod 700 {env_dir}
cat > "$env.tmp"
chmod 600 "$env.tmp"
mv -f "$env.tmp" "$env"
umask 022
mkdir -p {unit_dir}
printf '%s' {text} > "$unit.tmp"
mv -f "$unit.tmp" "$unit"
pidf={pidf}
alive() {{ kill -0 "$1" 2>/dev/null && ! grep -q ') Z' "/proc/$1/stat" 2>/dev/null; }}
old=$(cat "$pidf" 2>/dev/null || true)
if [ -n "$old" ] && alive "$old" && grep -q adora "/proc/$old/cmdline" 2>/dev/null; then
  kill "$old" 2>/dev/null || true
  i=0; while alive "$old" && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  kill -9 "$old" 2>/dev/null || true
  rm -f "$pidf"
fi
systemctl daemon-reload
systemctl enable --now {name}
"#,
        unit = quote(&format!("{}/{name}", paths.unit_dir)),
        env = quote(&env),
        env_dir = quote(paths.env_dir),
        unit_dir = quote(paths.unit_dir),
        text = quote(unit_text),
        pidf = quote(ad_hoc_pid_file),
        name = quote(&name),
    )
}

/// What [`uninstall_script`] prints when there was no unit.
pub const NOT_INSTALLED: &str = "not-installed";

/// Remote script (run as root) that stops, disables and removes the unit of `machine_id` and its
/// environment file, then reloads systemd; prints [`NOT_INSTALLED`] when there was no unit.
pub fn uninstall_script(machine_id: &str, paths: InstallPaths<'_>) -> String {
    let name = unit_name(machine_id);
    format!(
        r#"set -e
unit={unit}
if [ -e "$unit" ]; then
  systemctl disable --now {name} || true
  rm -f "$unit"
else
  echo {NOT_INSTALLED}
fi
rm -f {env}
systemctl daemon-reload
"#,
        unit = quote(&format!("{}/{name}", paths.unit_dir)),
        env = quote(&format!("{}/adora-daemon-{machine_id}.env", paths.env_dir)),
        name = quote(&name),
    )
}

/// `systemctl is-enabled --quiet <unit>`: exit code 0 when the machine's daemon runs under
/// systemd (any user may ask).
pub fn is_enabled_argv(machine_id: &str) -> Vec<String> {
    ["systemctl", "is-enabled", "--quiet"]
        .map(String::from)
        .into_iter()
        .chain([unit_name(machine_id)])
        .collect()
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
    /// `User=` takes a user name, which has no spaces or control characters.
    #[error("the user `{0}` is not a user name (it has spaces or control characters)")]
    InvalidUser(String),
}

/// Quotes one word for an `ExecStart=` line (systemd's own rules: double quotes, `%` and `$`
/// doubled so they are not expanded, control characters as C escapes so a word never spans
/// lines of the unit file).
pub fn exec_quote(word: &str) -> String {
    quote_word(word, true)
}

/// Quotes one `Environment=` assignment: like [`exec_quote`], but `$` stays as it is (systemd
/// expands specifiers there, not variables).
pub fn env_quote(assignment: &str) -> String {
    quote_word(assignment, false)
}

fn quote_word(word: &str, double_dollars: bool) -> String {
    let mut escaped = word.replace('%', "%%");
    if double_dollars {
        escaped = escaped.replace('$', "$$");
    }
    let simple = !escaped.is_empty()
        && escaped
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=,@+%$".contains(c));
    if simple {
        return escaped;
    }
    let mut quoted = String::with_capacity(escaped.len() + 2);
    quoted.push('"');
    for c in escaped.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            // A newline would end the line; systemd reads C escapes in quoted words.
            c if c.is_control() && (c as u32) < 0x80 => {
                quoted.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
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
                env_quote(&format!("ADORA_STATE_DIR={dir}"))
            );
        }
        if let Some(user) = self.user.filter(|u| *u != "root") {
            // Unquoted in the unit: a newline would start a line of its own (found by adora-fuzz).
            if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(UnitError::InvalidUser(user.to_owned()));
            }
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
        assert_eq!(env_file_contents("ab12"), "ADORA_JOIN_CODE=ab12\n");
    }

    /// Runs `script` with `sh`, a fake `systemctl` (logging its arguments) first on `PATH`.
    fn run_with_fake_systemctl(
        dir: &std::path::Path,
        script: &str,
        stdin: &[u8],
    ) -> (std::process::Output, String) {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        let fake = bin.join("systemctl");
        std::fs::write(&fake, "#!/bin/sh\necho \"$*\" >> \"$SYSTEMCTL_LOG\"\n").expect("fake");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let log = dir.join("systemctl.log");
        let _ = std::fs::remove_file(&log);
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let env = [("PATH", path), ("SYSTEMCTL_LOG", log.display().to_string())];
        let out = crate::test_shell::run_sh(script, stdin, &env);
        (out, std::fs::read_to_string(&log).unwrap_or_default())
    }

    #[test]
    fn install_and_uninstall_scripts_drive_systemctl() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let units = dir.path().join("units");
        let etc = dir.path().join("etc-adora");
        let (units, etc) = (units.display().to_string(), etc.display().to_string());
        let paths = InstallPaths {
            unit_dir: &units,
            env_dir: &etc,
        };
        // A detached daemon left by `cluster up`: its command line contains "adora".
        let sleeper = dir.path().join("adora-sleep");
        std::fs::copy("/bin/sleep", &sleeper).expect("copy sleep");
        let mut ad_hoc = crate::test_shell::spawn_fresh_executable(
            std::process::Command::new(&sleeper).arg("30"),
        );
        let pid_file = dir.path().join("daemon.pid");
        std::fs::write(&pid_file, format!("{}\n", ad_hoc.id())).expect("pid file");

        let unit = "[Unit]\nDescription=it's $HOME `x`\n";
        let script = install_script("robot", unit, &pid_file.display().to_string(), paths);
        let (out, calls) =
            run_with_fake_systemctl(dir.path(), &script, env_file_contents("t0k").as_bytes());
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            calls,
            "daemon-reload\nenable --now adora-daemon-robot.service\n"
        );
        let unit_path = format!("{units}/adora-daemon-robot.service");
        assert_eq!(std::fs::read_to_string(&unit_path).expect("unit"), unit);
        let env_path = format!("{etc}/adora-daemon-robot.env");
        assert_eq!(
            std::fs::read_to_string(&env_path).expect("env"),
            "ADORA_JOIN_CODE=t0k\n"
        );
        let mode = |p: &str| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&env_path), 0o600);
        assert_eq!(mode(&etc), 0o700);
        let status = ad_hoc.wait().expect("ad-hoc daemon stopped");
        assert!(
            !status.success(),
            "the ad-hoc daemon was killed: {status:?}"
        );
        assert!(!pid_file.exists());

        let (out, calls) =
            run_with_fake_systemctl(dir.path(), &uninstall_script("robot", paths), b"");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            calls,
            "disable --now adora-daemon-robot.service\ndaemon-reload\n"
        );
        assert!(!std::path::Path::new(&unit_path).exists());
        assert!(!std::path::Path::new(&env_path).exists());
        let (out, _) = run_with_fake_systemctl(dir.path(), &uninstall_script("robot", paths), b"");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), NOT_INSTALLED);
    }

    #[test]
    fn probe_finds_the_absolute_binary() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real dir");
        std::fs::create_dir(&real).expect("dir");
        std::fs::write(real.join("adora"), "#!/bin/sh\n").expect("bin");
        std::fs::set_permissions(real.join("adora"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let link_dir = dir.path().join("bin");
        std::fs::create_dir(&link_dir).expect("dir");
        std::os::unix::fs::symlink(real.join("adora"), link_dir.join("adora")).expect("link");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(probe_script(Some(&link_dir.display().to_string())))
            .env("HOME", "/home/x")
            .output()
            .expect("sh");
        let text = String::from_utf8_lossy(&out.stdout);
        let real = std::fs::canonicalize(real.join("adora")).expect("canonical");
        assert_eq!(text, format!("/home/x\n{}\n", real.display()));
        assert_eq!(
            is_enabled_argv("robot"),
            [
                "systemctl",
                "is-enabled",
                "--quiet",
                "adora-daemon-robot.service"
            ]
        );
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
        // Found by adora-fuzz: a newline in a label or path ended the `ExecStart=` line, so
        // the rest became a line of its own in the unit file.
        assert_eq!(
            exec_quote("k=v\nExecStartPre=/bin/x"),
            "\"k=v\\x0aExecStartPre=/bin/x\""
        );
        assert_eq!(exec_quote("a\r\u{85}"), "\"a\\x0d\\u0085\"");
        let unit = DaemonUnit {
            machine_id: "robot",
            adora_path: "/usr/local/bin/adora",
            args: &[],
            user: Some("ubuntu\nExecStartPre=/bin/x"),
            state_dir: None,
        };
        assert!(matches!(unit.render(), Err(UnitError::InvalidUser(_))));
        // `Environment=` does not expand variables: a `$` stays single.
        assert_eq!(
            env_quote("ADORA_STATE_DIR=/srv/$x y"),
            "\"ADORA_STATE_DIR=/srv/$x y\""
        );
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
