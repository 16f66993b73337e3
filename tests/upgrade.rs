//! `adora cluster upgrade`, end to end: the health-gated rollout with automatic rollback.
//!
//! - On **systemd hosts** (real systemd, own filesystems), as the non-root SSH user `adora` with
//!   passwordless sudo, `install_dir: /opt/adora/bin` owned by root, daemons installed as units
//!   by `cluster install`: (a) a good upgrade of 3 hosts keeps the dataflow running and every
//!   daemon reports the new version; (b) a binary that cannot run as a daemon is rolled back on
//!   the first host, the others are untouched, the dataflow runs on all three afterwards.
//! - On **namespace hosts** with the detached daemons of `cluster up` (no systemd): (c) a good
//!   upgrade, then the same broken binary rolled back.
//!
//! The "new" adora is a second build whose version differs, made beforehand by
//! `scripts/test.sh`:
//!
//! ```sh
//! ADORA_VERSION_SUFFIX=-upgrade-test cargo build -p adora-cli
//! mkdir -p target/upgrade-test && cp target/debug/adora target/upgrade-test/adora
//! cargo build --workspace --bins   # back to the normal version
//! ```
//!
//! Upgrade times per host are printed (`upgrade time: ...`), never asserted.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use adora_test_support::{
    bin, bin_dir, fleet::Fleet, hosts::TestHosts, require_hosts, require_systemd_hosts,
    run_with_timeout, systemd_hosts::SystemdHosts, temp_dir, wait_until, MarkedCli, Output,
};

/// Upper bound of one CLI command (an upgrade waits up to its healthy deadline per machine,
/// twice for a rolled-back one).
const TIMEOUT: Duration = Duration::from_secs(300);
/// Upper bound for a condition to become true.
const WAIT: Duration = Duration::from_secs(60);
/// Marks the processes this test starts locally (the coordinator inherits it).
const MARKER: &str = "ADORA_E2E_UPGRADE_TEST";
/// Version suffix of the second binary (see the module docs).
const NEW_SUFFIX: &str = "-upgrade-test";
/// Machine ids, in rollout order; `robot` and `gpu-server` each run a sequence source, `edge`
/// runs the sinks.
const MACHINES: [&str; 3] = ["robot", "gpu-server", "edge"];
/// The gate flags of every upgrade here: short, so a rollback does not take minutes.
const GATE: [&str; 4] = ["--min-healthy-time", "3s", "--healthy-deadline", "30s"];
/// Where the systemd hosts keep adora (owned by root) and the test node.
const INSTALL_DIR: &str = "/opt/adora/bin";
const NODE_DIR: &str = "/opt/adora/nodes";

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

