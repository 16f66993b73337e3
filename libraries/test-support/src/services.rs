//! Adora services for multi-machine tests: a coordinator in the test's own (root) network
//! namespace and one `adora daemon` per test host, all sharing one state directory (token,
//! recorded coordinator address) while each daemon logs under its machine id.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{adora, hosts::Host, wait_until, ChildGuard};

/// How long services may take to come up.
pub const STARTUP: Duration = Duration::from_secs(30);

/// A running coordinator bound to one address.
pub struct Coordinator {
    /// The process.
    pub process: ChildGuard,
    /// `ip:port` it listens on.
    pub addr: String,
    state: PathBuf,
}

impl Coordinator {
    /// Starts `adora coordinator --addr <ip> --port 0` and waits until it recorded its address.
    pub fn start(state: &Path, ip: &str) -> Coordinator {
        let mut cmd = adora(state);
        cmd.args(["coordinator", "--addr", ip, "--port", "0"]);
        let process = ChildGuard::spawn(cmd, state, "coordinator");
        let addr_file = state.join("coordinator.addr");
        assert!(
            wait_until(STARTUP, || std::fs::read_to_string(&addr_file)
                .is_ok_and(|s| s.contains(':'))),
            "the coordinator did not start; see {}",
            state.join("coordinator.err").display()
        );
        let addr = std::fs::read_to_string(&addr_file)
            .expect("addr file")
            .trim()
            .to_owned();
        Coordinator {
            process,
            addr,
            state: state.to_owned(),
        }
    }

    /// The port.
    pub fn port(&self) -> String {
        self.addr.rsplit(':').next().expect("ip:port").to_owned()
    }

    /// Starts a daemon with `machine_id` inside test host `host`, connected to this coordinator.
    pub fn daemon_on(&self, host: &Host, machine_id: &str, extra: &[&str]) -> ChildGuard {
        let ip = self.addr.rsplit_once(':').expect("ip:port").0;
        let mut cmd = host.command(crate::bin("adora"));
        cmd.env("ADORA_STATE_DIR", &self.state)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .args([
                "daemon",
                "--machine-id",
                machine_id,
                "--coordinator-addr",
                ip,
                "--coordinator-port",
                &self.port(),
            ])
            .args(extra);
        host.spawn(cmd, &format!("daemon-{machine_id}"))
    }

    /// Waits until `n` daemons are connected (per `adora status --json`).
    pub fn wait_for_daemons(&self, n: usize) {
        let connected = || {
            let mut cmd = adora(&self.state);
            cmd.args(["status", "--json"]);
            let out = crate::run_with_timeout(cmd, Duration::from_secs(20));
            out.stdout.matches("\"connected\": true").count()
                + out.stdout.matches("\"connected\":true").count()
        };
        assert!(
            wait_until(STARTUP, || connected() >= n),
            "{n} daemons did not connect in time"
        );
    }
}
