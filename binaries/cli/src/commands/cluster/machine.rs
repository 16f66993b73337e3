//! What `cluster up` does on one machine, over one SSH session:
//!
//! 1. `adora --version` (with `install_dir` first on `PATH`): installed, and compatible with ours?
//!    When it is not, the error names install_dir and the remote `PATH` searched
//!    ([`adora_cluster::installed`]).
//! 2. one shell script, with the cluster token on its **stdin** (never on a command line): write
//!    the token to `<state_dir>/token` (mode 0600), stop a daemon an earlier `cluster up` left
//!    there, start `adora daemon ...` detached (`nohup setsid`) with `ADORA_STATE_DIR` set to the
//!    machine's state directory, its log in `<state_dir>/daemon.log` and its pid in
//!    `<state_dir>/daemon.pid`, and check that it did not exit at once.
//!
//! A machine whose systemd unit `adora-daemon-<id>.service` is installed (`cluster install`) gets
//! no ad-hoc daemon: step 2 is `systemctl start` of that unit instead (as root, `sudo -n` unless
//! the SSH user is root), so there are never two daemons for one machine.
//!
//! Every value from `cluster.yml` reaches the shell quoted ([`adora_cluster::quote`]).

use std::path::PathBuf;

use adora_cluster::{as_root, daemon_args, installed, quote, systemd, HostSession, SshTarget};
use adora_core::cluster::{ClusterConfig, Machine};

use super::common::Outcome;

/// State directory on a machine without `state_dir` in `cluster.yml`.
pub(crate) const DEFAULT_STATE_DIR: &str = "~/.local/state/adora";
/// Lines of the remote daemon log shown when the daemon fails.
const LOG_TAIL_LINES: usize = 15;

/// The machine's state directory as written in `cluster.yml` (or the default).
pub(crate) fn state_dir(machine: &Machine) -> &str {
    machine.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR)
}

/// Shell prologue putting `install_dir` first on `PATH`.
fn path_prologue(machine: &Machine) -> String {
    match &machine.install_dir {
        Some(dir) => format!("PATH={}:\"$PATH\"; export PATH; ", quote::path(dir)),
        None => String::new(),
    }
}

/// Prints the remote `adora --version`, or fails as [`installed::find_adora`] does when there is
/// no `adora`.
pub(crate) fn version_script(machine: &Machine) -> String {
    format!(
        "{}exec \"$adora\" --version\n",
        installed::find_adora(machine.install_dir.as_deref())
    )
}

/// Shell functions for the detached daemon of state dir `$D`: `alive PID`, and `stop_daemon`,
/// which stops the daemon named by `$D/daemon.pid` (SIGTERM: it stops its dataflows gracefully;
/// SIGKILL after 10 s), removes the pid file and prints `stopped PID` or `not-running`.
const STOP_DAEMON_FUNCTIONS: &str = r#"alive() { kill -0 "$1" 2>/dev/null && ! grep -q ') Z' "/proc/$1/stat" 2>/dev/null; }
stop_daemon() {
  old=$(cat "$D/daemon.pid" 2>/dev/null || true)
  if [ -n "$old" ] && alive "$old" && grep -q adora "/proc/$old/cmdline" 2>/dev/null; then
    kill "$old" 2>/dev/null || true
    i=0; while alive "$old" && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    kill -9 "$old" 2>/dev/null || true
    echo "stopped $old"
  else
    echo not-running
  fi
  rm -f "$D/daemon.pid"
}"#;

/// Places the join code read from stdin (mode 0600; empty when the daemon is enrolled already)
/// and starts the daemon detached; prints the daemon's pid. An admin token an older version left
/// there is removed: machines hold no cluster secret beyond their own identity.
pub(crate) fn start_script(cluster: &ClusterConfig, machine: &Machine) -> String {
    let daemon = quote::line(&daemon_args(cluster, machine));
    format!(
        r#"set -e
{prologue}D={state}
{STOP_DAEMON_FUNCTIONS}
umask 077
mkdir -p "$D"
cat > "$D/join-code.tmp"
chmod 600 "$D/join-code.tmp"
mv -f "$D/join-code.tmp" "$D/join-code"
rm -f "$D/token"
stop_daemon >/dev/null
ADORA_STATE_DIR="$D"; export ADORA_STATE_DIR
nohup setsid sh -c 'echo $$ > "$0"; exec "$@"' "$D/daemon.pid" adora {daemon} --join-code-file "$D/join-code" >> "$D/daemon.log" 2>&1 < /dev/null &
i=0; while [ ! -s "$D/daemon.pid" ] && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
sleep 0.3
pid=$(cat "$D/daemon.pid" 2>/dev/null || true)
if [ -z "$pid" ] || ! alive "$pid"; then
  echo "the daemon exited at once; last lines of $D/daemon.log:" >&2
  tail -n {LOG_TAIL_LINES} "$D/daemon.log" >&2
  exit 3
fi
echo "$pid"
"#,
        prologue = path_prologue(machine),
        state = quote::path(state_dir(machine)),
    )
}

