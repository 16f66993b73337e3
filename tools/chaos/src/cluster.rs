//! The system under test: three test hosts with a daemon each (machines `a`, `b`, `c`), a
//! coordinator in the soak's own network namespace, and the chain dataflow; the operations
//! the faults are made of (kill -9 and restart of the coordinator and of daemons, node kills,
//! stop and start), and the `adora` CLI, each call under a timeout.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use adora_test_support::{hosts::TestHosts, services::Coordinator, ChildGuard};
use anyhow::{bail, Context};

/// Machine ids of the daemons, host `i` runs `MACHINES[i]`.
pub const MACHINES: [&str; 3] = ["a", "b", "c"];
/// The dataflow's name.
pub const NAME: &str = "chaos";
/// Every node of the dataflow, and the machine it is placed on.
pub const NODES: [(&str, &str); 6] = [
    ("sender", "a"),
    ("relay", "b"),
    ("sink", "c"),
    ("idle-a", "a"),
    ("idle-b", "b"),
    ("idle-c", "c"),
];
/// Longest any CLI call may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(40);

/// What a CLI call printed.
pub struct Output {
    /// Whether it exited successfully.
    pub success: bool,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// The `adora` CLI against the soak's coordinator (cheap to clone: the monitor has its own).
#[derive(Clone)]
pub struct Cli {
    adora: PathBuf,
    state: PathBuf,
}

impl Cli {
    /// Runs `adora <args>` against the coordinator; `None` when it did not finish in time.
    pub fn run(&self, args: &[&str]) -> Option<Output> {
        let mut cmd = Command::new(&self.adora);
        cmd.env("ADORA_STATE_DIR", &self.state)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .args(args);
        run(cmd, CLI_TIMEOUT)
    }

    /// How many daemons the coordinator lists as connected (0 when it does not answer).
    pub fn connected_daemons(&self) -> usize {
        let Some(out) = self.run(&["status", "--json"]) else {
            return 0;
        };
        let compact: String = out.stdout.split_whitespace().collect();
        compact.matches("\"connected\":true").count()
    }

    /// `adora list --json`: (uuid, status) of every dataflow named `chaos`.
    pub fn dataflows(&self) -> Option<Vec<(String, String)>> {
        let out = self.run(&["list", "--json"]).filter(|o| o.success)?;
        let rows: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        Some(
            rows.as_array()?
                .iter()
                .filter(|r| r["name"] == NAME)
                .map(|r| (text(&r["id"]), text(&r["status"])))
                .collect(),
        )
    }

    /// `adora node list <dataflow> --json`, when the coordinator answers.
    pub fn nodes(&self, dataflow: &str) -> Option<Vec<serde_json::Value>> {
        self.json_array(&["node", "list", dataflow, "--json"])
    }

    /// `adora top --once --json`: the nodes of every running dataflow.
    pub fn running_nodes(&self) -> Option<Vec<serde_json::Value>> {
        self.json_array(&["top", "--once", "--json"])
    }

