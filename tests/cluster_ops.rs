//! Fleet operations on real test hosts: `cluster restart`, and the rolling `cluster upgrade` of
//! the detached daemons `cluster up` started (systemd is not PID 1 in the test hosts, so the
//! systemd path of `upgrade` and `install`/`uninstall` are covered by unit tests of their scripts).
//!
//! Test hosts share this filesystem, so every machine gets its **own** `install_dir` (a copy of
//! `target/debug/adora`) and `state_dir` under the test's temp dir: upgrading one host must not
//! upgrade the others. The "new" adora is a second build whose version differs, made beforehand
//! by `scripts/test.sh`:
//!
//! ```sh
//! ADORA_VERSION_SUFFIX=-upgrade-test cargo build -p adora-cli
//! mkdir -p target/upgrade-test && cp target/debug/adora target/upgrade-test/adora
//! cargo build --workspace --bins   # back to the normal version
//! ```

#![allow(clippy::unwrap_used)]

use std::{
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use adora_test_support::{
    adora, bin, bin_dir, hosts::TestHosts, pids_with_env, require_hosts, run_with_timeout,
    temp_dir, wait_until, Output,
};

/// Upper bound of one CLI command (an upgrade of three machines waits up to 30 s per machine).
const TIMEOUT: Duration = Duration::from_secs(240);
/// Upper bound for a condition to become true.
const WAIT: Duration = Duration::from_secs(30);
/// Marks the processes this test starts locally (the coordinator inherits it).
const MARKER: &str = "ADORA_E2E_CLUSTER_OPS_TEST";
/// Version suffix of the second binary (see the module docs).
const NEW_SUFFIX: &str = "-upgrade-test";
/// Machine ids, in rollout order; `robot` and `gpu-server` each run a sequence source, `edge`
/// runs the sinks.
const MACHINES: [&str; 3] = ["robot", "gpu-server", "edge"];

/// The second `adora` build, or `None` (with a message) when it was not built here.
fn new_binary() -> Option<PathBuf> {
    let path = bin_dir()
        .parent()
        .unwrap()
        .join("upgrade-test")
        .join("adora");
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "{} is missing: build it with `ADORA_VERSION_SUFFIX={NEW_SUFFIX} cargo build -p adora-cli` \
         and copy target/debug/adora there (scripts/test.sh does)",
        path.display()
    );
    assert!(
        std::env::var_os("ADORA_REQUIRE_TEST_HOSTS").is_none(),
        "{why}"
    );
    eprintln!("SKIPPED: {why}");
    None
}

struct Fleet {
    hosts: TestHosts,
    dir: tempfile::TempDir,
    port: u16,
    cluster: PathBuf,
}

