//! `adora cluster up|status|down` on real test hosts (network namespaces with their own `sshd`):
//! the coordinator runs in the test's root namespace, one daemon per host is started over SSH.
//! Hosts share this filesystem, so the freshly built `adora` is reached through `install_dir`,
//! and every machine gets its own `state_dir` under the test's temp dir.

#![allow(clippy::unwrap_used)]

use std::{
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use adora_test_support::{
    adora, bin, bin_dir, hosts::TestHosts, pids_with_env, require_hosts, run_with_timeout,
    temp_dir, wait_until, Output,
};

/// Upper bound of one CLI command (`cluster up` waits up to 30 s for registrations).
const TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for a condition to become true.
const WAIT: Duration = Duration::from_secs(30);
/// Marks the processes this test starts locally (the coordinator inherits it).
const MARKER: &str = "ADORA_E2E_CLUSTER_TEST";

/// A machine of the test's cluster.yml: (id, address, labels as YAML flow mapping).
struct MachineSpec {
    id: &'static str,
    host: String,
    labels: &'static str,
}

/// One test's local state dir, cluster file and the hosts it runs on.
struct Fleet {
    hosts: TestHosts,
    dir: tempfile::TempDir,
    port: u16,
}

impl Fleet {
    fn new(hosts: TestHosts) -> Self {
        let port = free_port(hosts.gateway_ip());
        Self {
            hosts,
            dir: temp_dir(),
            port,
        }
    }

    fn local_state(&self) -> PathBuf {
        self.dir.path().join("local")
    }

    fn machine_state(&self, id: &str) -> PathBuf {
        self.dir.path().join("machines").join(id)
    }

    /// Writes `cluster.yml` for `machines`; returns its path.
    fn write_cluster(&self, machines: &[MachineSpec]) -> PathBuf {
        let mut yaml = format!(
            "coordinator: {{ addr: {}, port: {} }}\nmachines:\n",
            self.hosts.gateway_ip(),
            self.port
        );
        for m in machines {
            yaml.push_str(&format!(
                "  - id: {}\n    host: {}\n    user: root\n    labels: {}\n    install_dir: {}\n    state_dir: {}\n",
                m.id,
                m.host,
                m.labels,
                bin_dir().display(),
                self.machine_state(m.id).display()
            ));
        }
        let path = self.dir.path().join("cluster.yml");
        std::fs::write(&path, yaml).unwrap();
        path
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = adora(&self.local_state());
        cmd.args(args).env(MARKER, self.marker());
        cmd
    }

    fn marker(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn run(&self, args: &[&str]) -> Output {
        run_with_timeout(self.cmd(args), TIMEOUT)
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(out.status.success(), "adora {args:?} failed:\n{out}");
        out
    }

    fn up(&self, cluster: &Path) -> Output {
        let ssh_config = self.hosts.ssh_config().display().to_string();
        self.run(&[
            "cluster",
            "up",
            &cluster.display().to_string(),
            "--ssh-config",
            &ssh_config,
        ])
    }

    fn down(&self) -> Output {
        let addr = self.hosts.gateway_ip().to_string();
        self.ok(&[
            "cluster",
            "down",
            "--coordinator-addr",
            &addr,
            "--coordinator-port",
            &self.port.to_string(),
        ])
    }

    /// Pids of `adora*` executables (daemons, test nodes) running in any test host.
    fn remote_adora_pids(&self) -> Vec<u32> {
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

    /// Nothing of this test left: no adora process on a host, no local coordinator.
    fn assert_nothing_left(&self) {
        let gone = wait_until(WAIT, || {
            self.remote_adora_pids().is_empty() && pids_with_env(MARKER, &self.marker()).is_empty()
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
            describe(pids_with_env(MARKER, &self.marker()))
        );
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Best effort when a test failed half-way (the hosts' own teardown kills the daemons).
        if !pids_with_env(MARKER, &self.marker()).is_empty() {
            let _ = run_with_timeout(self.cmd(&["cluster", "down"]), TIMEOUT);
        }
    }
}

fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn three_machines(hosts: &TestHosts) -> Vec<MachineSpec> {
    vec![
        MachineSpec {
            id: "robot",
            host: hosts[0].ip().to_string(),
            labels: "{ arch: arm64 }",
        },
        MachineSpec {
            id: "gpu-server",
            host: hosts[1].ip().to_string(),
            labels: "{ gpu: 'true' }",
        },
        MachineSpec {
            id: "edge",
            host: hosts[2].ip().to_string(),
            labels: "{ zone: a }",
        },
    ]
}

/// A dataflow over the three machines, placed by machine id (robot) and by labels (the others).
fn dataflow(dir: &Path) -> PathBuf {
    let node = bin("adora-test-node");
    let yaml = format!(
        "nodes:
  - id: flood
    path: {node}
    env: {{ MODE: flood, COUNT: 200 }}
    outputs: [data]
    _unstable_deploy: {{ machine: robot }}
  - id: sink
    path: {node}
    env: {{ MODE: recv }}
    inputs:
      data: {{ source: flood/data, queue_size: 1000 }}
    _unstable_deploy: {{ machine: robot }}
  - id: edge-sink
    path: {node}
    env: {{ MODE: recv }}
    inputs:
      data: {{ source: flood/data, queue_size: 1000 }}
    _unstable_deploy: {{ machine: edge }}
  - id: gpu-worker
    path: {node}
    env: {{ MODE: idle }}
    _unstable_deploy: {{ labels: {{ gpu: 'true' }} }}
  - id: edge-worker
    path: {node}
    env: {{ MODE: idle }}
    _unstable_deploy: {{ labels: {{ zone: a }} }}
",
        node = node.display()
    );
    let path = dir.join("dataflow.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn cluster_up_start_status_down() {
    let hosts = require_hosts!("cluster_up", 3);
    let fleet = Fleet::new(hosts);
    let machines = three_machines(&fleet.hosts);
    let cluster = fleet.write_cluster(&machines);

    let out = fleet.up(&cluster);
    println!("{out}");
    assert!(out.status.success(), "{out}");
    let gateway = fleet.hosts.gateway_ip();
    assert!(
        out.stdout.contains(&format!(
            "Starting coordinator on {gateway}:{}...",
            fleet.port
        )),
        "{out}"
    );
    for m in &machines {
        let line = format!("Starting daemon on {} (root@{})... OK", m.id, m.host);
        assert!(out.stdout.contains(&line), "missing `{line}`:\n{out}");
        let token = fleet.machine_state(m.id).join("token");
        let mode = std::fs::metadata(&token).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
    assert!(out.stdout.contains("All 3 daemons connected."), "{out}");

    // Again: safe, nothing restarted.
    let daemon_pid =
        std::fs::read_to_string(fleet.machine_state("robot").join("daemon.pid")).unwrap();
    let again = fleet.up(&cluster);
    assert!(again.status.success(), "{again}");
    assert!(again.stdout.contains("Daemon on robot (root@"), "{again}");
    assert!(again.stdout.contains("already connected"), "{again}");
    assert!(again.stdout.contains("All 3 daemons connected."), "{again}");
    assert_eq!(
        std::fs::read_to_string(fleet.machine_state("robot").join("daemon.pid")).unwrap(),
        daemon_pid,
        "the connected daemon was restarted"
    );

    // Each daemon runs inside its host.
    for (i, m) in machines.iter().enumerate() {
        let pid: u32 = std::fs::read_to_string(fleet.machine_state(m.id).join("daemon.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            fleet.hosts[i].pids().contains(&pid),
            "daemon of {} not in its host",
            m.id
        );
        assert!(fleet.remote_adora_pids().contains(&pid));
    }

    let flow = dataflow(fleet.dir.path());
    let started = fleet.ok(&[
        "start",
        &flow.display().to_string(),
        "--name",
        "spread",
        "--detach",
    ]);
    assert!(started.all().contains("spread"), "{started}");

    // Messages flow (robot → robot), and every node went where its placement says.
    let mut logs = None;
    let flowed = wait_until(WAIT, || {
        let out = fleet.run(&["logs", "spread", "sink"]);
        let done = out.stdout.contains("done received=200");
        logs = Some(out);
        done
    });
    assert!(
        flowed,
        "sink never got the 200 messages:\n{}",
        logs.unwrap()
    );
    // ...and across machines (robot → edge over Zenoh): all 200, since nodes only start once
    // every remote receiver has subscribed.
    let mut logs = None;
    let crossed = wait_until(WAIT, || {
        let out = fleet.run(&["logs", "spread", "edge-sink"]);
        let done = out.stdout.contains("done received=200");
        logs = Some(out);
        done
    });
    assert!(
        crossed,
        "edge-sink never got the 200 messages:\n{}",
        logs.unwrap()
    );
    let list = fleet.ok(&["list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let text = list.to_string();
    for (node, machine) in [
        ("flood", "robot"),
        ("sink", "robot"),
        ("edge-sink", "edge"),
        ("gpu-worker", "gpu-server"),
        ("edge-worker", "edge"),
    ] {
        assert!(
            text.contains(&format!("\"{node}\":\"{machine}\"")),
            "{node} not on {machine}: {text}"
        );
    }

    let status = fleet.ok(&["cluster", "status"]);
    println!("{status}");
    for m in &machines {
        assert!(
            status
                .stdout
                .lines()
                .any(|l| l.starts_with(m.id) && l.contains("s ago")),
            "{status}"
        );
    }
    assert!(status.stdout.contains("Active dataflows: 1"), "{status}");
    let json = fleet.ok(&["cluster", "status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["daemons"].as_array().unwrap().len(), 3, "{json}");
    assert!(json["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["connected"] == true));
    assert_eq!(
        json["active_dataflows"].as_array().unwrap().len(),
        1,
        "{json}"
    );
    assert_eq!(json["active_dataflows"][0]["name"], "spread");

    let down = fleet.down();
    println!("{down}");
    assert!(down.stdout.contains("Stopping dataflow spread"), "{down}");
    for m in &machines {
        assert!(
            down.stdout
                .contains(&format!("Stopping daemon {}... OK", m.id)),
            "{down}"
        );
    }
    assert!(down.stdout.contains("Cluster is down."), "{down}");
    fleet.assert_nothing_left();

    // Down again: nothing to do.
    let again = fleet.down();
    assert!(again.stdout.contains("nothing to stop"), "{again}");
}

#[test]
fn unreachable_machine_is_reported_and_the_others_come_up() {
    let hosts = require_hosts!("cluster_unreach", 3);
    let fleet = Fleet::new(hosts);
    let mut machines = three_machines(&fleet.hosts);
    // An address in the hosts' subnet where no host exists.
    let subnet = fleet.hosts.subnet().octets();
    let ghost = Ipv4Addr::new(subnet[0], subnet[1], subnet[2], 250).to_string();
    machines.push(MachineSpec {
        id: "ghost",
        host: ghost.clone(),
        labels: "{}",
    });
    let cluster = fleet.write_cluster(&machines);

    let out = fleet.up(&cluster);
    println!("{out}");
    assert!(!out.status.success(), "must fail:\n{out}");
    assert!(
        out.stdout.contains(&format!(
            "Starting daemon on ghost (root@{ghost})... FAILED"
        )),
        "{out}"
    );
    assert!(out.stdout.contains("3 of 4 daemons connected."), "{out}");
    assert!(out.stdout.contains("1 machine failed:"), "{out}");
    let report = out
        .stdout
        .lines()
        .find(|l| l.starts_with("  ghost ("))
        .unwrap_or_else(|| panic!("no report line for ghost:\n{out}"));
    assert!(report.contains("cannot reach"), "{out}");
    assert!(
        out.stdout.contains("hint") || report.contains("hint"),
        "{out}"
    );

    let status = fleet.ok(&["cluster", "status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let mut ids: Vec<String> = json["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["edge", "gpu-server", "robot"]);

    fleet.down();
    fleet.assert_nothing_left();
}

/// `cluster.yml` problems: exit code 2, each named with its field and line; nothing started.
#[test]
fn invalid_cluster_files_are_rejected_with_field_and_line() {
    let dir = temp_dir();
    // (file, line, field, message)
    let cases = [
        (
            "coordinator: { addr: 10.0.0.1 }\nmachines: []\n",
            2,
            "machines",
            "a cluster needs at least one machine",
        ),
        (
            "coordinator: { addr: 10.0.0.1 }\nmachines:\n  - { id: a, host: h }\n  - { id: a, host: h2 }\n",
            4,
            "machines[1].id",
            "duplicate machine id `a`",
        ),
        (
            "coordinator: { addr: 10.0.0.1 }\nmachines:\n  - { id: '', host: h }\n",
            3,
            "machines[0].id",
            "machine id must not be empty",
        ),
        (
            "coordinator: { addr: 10.0.0.1 }\nmachines:\n  - { id: a, host: '' }\n",
            3,
            "machines[0].host",
            "host must not be empty",
        ),
        (
            "coordinator: { addr: 10.0.0.1 }\nmachines:\n  - id: a\n    host: h\n    colour: red\n",
            5,
            "machines[0].colour",
            "unknown field `colour`",
        ),
    ];
    for (i, (yaml, line, field, message)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("cluster-{i}.yml"));
        std::fs::write(&path, yaml).unwrap();
        let mut cmd = adora(&dir.path().join("state"));
        cmd.args(["cluster", "up", &path.display().to_string()]);
        let out = run_with_timeout(cmd, TIMEOUT);
        assert_eq!(out.status.code(), Some(2), "case {i}:\n{out}");
        let expected = format!("{}:{line}: field `{field}`: {message}", path.display());
        assert!(
            out.stderr.contains(&expected),
            "case {i}: `{expected}` missing:\n{out}"
        );
        assert!(
            !out.stdout.contains("Starting coordinator"),
            "case {i}:\n{out}"
        );
    }
}