/// Stops the detached daemon `cluster up` started (from its pid file); prints `stopped PID` or
/// `not-running`.
pub(crate) fn stop_script(machine: &Machine) -> String {
    format!(
        "D={}\n{STOP_DAEMON_FUNCTIONS}\nstop_daemon\n",
        quote::path(state_dir(machine))
    )
}

/// Prints the last lines of the daemon's log.
pub(crate) fn log_tail_script(machine: &Machine) -> String {
    format!(
        "tail -n {LOG_TAIL_LINES} {}/daemon.log 2>&1",
        quote::path(state_dir(machine))
    )
}

/// `test -e <unit file>`: exit code 0 when the machine's daemon is installed as a systemd unit
/// (`cluster install`).
pub(crate) fn unit_installed_argv(machine: &Machine) -> Vec<String> {
    let unit = format!("{}/{}", systemd::UNIT_DIR, systemd::unit_name(&machine.id));
    ["test".to_owned(), "-e".to_owned(), unit].to_vec()
}

/// Prints the last lines of the journal of the machine's daemon unit (as root: the SSH user
/// need not be allowed to read the system journal).
pub(crate) fn journal_tail_argv(machine: &Machine) -> Vec<String> {
    let unit = systemd::unit_name(&machine.id);
    let lines = LOG_TAIL_LINES.to_string();
    let argv = [
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        "-n",
        &lines,
        "-u",
        &unit,
    ];
    as_root(&machine.user(), &argv)
}

/// The version in `adora --version` output (`adora 0.1.0`).
pub(crate) fn parse_version(output: &str) -> Option<&str> {
    output.lines().next()?.split_whitespace().nth(1)
}

/// Versions are compatible when their major and minor numbers match (`0.1.x` with `0.1.y`): the
/// control protocol only changes with the minor version.
pub(crate) fn compatible(ours: &str, theirs: &str) -> bool {
    let major_minor = |v: &str| v.split('.').take(2).map(str::to_owned).collect::<Vec<_>>();
    major_minor(ours) == major_minor(theirs)
}

/// Checks and starts the daemon of `machine`; returns the outcome and, when connected, the SSH
/// session (kept open to fetch the daemon log should it never register).
pub(crate) async fn start_daemon(
    cluster: &ClusterConfig,
    machine: &Machine,
    ssh_config: Option<PathBuf>,
    token: &str,
) -> (Outcome, Option<HostSession>) {
    let session = match HostSession::connect(SshTarget::of(machine, ssh_config)).await {
        Ok(session) => session,
        Err(e) => {
            let outcome = Outcome::Failed {
                reason: e.to_string(),
                hint: None,
            };
            return (outcome, None);
        }
    };
    let outcome = check_and_start(cluster, machine, &session, token).await;
    (outcome, Some(session))
}

async fn check_and_start(
    cluster: &ClusterConfig,
    machine: &Machine,
    session: &HostSession,
    token: &str,
) -> Outcome {
    let ours = adora_message::ADORA_VERSION;
    let version = match session.sh(&version_script(machine)).await {
        Ok(out) => out,
        Err(e) => return Outcome::failed(e.to_string(), "check the SSH connection"),
    };
    if let Some(missing) = installed::not_installed(machine, &version) {
        return Outcome::failed(missing.to_string(), missing.hint());
    }
    let theirs = parse_version(&version.stdout).unwrap_or_default();
    if !version.success() || theirs.is_empty() {
        return Outcome::failed(
            format!(
                "`adora --version` failed on {}: {}",
                machine.id,
                version.stderr.trim()
            ),
            format!("reinstall adora {ours} there"),
        );
    }
    if !compatible(ours, theirs) {
        return Outcome::failed(
            format!(
                "adora {theirs} on {} is not compatible with adora {ours} here",
                machine.id
            ),
            format!("install adora {ours} on every machine"),
        );
    }
    if session
        .run(&unit_installed_argv(machine))
        .await
        .is_ok_and(|out| out.success())
    {
        return start_service(machine, session).await;
    }
    match session
        .sh_with_stdin(&start_script(cluster, machine), token.as_bytes())
        .await
    {
        Ok(out) if out.success() => Outcome::Started,
        Ok(out) => Outcome::failed(
            format!("cannot start the daemon: {}", out.stderr.trim()),
            format!(
                "run `adora daemon` by hand on {} to see why",
                machine.destination()
            ),
        ),
        Err(e) => Outcome::failed(e.to_string(), "check the SSH connection"),
    }
}

