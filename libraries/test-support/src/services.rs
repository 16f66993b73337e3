//! Adora services for multi-machine tests and benchmarks: a coordinator in the caller's own
//! (root) network namespace and daemons on test hosts or on this machine, all sharing one state
//! directory (token, CA, recorded coordinator address) while each daemon logs under its machine
//! id and enrolls with a join code into its own identity (`identity/<machine id>/`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{hosts::Host, wait_until, ChildGuard};

/// How long services may take to come up.
pub const STARTUP: Duration = Duration::from_secs(30);

/// A running coordinator bound to one address.
pub struct Coordinator {
    /// The process.
    pub process: ChildGuard,
    /// `ip:port` it listens on.
    pub addr: String,
    state: PathBuf,
    adora: PathBuf,
}

impl Coordinator {
    /// Starts `adora coordinator --addr <ip> --port 0` with the workspace's `adora` and waits
    /// until it recorded its address.
    pub fn start(state: &Path, ip: &str) -> Coordinator {
        Self::start_with(&crate::bin("adora"), state, ip)
    }

    /// Like [`Coordinator::start`] with a given `adora` binary (benchmarks use release builds).
    pub fn start_with(adora: &Path, state: &Path, ip: &str) -> Coordinator {
        Self::launch(adora, state, ip, 0, &[], "coordinator")
    }

    /// Starts the workspace's `adora coordinator --addr <ip> --port <port> <extra>`, logging to
    /// `<state>/<log>.{out,err}`. Restarting a killed coordinator on the same state directory
    /// (its store) and port is `launch` again.
    pub fn launch(
        adora: &Path,
        state: &Path,
        ip: &str,
        port: u16,
        extra: &[&str],
        log: &str,
    ) -> Coordinator {
        let addr_file = state.join("coordinator.addr");
        // A killed coordinator leaves its address file behind.
        let _ = std::fs::remove_file(&addr_file);
        let mut cmd = Command::new(adora);
        cmd.env("ADORA_STATE_DIR", state)
            .env("NO_COLOR", "1")
            .args(["coordinator", "--addr", ip, "--port", &port.to_string()])
            .args(extra);
        let process = ChildGuard::spawn(cmd, state, log);
        assert!(
            wait_until(STARTUP, || {
                std::fs::read_to_string(&addr_file).is_ok_and(|s| s.contains(':'))
            }),
            "the coordinator did not start; see {}",
            state.join(format!("{log}.err")).display()
        );
        let addr = std::fs::read_to_string(&addr_file)
            .expect("addr file")
            .trim()
            .to_owned();
        Coordinator {
            process,
            addr,
            state: state.to_owned(),
            adora: adora.to_owned(),
        }
    }

    /// Client settings for this coordinator: TLS trusting the CA it created in its state
    /// directory, with its token.
    pub fn auth(&self) -> adora_client::Auth {
        let ca = std::fs::read_to_string(self.state.join("ca.pem")).expect("the coordinator's CA");
        let token = adora_client::token::read_token_file(&self.state.join("token"))
            .expect("the coordinator's token");
        adora_client::Auth::with_ca(&ca, Some(token)).expect("a valid CA")
    }

    /// The port.
    pub fn port(&self) -> String {
        self.addr.rsplit(':').next().expect("ip:port").to_owned()
    }