impl Fleet {
    /// Three machines, each with its own copy of the current adora in its own install_dir.
    fn new(hosts: TestHosts) -> Self {
        let port = TcpListener::bind((hosts.gateway_ip(), 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = temp_dir();
        let mut yaml = format!(
            "coordinator: {{ addr: {}, port: {port} }}\nmachines:\n",
            hosts.gateway_ip()
        );
        for (i, id) in MACHINES.iter().enumerate() {
            let install = dir.path().join("machines").join(id).join("bin");
            std::fs::create_dir_all(&install).unwrap();
            std::fs::copy(bin("adora"), install.join("adora")).unwrap();
            yaml.push_str(&format!(
                "  - {{ id: {id}, host: {}, user: root, install_dir: {}, state_dir: {} }}\n",
                hosts[i].ip(),
                install.display(),
                dir.path().join("machines").join(id).join("state").display()
            ));
        }
        let cluster = dir.path().join("cluster.yml");
        std::fs::write(&cluster, yaml).unwrap();
        Self {
            hosts,
            dir,
            port,
            cluster,
        }
    }

    fn install_dir(&self, id: &str) -> PathBuf {
        self.dir.path().join("machines").join(id).join("bin")
    }

    fn marker(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = adora(&self.dir.path().join("local"));
        cmd.args(args).env(MARKER, self.marker());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        run_with_timeout(self.cmd(args), TIMEOUT)
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(out.status.success(), "adora {args:?} failed:\n{out}");
        out
    }

    /// `cluster <sub> cluster.yml --ssh-config ... <extra>`.
    fn cluster(&self, sub: &str, extra: &[&str]) -> Output {
        let cluster = self.cluster.display().to_string();
        let ssh = self.hosts.ssh_config().display().to_string();
        let mut args = vec!["cluster", sub, &cluster, "--ssh-config", &ssh];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Machine id → adora version of its connected daemon, from `cluster status --json`.
    fn versions(&self) -> Vec<(String, String)> {
        let out = self.ok(&["cluster", "status", "--json"]);
        let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let mut v: Vec<(String, String)> = json["daemons"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["connected"] == true)
            .map(|d| {
                let id = d["id"].as_str().unwrap().to_owned();
                (id, d["adora_version"].as_str().unwrap_or("").to_owned())
            })
            .collect();
        v.sort();
        v
    }

    /// The last `received=` count a seq-sink printed, and its whole log.
    fn sink_progress(&self, flow: &str, sink: &str) -> (u64, String) {
        let out = self.run(&["logs", flow, sink]);
        let count = out
            .stdout
            .lines()
            .filter_map(|l| l.split("received=").nth(1))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .max()
            .unwrap_or(0);
        (count, out.stdout)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if !pids_with_env(MARKER, &self.marker()).is_empty() {
            let addr = self.hosts.gateway_ip().to_string();
            let port = self.port.to_string();
            let args = [
                "cluster",
                "down",
                "--coordinator-addr",
                &addr,
                "--coordinator-port",
                &port,
            ];
            let _ = run_with_timeout(self.cmd(&args), TIMEOUT);
        }
    }
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Sequence sources on robot and gpu-server (a message every 20 ms), both sinks on edge.
fn dataflow(dir: &Path) -> PathBuf {
    let node = bin("adora-test-node").display().to_string();
    let mut yaml = String::from("nodes:\n");
    for source in ["robot", "gpu-server"] {
        yaml.push_str(&format!(
            "  - id: {source}-source
    path: {node}
    env: {{ MODE: seq-source, COUNT: 1000000 }}
    inputs: {{ tick: adora/timer/millis/20 }}
    outputs: [data]
    _unstable_deploy: {{ machine: {source} }}
  - id: {source}-sink
    path: {node}
    env: {{ MODE: seq-sink, PROGRESS: 10 }}
    inputs: {{ data: {source}-source/data }}
    _unstable_deploy: {{ machine: edge }}
"
        ));
    }
    let path = dir.join("dataflow.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn restart_and_rolling_upgrade_of_ad_hoc_daemons() {
    let Some(new) = new_binary() else { return };
    let hosts = require_hosts!("cluster_ops", 3);
    let fleet = Fleet::new(hosts);
    let up = fleet.cluster("up", &[]);
    assert!(up.status.success(), "{up}");
    let old_version = fleet.versions()[0].1.clone();
    assert!(!old_version.is_empty() && !old_version.ends_with(NEW_SUFFIX));

    // `cluster restart` by name, then by uuid.
    let flow = dataflow(fleet.dir.path());
    fleet.ok(&[
        "start",
        &flow.display().to_string(),
        "--name",
        "ops",
        "--detach",
    ]);
    let by_name = fleet.ok(&["cluster", "restart", "ops"]);
    let line = by_name.stdout.trim();
    let (old, new_id) = line
        .strip_prefix("dataflow restarted: ")
        .and_then(|rest| rest.split_once(" -> "))
        .unwrap_or_else(|| panic!("unexpected output:\n{by_name}"));
    assert_ne!(old, new_id);
    let by_uuid = fleet.ok(&["cluster", "restart", new_id]);
    assert!(
        by_uuid
            .stdout
            .starts_with(&format!("dataflow restarted: {new_id} -> ")),
        "{by_uuid}"
    );
    let unknown = fleet.run(&["cluster", "restart", "no-such-flow"]);
    assert!(!unknown.status.success(), "{unknown}");

    // Messages flow from both sources to edge.
    let flowing = wait_until(WAIT, || {
        fleet.sink_progress("ops", "robot-sink").0 >= 20
            && fleet.sink_progress("ops", "gpu-server-sink").0 >= 20
    });
    assert!(
        flowing,
        "{}",
        fleet.sink_progress("ops", "gpu-server-sink").1
    );

    // Upgrading robot alone: gpu-server → edge keeps delivering, without a gap.
    let only_robot = fleet.dir.path().join("robot-only.yml");
    let yaml = std::fs::read_to_string(&fleet.cluster).unwrap();
    let robot_line = yaml.lines().find(|l| l.contains("id: robot")).unwrap();
    let head: String = yaml
        .lines()
        .take_while(|l| !l.starts_with("  -"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&only_robot, format!("{head}{robot_line}\n")).unwrap();
    let (before, _) = fleet.sink_progress("ops", "gpu-server-sink");
    let ssh = fleet.hosts.ssh_config().display().to_string();
    let new_s = new.display().to_string();
    let robot_up = fleet.run(&[
        "cluster",
        "upgrade",
        &only_robot.display().to_string(),
        "--binary",
        &new_s,
        "--ssh-config",
        &ssh,
    ]);
    println!("{robot_up}");
    assert!(robot_up.status.success(), "{robot_up}");
    assert!(robot_up.stdout.contains("1/1 succeeded."), "{robot_up}");
    let grew = wait_until(WAIT, || {
        fleet.sink_progress("ops", "gpu-server-sink").0 >= before + 50
    });
    let (after, log) = fleet.sink_progress("ops", "gpu-server-sink");
    assert!(
        grew,
        "gpu-server → edge stalled at {after} (was {before}):\n{log}"
    );
    assert!(!log.contains("seq-sink gap"), "messages lost:\n{log}");

    // The whole fleet, one machine at a time.
    let out = fleet.cluster("upgrade", &["--binary", &new_s]);
    println!("{out}");
    assert!(out.status.success(), "{out}");
    let new_version = format!("{}{NEW_SUFFIX}", old_version);
    for id in MACHINES {
        let header = format!("Upgrading {id} (root@");
        let at = out
            .stdout
            .find(&header)
            .unwrap_or_else(|| panic!("no `{header}`:\n{out}"));
        let section: Vec<&str> = out.stdout[at..].lines().take(7).collect();
        for step in [
            "Copy binary... OK (",
            "Check new binary... OK (",
            "Swap binary... OK (",
            "Restart... OK (",
            "Waiting for reconnect... OK (",
        ] {
            assert!(
                section.iter().any(|l| l.trim_start().starts_with(step)),
                "{id}: no `{step}` in {section:#?}"
            );
        }
        assert!(
            section
                .iter()
                .any(|l| l.contains(&format!("{id} now runs adora {new_version} ("))),
            "{section:#?}"
        );
        assert_eq!(sha256(&fleet.install_dir(id).join("adora")), sha256(&new));
        assert!(fleet.install_dir(id).join("adora.previous").exists());
    }
    // In rollout order.
    let order: Vec<usize> = MACHINES
        .iter()
        .map(|id| out.stdout.find(&format!("Upgrading {id} (")).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{out}");
    assert!(out.stdout.contains("3/3 succeeded."), "{out}");
    let versions = fleet.versions();
    assert_eq!(versions.len(), 3, "{versions:?}");
    assert!(
        versions.iter().all(|(_, v)| *v == new_version),
        "{versions:?}"
    );

    // A binary that cannot run a daemon: the rollout stops at robot, the rest is untouched.
    let broken = fleet.dir.path().join("broken-adora");
    std::fs::write(
        &broken,
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo \"adora 0.1.99-broken\"; exit 0; }\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pids: Vec<String> = MACHINES[1..]
        .iter()
        .map(|id| {
            let pid = fleet
                .dir
                .path()
                .join("machines")
                .join(id)
                .join("state/daemon.pid");
            std::fs::read_to_string(pid).unwrap()
        })
        .collect();
    let out = fleet.cluster("upgrade", &["--binary", &broken.display().to_string()]);
    println!("{out}");
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stdout.contains("Upgrade stopped at robot (root@"),
        "{out}"
    );
    assert!(out.stdout.contains("the daemon"), "{out}");
    assert!(out.stdout.contains("adora.previous"), "{out}");
    assert!(
        out.stdout
            .contains("Not touched (still on the old version): gpu-server, edge"),
        "{out}"
    );
    assert!(out.stdout.contains("0/3 succeeded."), "{out}");
    assert!(!out.stdout.contains("Upgrading gpu-server"), "{out}");
    for (i, id) in MACHINES[1..].iter().enumerate() {
        assert_eq!(sha256(&fleet.install_dir(id).join("adora")), sha256(&new));
        let pid = fleet
            .dir
            .path()
            .join("machines")
            .join(id)
            .join("state/daemon.pid");
        assert_eq!(
            std::fs::read_to_string(pid).unwrap(),
            pids[i],
            "{id} restarted"
        );
    }
    let versions = fleet.versions();
    assert_eq!(
        versions,
        [
            ("edge".to_owned(), new_version.clone()),
            ("gpu-server".to_owned(), new_version.clone())
        ]
    );
}