/// `systemctl start` of the machine's daemon unit: starts it when it is stopped, leaves a running
/// one alone (it reconnects by itself, keeping its nodes).
async fn start_service(machine: &Machine, session: &HostSession) -> Outcome {
    let unit = systemd::unit_name(&machine.id);
    let start = as_root(&machine.user(), &["systemctl", "start", &unit]);
    match session.run(&start).await {
        Ok(out) if out.success() => Outcome::ServiceStarted,
        Ok(out) => Outcome::failed(
            format!(
                "cannot start the systemd unit {unit}: {}",
                out.stderr.trim()
            ),
            format!(
                "see `journalctl -u {unit}` on {}; `cluster up` starts the unit `cluster install` \
                 put there (uninstall it to use an ad-hoc daemon)",
                machine.destination()
            ),
        ),
        Err(e) => Outcome::failed(e.to_string(), "check the SSH connection"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn cluster(extra: &str) -> ClusterConfig {
        ClusterConfig::parse(
            &format!(
                "coordinator: {{ addr: 10.0.0.1 }}\nmachines:\n  - {{ id: robot, host: r, labels: {{ arch: arm64 }}{extra} }}\n"
            ),
            Path::new("cluster.yml"),
        )
        .expect("valid test cluster")
    }

    #[test]
    fn versions_are_compatible_within_a_minor_version() {
        assert_eq!(parse_version("adora 0.1.0\n"), Some("0.1.0"));
        assert_eq!(parse_version(""), None);
        assert!(compatible("0.1.0", "0.1.7"));
        assert!(!compatible("0.1.0", "0.2.0"));
        assert!(!compatible("1.1.0", "2.1.0"));
    }

    #[test]
    fn scripts_quote_config_values_and_default_the_state_dir() {
        let c = cluster(", install_dir: '/opt/a dora', state_dir: '/var/lib/x;y'");
        let m = &c.machines[0];
        assert!(
            version_script(m).contains("PATH='/opt/a dora':\"$PATH\"; export PATH\n"),
            "{}",
            version_script(m)
        );
        let script = start_script(&c, m);
        assert!(script.contains("D='/var/lib/x;y'\n"), "{script}");
        assert!(script.contains("adora daemon --machine-id robot --coordinator-addr 10.0.0.1 --coordinator-port 6013 --labels arch=arm64 --quiet --join-code-file \"$D/join-code\" >>"), "{script}");
        let c = cluster("");
        assert!(start_script(&c, &c.machines[0]).contains("D=\"$HOME\"/.local/state/adora\n"));
        assert!(!version_script(&c.machines[0]).contains("export PATH"));
    }

    /// Runs the start script against a fake `adora` in a temp dir: join code placed 0600 from
    /// stdin, an old admin token removed,
    /// daemon detached with the state dir in its environment, pid file written; then the stop
    /// script stops it and removes the pid file.
    #[test]
    fn start_script_places_the_join_code_and_starts_the_daemon_stop_script_stops_it() {
        use std::{io::Write, os::unix::fs::PermissionsExt, process::Stdio};
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin dir");
        let fake = bin.join("adora");
        std::fs::write(
            &fake,
            // No `exec sleep`: the process must stay an `adora` (the stop script checks).
            "#!/bin/sh\necho \"state=$ADORA_STATE_DIR args=$*\"\ni=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n",
        )
        .expect("fake adora");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).expect("state dir");
        std::fs::write(state.join("token"), "old-admin-token").expect("old token");
        let c = cluster(&format!(
            ", install_dir: {}, state_dir: {}",
            bin.display(),
            state.display()
        ));
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(start_script(&c, &c.machines[0]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh runs");
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(b"ADORA1.code").expect("write join code");
        drop(stdin);
        let out = child.wait_with_output().expect("script ends");
        assert!(out.status.success(), "{out:?}");
        let pid: i32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("pid printed");
        assert!(
            !state.join("token").exists(),
            "no admin token stays on a machine"
        );
        let code = state.join("join-code");
        assert_eq!(
            std::fs::read_to_string(&code).expect("join code"),
            "ADORA1.code"
        );
        let mode = std::fs::metadata(&code).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let pid_file = std::fs::read_to_string(state.join("daemon.pid")).expect("pid file");
        assert_eq!(pid_file.trim(), pid.to_string());
        let log = std::fs::read_to_string(state.join("daemon.log")).expect("log");
        assert!(log.contains(&format!("state={}", state.display())), "{log}");
        assert!(log.contains("args=daemon --machine-id robot"), "{log}");
        assert!(
            log.contains(&format!("--join-code-file {}", code.display())),
            "{log}"
        );

        let stop = |script: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .output()
                .expect("sh runs");
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let script = stop_script(&c.machines[0]);
        assert_eq!(stop(&script), format!("stopped {pid}"));
        let gone = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z"))
        });
        assert!(gone, "the daemon still runs");
        assert!(!state.join("daemon.pid").exists());
        assert_eq!(stop(&script), "not-running");
    }
}