    /// A command running the `adora` CLI against this coordinator.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(&self.adora);
        cmd.env("ADORA_STATE_DIR", &self.state).env("NO_COLOR", "1");
        cmd
    }

    /// Starts a daemon with `machine_id` inside test host `host`, connected to this coordinator.
    pub fn daemon_on(&self, host: &Host, machine_id: &str, extra: &[&str]) -> ChildGuard {
        let cmd = self.daemon_command(host.command(&self.adora), machine_id, extra);
        host.spawn(cmd, &format!("daemon-{machine_id}"))
    }

    /// Like [`Coordinator::daemon_on`] with extra environment variables for the daemon (its
    /// nodes inherit `PATH` and a few others from it).
    pub fn daemon_on_with_env(
        &self,
        host: &Host,
        machine_id: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ChildGuard {
        let mut cmd = self.daemon_command(host.command(&self.adora), machine_id, extra);
        cmd.envs(env.iter().copied());
        host.spawn(cmd, &format!("daemon-{machine_id}"))
    }

    /// Like [`Coordinator::daemon_on`], logging to `<log>.{out,err}` in the host's log directory
    /// (a restarted daemon keeps the first one's log).
    pub fn daemon_logged(
        &self,
        host: &Host,
        machine_id: &str,
        extra: &[&str],
        log: &str,
    ) -> ChildGuard {
        let cmd = self.daemon_command(host.command(&self.adora), machine_id, extra);
        host.spawn(cmd, log)
    }

    /// SIGKILLs the coordinator (a crash: nothing is cleaned up) and reaps it.
    pub fn kill(&mut self) {
        self.process.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.process.wait_timeout(STARTUP);
    }

    /// Starts a daemon with `machine_id` on this machine (in the caller's own namespace).
    pub fn daemon_local(&self, machine_id: &str, extra: &[&str]) -> ChildGuard {
        let cmd = self.daemon_command(Command::new(&self.adora), machine_id, extra);
        ChildGuard::spawn(cmd, &self.state, &format!("daemon-{machine_id}"))
    }

    fn daemon_command(&self, mut cmd: Command, machine_id: &str, extra: &[&str]) -> Command {
        let ip = self.addr.rsplit_once(':').expect("ip:port").0;
        cmd.env("ADORA_STATE_DIR", &self.state)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .args(["daemon", "--machine-id", machine_id])
            .args(["--coordinator-addr", ip, "--coordinator-port", &self.port()])
            .args(extra);
        // Like a fleet's daemons: the first start enrolls with a join code, later ones use the
        // identity it kept, so these tests run with client certificates and Zenoh over TLS.
        let identity = self.state.join("identity").join(machine_id);
        if !identity.join("daemon.pem").exists() {
            cmd.env("ADORA_JOIN_CODE", self.join_code(machine_id));
        }
        cmd
    }

    /// A single-use join code for `machine_id` (`adora cluster join-code create --machine`).
    pub fn join_code(&self, machine_id: &str) -> String {
        let mut cli = self.cli();
        cli.args(["cluster", "join-code", "create", "--machine", machine_id]);
        let out = crate::run_with_timeout(cli, STARTUP);
        assert!(out.status.success(), "no join code for {machine_id}: {out}");
        out.stdout.trim().to_owned()
    }

    /// Starts one daemon per test host, host `i` with machine id `ids[i]`, and waits until all
    /// are connected. Keep the guards: dropping one kills its daemon.
    pub fn daemons_on(&self, hosts: &crate::hosts::TestHosts, ids: &[&str]) -> Vec<ChildGuard> {
        self.daemons_on_with(hosts, ids, &[])
    }

    /// [`Coordinator::daemons_on`] with `extra` daemon arguments.
    pub fn daemons_on_with(
        &self,
        hosts: &crate::hosts::TestHosts,
        ids: &[&str],
        extra: &[&str],
    ) -> Vec<ChildGuard> {
        let daemons = ids
            .iter()
            .enumerate()
            .map(|(i, id)| self.daemon_on(hosts.host(i), id, extra))
            .collect();
        self.wait_for_daemons(ids.len());
        daemons
    }

    /// Waits until `n` daemons are connected (per `adora status --json`).
    pub fn wait_for_daemons(&self, n: usize) {
        let connected = || {
            let mut cmd = self.cli();
            cmd.args(["status", "--json"]);
            let out = crate::run_with_timeout(cmd, Duration::from_secs(20));
            let compact: String = out.stdout.split_whitespace().collect();
            compact.matches("\"connected\":true").count()
        };
        assert!(
            wait_until(STARTUP, || connected() >= n),
            "{n} daemons did not connect in time"
        );
    }
}

/// A 3-machine chain dataflow of the test node (`adora-test-node`): `sender` on machine `a`
/// (`seq-source`, `count` messages of `payload` bytes, one per `tick_ms`) → `relay` on `b` →
/// `sink` on `c` (`seq-sink`: checks order and content, reports gaps, and progress every
/// `progress` messages).
pub fn chain(count: u64, payload: usize, tick_ms: u64, progress: u64) -> String {
    format!(
        r#"
nodes:
  - id: sender
    path: {node}
    env: {{ MODE: seq-source, COUNT: {count}, PAYLOAD_BYTES: {payload} }}
    inputs: {{ tick: adora/timer/millis/{tick_ms} }}
    outputs: [data]
    _unstable_deploy: {{ machine: a }}
  - id: relay
    path: {node}
    env: {{ MODE: relay }}
    inputs: {{ in: {{ source: sender/data, queue_size: 1000 }} }}
    outputs: [out]
    _unstable_deploy: {{ machine: b }}
  - id: sink
    path: {node}
    env: {{ MODE: seq-sink, EXPECT_LEN: {payload}, PROGRESS: {progress} }}
    inputs: {{ in: {{ source: relay/out, queue_size: 1000 }} }}
    _unstable_deploy: {{ machine: c }}
"#,
        node = crate::bin("adora-test-node").display()
    )
}