    fn json_array(&self, args: &[&str]) -> Option<Vec<serde_json::Value>> {
        let out = self.run(args).filter(|o| o.success)?;
        serde_json::from_str::<serde_json::Value>(&out.stdout)
            .ok()?
            .as_array()
            .cloned()
    }
}

/// The running system.
pub struct Cluster {
    /// The test hosts (dropped last: its teardown kills whatever is left in them).
    pub hosts: TestHosts,
    adora: PathBuf,
    state: PathBuf,
    /// The CLI.
    pub cli: Cli,
    dataflow: PathBuf,
    coordinator: Option<Coordinator>,
    /// The coordinator's pid (0 while it is down), for the monitor.
    pub coordinator_pid: Arc<AtomicU32>,
    port: u16,
    coordinator_args: Vec<String>,
    daemons: Vec<Option<ChildGuard>>,
    daemon_args: Vec<String>,
    /// Coordinator and daemon starts so far (each gets its own log file).
    starts: u32,
}

/// Settings of the system.
pub struct Settings {
    /// Directory with `adora` and `adora-test-node`.
    pub bin_dir: PathBuf,
    /// Run directory: `state/` (coordinator and daemons) and `records/` go there.
    pub run_dir: PathBuf,
    /// Extra coordinator arguments.
    pub coordinator_args: Vec<String>,
    /// Extra daemon arguments.
    pub daemon_args: Vec<String>,
    /// `PAYLOAD_BYTES` of the source.
    pub payload_bytes: usize,
    /// The source's tick in milliseconds.
    pub tick_ms: u64,
    /// A tag only this run's node processes carry (`CHAOS_RUN`).
    pub run_tag: String,
}

impl Cluster {
    /// Starts the coordinator and the daemons on `hosts` and writes the dataflow.
    pub fn start(hosts: TestHosts, settings: &Settings) -> anyhow::Result<Self> {
        let state = settings.run_dir.join("state");
        let records = settings.run_dir.join("records");
        std::fs::create_dir_all(&state)?;
        std::fs::create_dir_all(&records)?;
        let dataflow = settings.run_dir.join("chaos.yml");
        std::fs::write(&dataflow, dataflow_yaml(settings, &records))?;
        let mut cluster = Self {
            hosts,
            adora: settings.bin_dir.join("adora"),
            cli: Cli {
                adora: settings.bin_dir.join("adora"),
                state: state.clone(),
            },
            state,
            dataflow,
            coordinator: None,
            coordinator_pid: Arc::new(AtomicU32::new(0)),
            port: 0,
            coordinator_args: settings.coordinator_args.clone(),
            daemons: MACHINES.iter().map(|_| None).collect(),
            daemon_args: settings.daemon_args.clone(),
            starts: 0,
        };
        cluster.start_coordinator();
        for i in 0..MACHINES.len() {
            cluster.start_daemon(i);
        }
        cluster.wait_for_daemons(Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// The state directory (store, logs).
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// Starts the coordinator (again, on the same port and store after a kill).
    pub fn start_coordinator(&mut self) {
        self.starts += 1;
        let extra: Vec<&str> = self.coordinator_args.iter().map(String::as_str).collect();
        let coordinator = Coordinator::launch(
            &self.adora,
            &self.state,
            &self.hosts.gateway_ip().to_string(),
            self.port,
            &extra,
            &format!("coordinator-{}", self.starts),
        );
        if self.port == 0 {
            self.port = coordinator
                .port()
                .parse()
                .expect("the coordinator's address file ends with its port");
        }
        self.coordinator_pid
            .store(coordinator.process.pid(), Ordering::SeqCst);
        self.coordinator = Some(coordinator);
    }

    /// kill -9 of the coordinator.
    pub fn kill_coordinator(&mut self) {
        self.coordinator_pid.store(0, Ordering::SeqCst);
        if let Some(mut c) = self.coordinator.take() {
            c.kill();
        }
    }

    /// Starts the daemon of host `i` (again, after a kill: it keeps its enrolled identity).
    pub fn start_daemon(&mut self, i: usize) {
        self.starts += 1;
        let coordinator = self
            .coordinator
            .as_ref()
            .expect("daemons are only started while the coordinator runs");
        let extra: Vec<&str> = self.daemon_args.iter().map(String::as_str).collect();
        let log = format!("daemon-{}-{}", MACHINES[i], self.starts);
        let daemon = coordinator.daemon_logged(self.hosts.host(i), MACHINES[i], &extra, &log);
        self.daemons[i] = Some(daemon);
    }

    /// kill -9 of the daemon of host `i` (its nodes die with it: parent-death signal).
    pub fn kill_daemon(&mut self, i: usize) {
        if let Some(mut d) = self.daemons[i].take() {
            d.signal(nix::sys::signal::Signal::SIGKILL);
            let _ = d.wait_timeout(Duration::from_secs(10));
        }
    }

    /// `adora start` of the chain (detached).
    pub fn start_dataflow(&self) -> anyhow::Result<()> {
        let path = self.dataflow.display().to_string();
        let out = self.cli.run(&["start", &path, "--name", NAME, "--detach"]);
        match out {
            Some(o) if o.success => Ok(()),
            Some(o) => bail!("adora start failed:\n{}\n{}", o.stdout, o.stderr),
            None => bail!("adora start did not return within {CLI_TIMEOUT:?}"),
        }
    }

    /// `adora stop` of the chain; true when it succeeded.
    pub fn stop_dataflow(&self) -> bool {
        self.cli.run(&["stop", NAME]).is_some_and(|o| o.success)
    }

    fn wait_for_daemons(&self, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        while self.cli.connected_daemons() < MACHINES.len() {
            if started.elapsed() > timeout {
                bail!("the daemons did not connect within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// `adora cluster down`: stops the dataflows, the daemons and the coordinator.
    pub fn down(&mut self) -> anyhow::Result<Output> {
        let out = self
            .cli
            .run(&["cluster", "down"])
            .context("`adora cluster down` did not return in time")?;
        if let Some(c) = self.coordinator.as_mut() {
            let _ = c.process.wait_timeout(Duration::from_secs(15));
        }
        for d in self.daemons.iter_mut().flatten() {
            let _ = d.wait_timeout(Duration::from_secs(15));
        }
        Ok(out)
    }

    /// Whether the coordinator process (if any) has exited.
    pub fn coordinator_exited(&mut self) -> bool {
        self.coordinator
            .as_mut()
            .is_none_or(|c| c.process.0.try_wait().ok().flatten().is_some())
    }
}

fn text(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// Runs `cmd` with captured output; kills it and returns `None` after `timeout`.
pub fn run(mut cmd: Command, timeout: Duration) -> Option<Output> {
    let dir = tempfile_dir()?;
    let out_path = dir.join("out");
    let err_path = dir.join("err");
    let out = std::fs::File::create(&out_path).ok()?;
    let err = std::fs::File::create(&err_path).ok()?;
    cmd.stdout(out).stderr(err).stdin(Stdio::null());
    let mut child = cmd.spawn().ok()?;
    let started = Instant::now();
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = status.map(|s| Output {
        success: s.success(),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    });
    let _ = std::fs::remove_dir_all(&dir);
    output
}

/// A fresh directory for one command's output files.
fn tempfile_dir() -> Option<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("adora-chaos-cli-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

/// The chain sender (a) → relay (b) → sink (c), and an idle node on every machine; every node
/// restarts always (a kill -9 is a crash), quickly and without a limit.
fn dataflow_yaml(s: &Settings, records: &Path) -> String {
    let node = s.bin_dir.join("adora-test-node").display().to_string();
    let restart = "restart_policy: always\n    restart_delay: 200ms\n    max_restart_delay: 2s";
    let env = |id: &str, mode: &str| {
        format!(
            "{{ MODE: {mode}, CHAOS_RUN: {}, CHAOS_NODE: {id}, CHAOS_DIR: '{}', PAYLOAD_BYTES: {} }}",
            s.run_tag,
            records.display(),
            s.payload_bytes
        )
    };
    let mut yaml = format!(
        "nodes:
  - id: sender
    path: {node}
    env: {}
    inputs: {{ tick: adora/timer/millis/{} }}
    outputs: [data]
    {restart}
    _unstable_deploy: {{ machine: a }}
  - id: relay
    path: {node}
    env: {}
    inputs: {{ in: {{ source: sender/data, queue_size: 1000 }} }}
    outputs: [out]
    {restart}
    _unstable_deploy: {{ machine: b }}
  - id: sink
    path: {node}
    env: {}
    inputs: {{ in: {{ source: relay/out, queue_size: 1000 }} }}
    {restart}
    _unstable_deploy: {{ machine: c }}
",
        env("sender", "chaos-source"),
        s.tick_ms,
        env("relay", "relay"),
        env("sink", "chaos-sink"),
    );
    for (id, machine) in &NODES[3..] {
        yaml.push_str(&format!(
            "  - id: {id}\n    path: {node}\n    env: {}\n    {restart}\n    _unstable_deploy: {{ machine: {machine} }}\n",
            env(id, "idle")
        ));
    }
    yaml
}
