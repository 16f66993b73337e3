//! A fleet of test hosts driven through the real CLI (`adora cluster ...`): the coordinator runs
//! in the test's root namespace on the bridge's gateway address, daemons run inside the hosts.
//!
//! Every process the test starts locally carries a marker variable (the coordinator inherits
//! it), so the fixture can tell whether anything of this test is still running and bring the
//! cluster down when a test fails half-way.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{hosts::TestHosts, run_with_timeout, temp_dir, wait_until, MarkedCli, Output};

/// Test hosts, a temp dir for every piece of state, and the coordinator's port.
pub struct Fleet {
    /// The hosts (machines of the cluster).
    pub hosts: TestHosts,
    /// Local state (`local/`), per-machine dirs (`machines/<id>/`), cluster and dataflow files.
    pub dir: tempfile::TempDir,
    /// Coordinator port (free on the gateway address when the fleet was made).
    pub port: u16,
    /// The CLI on this machine (state in `<dir>/local`).
    cli: MarkedCli,
    /// Upper bound of one CLI command.
    timeout: Duration,
}

impl Fleet {
    /// A fleet on `hosts`; `marker` names the variable marking this test's local processes,
    /// `timeout` bounds every CLI command.
    pub fn new(hosts: TestHosts, marker: &'static str, timeout: Duration) -> Self {
        let port = TcpListener::bind((hosts.gateway_ip(), 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = temp_dir();
        let cli = MarkedCli::new(&dir.path().join("local"), marker, timeout);
        Self {
            hosts,
            dir,
            port,
            cli,
            timeout,
        }
    }

    /// `<dir>/machines/<id>`: the files of one machine (state dir, install dir).
    pub fn machine_dir(&self, id: &str) -> PathBuf {
        self.dir.path().join("machines").join(id)
    }

    /// `<dir>/machines/<id>/bin`: the machine's `install_dir` in [`Fleet::with_own_installs`].
    pub fn install_dir(&self, id: &str) -> PathBuf {
        self.machine_dir(id).join("bin")
    }

    /// A fleet whose machines `ids` (one per host, in order) each have their own copy of the
    /// current `adora` in their own `install_dir` (the namespace hosts share this filesystem)
    /// and are reached as root; returns it with its `cluster.yml`.
    pub fn with_own_installs(
        hosts: TestHosts,
        marker: &'static str,
        timeout: Duration,
        ids: &[&str],
    ) -> (Fleet, PathBuf) {
        let fleet = Fleet::new(hosts, marker, timeout);
        let mut yaml = format!(
            "coordinator: {{ addr: {}, port: {} }}\nmachines:\n",
            fleet.hosts.gateway_ip(),
            fleet.port
        );
        for (i, id) in ids.iter().enumerate() {
            let install = fleet.install_dir(id);
            std::fs::create_dir_all(&install).unwrap();
            std::fs::copy(crate::bin("adora"), install.join("adora")).unwrap();
            yaml.push_str(&format!(
                "  - {{ id: {id}, host: {}, user: root, install_dir: {}, state_dir: {} }}\n",
                fleet.hosts.host(i).ip(),
                install.display(),
                fleet.machine_dir(id).join("state").display()
            ));
        }
        let cluster = fleet.dir.path().join("cluster.yml");
        std::fs::write(&cluster, yaml).unwrap();
        (fleet, cluster)
    }

    /// Runs `adora <args>` on this machine under the fleet's timeout.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cli.run(args)
    }

    /// Runs `adora <args>` and asserts it succeeded.
    pub fn ok(&self, args: &[&str]) -> Output {
        self.cli.ok(args)
    }

    /// SIGKILLs the coordinator `cluster up` started here; returns its pid.
    pub fn kill_coordinator(&self) -> u32 {
        self.cli.kill_coordinator()
    }

    /// `adora cluster <sub> <cluster> --ssh-config <hosts' config> <extra>`.
    pub fn cluster(&self, sub: &str, cluster: &Path, extra: &[&str]) -> Output {
        let cluster = cluster.display().to_string();
        let ssh = self.hosts.ssh_config().display().to_string();
        let mut args = vec!["cluster", sub, &cluster, "--ssh-config", &ssh];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// `adora cluster down` of this fleet's coordinator, asserting it succeeded.
    pub fn down(&self) -> Output {
        let out = run_with_timeout(self.down_cmd(), self.timeout);
        assert!(out.status.success(), "adora cluster down failed:\n{out}");
        out
    }

    fn down_cmd(&self) -> Command {
        let addr = self.hosts.gateway_ip().to_string();
        let port = self.port.to_string();
        self.cli.cmd(&[
            "cluster",
            "down",
            "--coordinator-addr",
            &addr,
            "--coordinator-port",
            &port,
        ])
    }

    /// Pids of `adora*` executables (daemons, test nodes) running in any test host.
    pub fn remote_adora_pids(&self) -> Vec<u32> {
        self.hosts
            .hosts()
            .iter()
            .flat_map(|h| h.pids())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
                    exe.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("adora"))
                })
            })
            .collect()
    }

    /// Waits up to `wait` until nothing of this test is left (no adora process in a host, no
    /// marked local process), then asserts it, listing what is left.
    pub fn assert_nothing_left(&self, wait: Duration) {
        let gone = wait_until(wait, || {
            self.remote_adora_pids().is_empty() && self.cli.leftovers().is_empty()
        });
        let describe = |pids: Vec<u32>| -> Vec<String> {
            pids.into_iter()
                .map(|pid| {
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    format!(
                        "{pid}: {}",
                        String::from_utf8_lossy(&cmdline).replace('\0', " ")
                    )
                })
                .collect()
        };
        assert!(
            gone,
            "processes left: remote {:?}, local {:?}",
            describe(self.remote_adora_pids()),
            describe(self.cli.leftovers())
        );
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Best effort when a test failed half-way (the hosts' own teardown kills the daemons).
        if !self.cli.leftovers().is_empty() {
            let _ = run_with_timeout(self.down_cmd(), self.timeout);
        }
    }
}