/// A script named `adora` that answers `--version` like the real one and exits 1 as a daemon.
fn broken_binary(dir: &Path, version: &str) -> PathBuf {
    let path = dir.join("broken").join("adora");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && {{ echo \"adora {version}-broken\"; exit 0; }}\n\
             echo \"broken adora: cannot start\" >&2\nexit 1\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Sequence sources on robot and gpu-server (a message every 20 ms), both sinks on edge; run in
/// `/tmp` (this test's directory does not exist on the systemd hosts). A source re-spawned on its
/// upgraded machine starts its sequence again, which its sink takes for an error: the sinks
/// restart on failure.
fn dataflow(dir: &Path, node: &str) -> PathBuf {
    let mut yaml = String::from("nodes:\n");
    for source in ["robot", "gpu-server"] {
        yaml.push_str(&format!(
            "  - id: {source}-source
    path: {node}
    env: {{ MODE: seq-source, COUNT: 1000000 }}
    inputs: {{ tick: adora/timer/millis/20 }}
    outputs: [data]
    _unstable_deploy: {{ machine: {source}, working_dir: /tmp }}
  - id: {source}-sink
    path: {node}
    env: {{ MODE: seq-sink, PROGRESS: 10 }}
    inputs: {{ data: {source}-source/data }}
    restart_policy: on-failure
    restart_delay: 100ms
    _unstable_deploy: {{ machine: edge, working_dir: /tmp }}
"
        ));
    }
    let path = dir.join("dataflow.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Machine id → adora version of its connected daemon, from `cluster status --json`.
fn daemon_versions(cli: &MarkedCli) -> Vec<(String, String)> {
    adora_test_support::connected_versions(&cli.ok(&["cluster", "status", "--json"]).stdout)
}

/// How many progress lines (one per 10 messages) a seq-sink printed, over all its restarts, and
/// its whole log.
fn sink_progress(cli: &MarkedCli, flow: &str, sink: &str) -> (u64, String) {
    let out = cli.run(&["logs", flow, sink]);
    let lines = out
        .stdout
        .lines()
        .filter(|l| l.contains("seq-sink progress received="))
        .count();
    (lines as u64, out.stdout)
}

/// Waits until both sinks have printed `more` progress lines beyond what they had, and every
/// node of the dataflow runs on its machine (`adora node list --json`).
fn assert_flowing(cli: &MarkedCli, flow: &str, more: u64) {
    let base: Vec<u64> = ["robot-sink", "gpu-server-sink"]
        .iter()
        .map(|s| sink_progress(cli, flow, s).0)
        .collect();
    let grew = wait_until(WAIT, || {
        ["robot-sink", "gpu-server-sink"]
            .iter()
            .zip(&base)
            .all(|(s, b)| sink_progress(cli, flow, s).0 >= b + more)
    });
    let (_, log) = sink_progress(cli, flow, "robot-sink");
    assert!(grew, "the flow stalled (from {base:?}):\n{log}");
    let all_running = wait_until(WAIT, || {
        let out = cli.run(&["node", "list", flow, "--json"]);
        let nodes: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        nodes
            .as_array()
            .is_some_and(|n| n.len() == 4 && n.iter().all(|n| n["status"] == "running"))
    });
    let out = cli.run(&["node", "list", flow]);
    assert!(all_running, "not every node runs:\n{out}");
}

/// The JSON of `cluster upgrade --json`: (outcome, version, seconds) per machine id, printing
/// the upgrade time of each host.
fn outcomes(out: &Output, label: &str) -> Vec<(String, String, String)> {
    let json: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));
    json["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let id = m["id"].as_str().unwrap().to_owned();
            let outcome = m["outcome"].as_str().unwrap().to_owned();
            eprintln!(
                "upgrade time: {label}: {id} {outcome} in {:.1}s",
                m["seconds"].as_f64().unwrap()
            );
            let version = m["version"].as_str().unwrap_or("").to_owned();
            (id, outcome, version)
        })
        .collect()
}

/// Three systemd hosts as machines of a cluster (user `adora`, `install_dir` owned by root
/// holding the current adora), a coordinator here, every daemon installed as a systemd unit.
struct SystemdFleet {
    hosts: SystemdHosts,
    dir: tempfile::TempDir,
    cli: MarkedCli,
    cluster: PathBuf,
    port: u16,
}

impl SystemdFleet {
    fn installed(name: &str) -> Option<Self> {
        let hosts = require_systemd_hosts!(name, 3, None);
        let dir = temp_dir();
        let port = hosts.free_gateway_port();
        let mut yaml = format!(
            "coordinator: {{ addr: {}, port: {port} }}\nmachines:\n",
            hosts.gateway_ip()
        );
        for (i, id) in MACHINES.iter().enumerate() {
            let root = hosts.host(i).root();
            for (from, to) in [
                (bin("adora"), INSTALL_DIR),
                (bin("adora-test-node"), NODE_DIR),
            ] {
                let to = root.join(to.trim_start_matches('/'));
                std::fs::create_dir_all(&to).unwrap();
                std::fs::copy(&from, to.join(from.file_name().unwrap())).unwrap();
            }
            yaml.push_str(&format!(
                "  - {{ id: {id}, host: {}, user: adora, install_dir: {INSTALL_DIR} }}\n",
                hosts.host(i).ip()
            ));
        }
        let cluster = dir.path().join("cluster.yml");
        std::fs::write(&cluster, yaml).unwrap();
        let cli = MarkedCli::new(&dir.path().join("local"), MARKER, TIMEOUT);
        let fleet = Self {
            hosts,
            dir,
            cli,
            cluster,
            port,
        };
        for sub in ["up", "install"] {
            let out = fleet.cluster(sub, &[]);
            assert!(out.status.success(), "cluster {sub}:\n{out}");
        }
        Some(fleet)
    }

    fn cluster(&self, sub: &str, extra: &[&str]) -> Output {
        let cluster = self.cluster.display().to_string();
        let ssh = self.hosts.ssh_config().display().to_string();
        let mut args = vec!["cluster", sub, &cluster, "--ssh-config", &ssh];
        args.extend_from_slice(extra);
        self.cli.run(&args)
    }

    /// `/opt/adora/bin/<name>` of host `i`, seen from here.
    fn installed_file(&self, i: usize, name: &str) -> PathBuf {
        self.hosts
            .host(i)
            .root()
            .join(INSTALL_DIR.trim_start_matches('/'))
            .join(name)
    }

    /// The main pid of host `i`'s daemon unit.
    fn daemon_pid(&self, i: usize) -> String {
        let unit = format!("adora-daemon-{}.service", MACHINES[i]);
        let out = self
            .hosts
            .host(i)
            .ssh(&["systemctl", "show", "-p", "MainPID", &unit]);
        out.stdout.trim().to_owned()
    }

    /// Starts dataflow `name`: node `arm` on robot takes an update lock (`reason`) and holds it
    /// for `secs` seconds (until stopped when `None`); waits until it has it.
    fn start_locker(&self, name: &str, reason: &str, secs: Option<u64>) {
        let hold = secs
            .map(|s| format!(", LOCK_SECS: {s}"))
            .unwrap_or_default();
        let yaml = format!(
            "nodes:\n  - id: arm\n    path: {NODE_DIR}/adora-test-node\n    env: {{ MODE: lock, LOCK_REASON: {reason}{hold} }}\n    deploy: {{ machine: robot, working_dir: /tmp }}\n"
        );
        let file = self.dir.path().join(format!("{name}.yml"));
        std::fs::write(&file, yaml).unwrap();
        let file = file.display().to_string();
        self.cli.ok(&["start", &file, "--name", name, "--detach"]);
        let locked = wait_until(WAIT, || {
            self.cli
                .run(&["logs", name, "arm"])
                .stdout
                .contains("locked")
        });
        assert!(locked, "{}", self.cli.run(&["logs", name, "arm"]));
    }

    /// A cluster.yml with robot only.
    fn robot_only(&self) -> PathBuf {
        let yaml = std::fs::read_to_string(&self.cluster).unwrap();
        let kept: Vec<&str> = yaml
            .lines()
            .filter(|l| !l.contains("id: gpu-server") && !l.contains("id: edge"))
            .collect();
        let path = self.dir.path().join("robot.yml");
        std::fs::write(&path, kept.join("\n") + "\n").unwrap();
        path
    }

    /// `cluster upgrade` of robot only.
    fn upgrade_robot(&self, extra: &[&str]) -> Output {
        let robot = self.robot_only().display().to_string();
        let ssh = self.hosts.ssh_config().display().to_string();
        let mut args = vec!["cluster", "upgrade", &robot, "--ssh-config", &ssh];
        args.extend_from_slice(extra);
        self.cli.run(&args)
    }

    /// Starts the test dataflow as `ops` and waits until it flows.
    fn start_flow(&self) {
        let flow = dataflow(self.dir.path(), &format!("{NODE_DIR}/adora-test-node"));
        let flow = flow.display().to_string();
        self.cli.ok(&["start", &flow, "--name", "ops", "--detach"]);
        assert_flowing(&self.cli, "ops", 3);
    }
}

impl Drop for SystemdFleet {
    fn drop(&mut self) {
        let (addr, port) = (self.hosts.gateway_ip().to_string(), self.port.to_string());
        let down = self.cli.cmd(&[
            "cluster",
            "down",
            "--coordinator-addr",
            &addr,
            "--coordinator-port",
            &port,
        ]);
        let _ = run_with_timeout(down, TIMEOUT);
    }
}

#[test]
fn systemd_fleet_good_upgrade_as_sudo_user() {
    let Some(new) = new_binary() else { return };
    let Some(fleet) = SystemdFleet::installed("upgrade_good") else {
        return;
    };
    let old_version = daemon_versions(&fleet.cli)[0].1.clone();
    fleet.start_flow();
    // A node on robot (the canary) holds an update lock for 30 s (reading and hashing the debug
    // binary takes a few of them): the upgrade waits until the node drops it.
    fleet.start_locker("grip", "grasping", Some(30));

    let new_s = new.display().to_string();
    let mut args = vec!["--binary", &new_s, "--json"];
    args.extend(GATE);
    let out = fleet.cluster("upgrade", &args);
    eprintln!("{}", out.stderr);
    assert!(out.status.success(), "{out}");
    assert!(
        out.stderr.contains(
            "robot: waiting for its update locks: machine `robot` has 1 update lock: node `arm` \
             of dataflow `grip` (grasping)"
        ),
        "{out}"
    );
    let claim = claim_seconds(&out, "robot");
    eprintln!("upgrade claim: robot waited {claim:.1}s for its update lock");
    assert!(claim >= 5.0, "robot did not wait for the lock ({claim}s)");
    let log = fleet.cli.run(&["logs", "grip", "arm"]).stdout;
    assert!(log.contains("released"), "{log}");
    let new_version = format!("{old_version}{NEW_SUFFIX}");
    let upgraded: Vec<_> = MACHINES
        .iter()
        .map(|id| ((*id).to_owned(), "upgraded".to_owned(), new_version.clone()))
        .collect();
    assert_eq!(outcomes(&out, "systemd, good"), upgraded);
    for i in 0..3 {
        let installed = fleet.installed_file(i, "adora");
        assert_eq!(sha256(&installed), sha256(&new));
        assert_eq!(
            std::fs::metadata(&installed).unwrap().uid(),
            0,
            "owned by root"
        );
        assert_eq!(
            sha256(&fleet.installed_file(i, "adora.prev")),
            sha256(&bin("adora"))
        );
    }
    let versions = daemon_versions(&fleet.cli);
    let expected: Vec<_> = ["edge", "gpu-server", "robot"]
        .iter()
        .map(|id| ((*id).to_owned(), new_version.clone()))
        .collect();
    assert_eq!(versions, expected);
    assert_flowing(&fleet.cli, "ops", 3);

    // A lock held past --lock-timeout: robot is skipped (exit code 1) and left alone; --force
    // upgrades it anyway.
    fleet.start_locker("hold", "welding", None);
    let pid = fleet.daemon_pid(0);
    let mut args = vec!["--binary", &new_s, "--json", "--lock-timeout", "3s"];
    args.extend(GATE);
    let out = fleet.upgrade_robot(&args);
    eprintln!("{}", out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let robot = &json["machines"][0];
    assert_eq!(robot["outcome"], "locked", "{out}");
    let error = robot["error"].as_str().unwrap();
    assert!(
        error.starts_with(
            "still locked after 3s: machine `robot` has 1 update lock: node `arm` of dataflow \
             `hold` (welding)"
        ),
        "{error}"
    );
    assert_eq!(fleet.daemon_pid(0), pid, "a locked machine was touched");
    args.push("--force");
    let out = fleet.upgrade_robot(&args);
    eprintln!("{}", out.stderr);
    assert!(out.status.success(), "{out}");
    assert_eq!(outcomes(&out, "systemd, forced")[0].1, "upgraded");
    assert_ne!(
        fleet.daemon_pid(0),
        pid,
        "--force did not upgrade the locked machine"
    );
    assert_flowing(&fleet.cli, "ops", 3);
}

/// How long machine `id` waited to be claimed, from `cluster upgrade --json`.
fn claim_seconds(out: &Output, id: &str) -> f64 {
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let machine = json["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap()
        .clone();
    machine["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "claim")
        .and_then(|s| s["seconds"].as_f64())
        .unwrap_or_else(|| panic!("no claim step in {machine}"))
}

#[test]
fn systemd_fleet_broken_binary_is_rolled_back() {
    let Some(fleet) = SystemdFleet::installed("upgrade_broken") else {
        return;
    };
    let old_version = daemon_versions(&fleet.cli)[0].1.clone();
    fleet.start_flow();
    let pids: Vec<String> = (1..3).map(|i| fleet.daemon_pid(i)).collect();

    let broken = broken_binary(fleet.dir.path(), &old_version);
    let broken_s = broken.display().to_string();
    let mut args = vec!["--binary", &broken_s, "--json"];
    args.extend(GATE);
    let out = fleet.cluster("upgrade", &args);
    eprintln!("{}", out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let got = outcomes(&out, "systemd, broken");
    let kinds: Vec<(&str, &str)> = got
        .iter()
        .map(|(id, o, _)| (id.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("robot", "rolled_back"),
            ("gpu-server", "untouched"),
            ("edge", "untouched")
        ]
    );
    assert!(out.stdout.contains("not healthy within 30s"), "{out}");
    for i in 0..3 {
        assert_eq!(
            sha256(&fleet.installed_file(i, "adora")),
            sha256(&bin("adora"))
        );
    }
    assert_eq!(
        (1..3).map(|i| fleet.daemon_pid(i)).collect::<Vec<_>>(),
        pids
    );
    let versions = daemon_versions(&fleet.cli);
    assert_eq!(versions.len(), 3, "{versions:?}");
    assert!(
        versions.iter().all(|(_, v)| *v == old_version),
        "{versions:?}"
    );
    assert_flowing(&fleet.cli, "ops", 3);
}

/// Three namespace hosts, each with its own copy of the current adora in its own install_dir
/// (they share this filesystem), run by root; returns the fleet and its cluster.yml.
fn ad_hoc_machines(hosts: TestHosts) -> (Fleet, PathBuf) {
    Fleet::with_own_installs(hosts, MARKER, TIMEOUT, &MACHINES)
}

#[test]
fn ad_hoc_fleet_upgrade_then_broken_binary_rolled_back() {
    let Some(new) = new_binary() else { return };
    let hosts = require_hosts!("upgrade_ad_hoc", 3);
    let (fleet, cluster) = ad_hoc_machines(hosts);
    let cli = MarkedCli::new(&fleet.dir.path().join("local"), MARKER, TIMEOUT);
    let up = fleet.cluster("up", &cluster, &[]);
    assert!(up.status.success(), "{up}");
    let old_version = daemon_versions(&cli)[0].1.clone();
    let flow = dataflow(
        fleet.dir.path(),
        &bin("adora-test-node").display().to_string(),
    );
    fleet.ok(&[
        "start",
        &flow.display().to_string(),
        "--name",
        "ops",
        "--detach",
    ]);
    assert_flowing(&cli, "ops", 3);

    // A good upgrade: two at a time after the canary. Every frame on the bridge but SSH's (the
    // binary copies: encrypted, and hundreds of MB) is captured.
    let capture = fleet
        .hosts
        .capture(&fleet.dir.path().join("upgrade.pcap"), "not port 22");
    let new_s = new.display().to_string();
    let mut args = vec!["--binary", &new_s, "--max-parallel", "2"];
    args.extend(GATE);
    let out = fleet.cluster("upgrade", &cluster, &args);
    eprintln!("{}", out.stderr);
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains("3/3 upgraded."), "{out}");
    let new_version = format!("{old_version}{NEW_SUFFIX}");
    for id in MACHINES {
        assert_eq!(
            sha256(&fleet.machine_dir(id).join("bin/adora")),
            sha256(&new)
        );
        assert!(
            out.stdout.contains(&format!("adora {new_version}")),
            "{out}"
        );
        assert!(
            out.stderr.contains(&format!("{id}: health gate... OK")),
            "{out}"
        );
    }
    assert!(daemon_versions(&cli).iter().all(|(_, v)| *v == new_version));
    assert_flowing(&cli, "ops", 3);
    // Neither the admin token nor the join codes the restarted daemons enrolled with crossed it
    // in cleartext (while the control traffic and the data between hosts did cross it).
    let pcap = capture.stop();
    let seen = |needle: &str| pcap.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        pcap.len() > 10_000,
        "the capture missed the upgrade ({} bytes)",
        pcap.len()
    );
    let token = std::fs::read_to_string(fleet.dir.path().join("local/token")).unwrap();
    assert!(
        !seen(token.trim()),
        "the admin token crossed the bridge in cleartext"
    );
    for id in MACHINES {
        let code = std::fs::read_to_string(fleet.machine_dir(id).join("state/join-code")).unwrap();
        let secret = code.trim().rsplit('.').next().unwrap();
        assert!(
            !secret.is_empty() && !seen(secret),
            "{id}'s join code crossed the bridge"
        );
    }

    // A binary that cannot run a daemon: robot is rolled back, the others are untouched.
    let pid_file = |id: &str| fleet.machine_dir(id).join("state/daemon.pid");
    let pids: Vec<String> = MACHINES[1..]
        .iter()
        .map(|id| std::fs::read_to_string(pid_file(id)).unwrap())
        .collect();
    let broken = broken_binary(fleet.dir.path(), &old_version);
    let broken_s = broken.display().to_string();
    let mut args = vec!["--binary", &broken_s, "--json"];
    args.extend(GATE);
    let out = fleet.cluster("upgrade", &cluster, &args);
    eprintln!("{}", out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let got = outcomes(&out, "ad hoc, broken");
    let kinds: Vec<(&str, &str)> = got
        .iter()
        .map(|(id, o, _)| (id.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("robot", "rolled_back"),
            ("gpu-server", "untouched"),
            ("edge", "untouched")
        ]
    );
    assert!(out.stdout.contains("the daemon did not restart"), "{out}");
    for id in MACHINES {
        assert_eq!(
            sha256(&fleet.machine_dir(id).join("bin/adora")),
            sha256(&new)
        );
    }
    for (id, pid) in MACHINES[1..].iter().zip(&pids) {
        assert_eq!(
            &std::fs::read_to_string(pid_file(id)).unwrap(),
            pid,
            "{id} restarted"
        );
    }
    let versions = daemon_versions(&cli);
    assert_eq!(versions.len(), 3, "{versions:?}");
    assert!(
        versions.iter().all(|(_, v)| *v == new_version),
        "{versions:?}"
    );
    assert_flowing(&cli, "ops", 3);
    fleet.down();
}
