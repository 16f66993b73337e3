//! Fixtures for Adora's cross-process tests: where the built binaries are, running a command
//! under a timeout (never hang CI), processes killed on drop, shared-memory leak checks,
//! simulated daemons for control-plane benchmarks ([`simulator`]), and test hosts: network
//! namespaces with `sshd` ([`hosts`]) or containers booting a real systemd ([`systemd_hosts`]).
//!
//! Tests run the real `adora` binary. Build the workspace binaries first
//! (`cargo build --workspace`); the fixtures find them next to the test executable, so a
//! `CARGO_TARGET_DIR` outside the repository works too.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

pub mod fleet;
pub mod hosts;
pub mod https;
pub mod services;
pub mod simulator;
pub mod systemd_hosts;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The cargo profile directory holding the workspace binaries (`target/debug` or wherever
/// `CARGO_TARGET_DIR` points), derived from the running test executable (`<dir>/deps/<test>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    deps.parent().unwrap().to_owned()
}

/// Path of a workspace binary; panics with a hint when it has not been built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace`)",
        path.display()
    );
    path
}

/// A `Command` for the real `adora` binary with an isolated state directory.
pub fn adora(state_dir: &Path) -> Command {
    let mut cmd = Command::new(bin("adora"));
    cmd.env("ADORA_STATE_DIR", state_dir)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    cmd
}

/// The `adora` CLI of one test: an isolated state directory, a marker variable on every command
/// (inherited by what it starts: coordinator, daemons, nodes) so the test can find and clean up
/// its processes, and a timeout on every command.
pub struct MarkedCli {
    state: PathBuf,
    marker: &'static str,
    timeout: Duration,
}

impl MarkedCli {
    /// The CLI with state dir `state`, marking its processes with `marker=<state>`.
    pub fn new(state: &Path, marker: &'static str, timeout: Duration) -> Self {
        Self {
            state: state.to_owned(),
            marker,
            timeout,
        }
    }

    /// The state directory.
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// The marker's value: unique to this test.
    pub fn marker(&self) -> String {
        self.state.display().to_string()
    }

    /// `adora <args>`, marked.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = adora(&self.state);
        cmd.args(args).env(self.marker, self.marker());
        cmd
    }

    /// Runs `adora <args>` under the timeout.
    pub fn run(&self, args: &[&str]) -> Output {
        run_with_timeout(self.cmd(args), self.timeout)
    }

    /// Runs `adora <args>` and asserts it succeeded.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(out.status.success(), "adora {args:?} failed:\n{out}");
        out
    }

    /// SIGKILLs the coordinator `adora up` / `cluster up` started from this state dir (a crash:
    /// nothing is cleaned up); returns its pid.
    pub fn kill_coordinator(&self) -> u32 {
        let pid: u32 = std::fs::read_to_string(self.state.join("coordinator.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        pid
    }

    /// Live processes carrying this CLI's marker (coordinator, daemons), and the nodes those
    /// daemons started (nodes do not inherit the marker: a daemon gives them an allow-listed
    /// environment).
    pub fn leftovers(&self) -> Vec<u32> {
        let mut pids = pids_with_env(self.marker, &self.marker());
        pids.extend(nodes_of(&pids));
        pids
    }
}

/// The captured result of a finished command.
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl Output {
    /// stdout and stderr together, for assertions that do not care which.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion, capturing output; kills it and panics (with its output so far)
/// if it takes longer than `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A child process that is killed (SIGKILL) and reaped when dropped, also on test panic.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Spawns `cmd` with stdout/stderr piped to files in `dir` (`<name>.out` / `<name>.err`).
    pub fn spawn(mut cmd: Command, dir: &Path, name: &str) -> ChildGuard {
        let out = std::fs::File::create(dir.join(format!("{name}.out"))).unwrap();
        let err = std::fs::File::create(dir.join(format!("{name}.err"))).unwrap();
        cmd.stdout(out).stderr(err).stdin(Stdio::null());
        ChildGuard(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}")),
        )
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal);
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `condition` every 20 ms until it holds; false after `timeout`.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if condition() {
            return true;
        }
        if started.elapsed() > timeout {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// True when a process with this pid exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3 is the state; `Z` is a zombie (dead, not yet reaped).
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .map(|rest| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Pids of live processes whose environment contains `KEY=VALUE` (finds the processes a test
/// started with a marker variable, wherever they were reparented; a node carries a marker only
/// when its dataflow sets it: `env` or `--env`).
pub fn pids_with_env(key: &str, value: &str) -> Vec<u32> {
    let needle = format!("{key}={value}");
    environs(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
}

/// Waits up to `timeout` until no live process carries `ADORA_TEST_MARKER=<marker>`; returns the
/// pids still alive then (empty: all gone).
pub fn marked_left_after(marker: &str, timeout: Duration) -> Vec<u32> {
    wait_until(timeout, || {
        pids_with_env("ADORA_TEST_MARKER", marker).is_empty()
    });
    pids_with_env("ADORA_TEST_MARKER", marker)
}

/// Pids of live nodes started by one of `daemons` (their `ADORA_NODE_CONFIG` names the daemon's
/// pid).
pub fn nodes_of(daemons: &[u32]) -> Vec<u32> {
    let prefix = format!("{}=", adora_core::NODE_CONFIG_ENV);
    environs(|env| {
        env.split(|b| *b == 0)
            .filter_map(|kv| kv.strip_prefix(prefix.as_bytes()))
            .filter_map(|json| serde_json::from_slice::<adora_message::NodeConfig>(json).ok())
            .any(|config| config.daemon_pid.is_some_and(|pid| daemons.contains(&pid)))
    })
}

/// Pids of live processes whose environment (`/proc/<pid>/environ`) matches.
fn environs(matches: impl Fn(&[u8]) -> bool) -> Vec<u32> {
    live_environs()
        .into_iter()
        .filter(|(_, env)| matches(env))
        .map(|(pid, _)| pid)
        .collect()
}

/// Every live process with its environment (`/proc/<pid>/environ`: `NAME=value` entries
/// separated by NUL bytes), where it can be read.
pub fn live_environs() -> Vec<(u32, Vec<u8>)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if process_alive(pid) {
            found.push((pid, env));
        }
    }
    found
}

/// Names of shared-memory segments in `/dev/shm` starting with `prefix`.
pub fn shm_segments(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A fresh temporary directory (removed on drop).
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("adora-test-")
        .tempdir()
        .unwrap()
}

/// Writes `yaml` as `dataflow.yml` in `dir`, replacing `{node}` with the test node binary's path.
pub fn write_dataflow(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("dataflow.yml");
    let node = bin("adora-test-node");
    std::fs::write(&path, yaml.replace("{node}", &node.display().to_string())).unwrap();
    path
}

/// Machine id → Adora version of every connected daemon, sorted, from the stdout of
/// `adora cluster status --json`.
pub fn connected_versions(status_json: &str) -> Vec<(String, String)> {
    let json: serde_json::Value =
        serde_json::from_str(status_json).expect("`cluster status --json` prints JSON");
    let mut versions: Vec<(String, String)> = json["daemons"]
        .as_array()
        .expect("a daemons array")
        .iter()
        .filter(|d| d["connected"] == true)
        .map(|d| {
            let id = d["id"].as_str().expect("a machine id").to_owned();
            (id, d["adora_version"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    versions.sort();
    versions
}
