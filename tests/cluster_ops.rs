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

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use adora_test_support::{bin, bin_dir, fleet::Fleet, hosts::TestHosts, require_hosts, wait_until};

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

/// Three machines, each with its own copy of the current adora in its own install_dir; returns
/// the fleet and its cluster.yml.
fn three_machines(hosts: TestHosts) -> (Fleet, PathBuf) {
    let fleet = Fleet::new(hosts, MARKER, TIMEOUT);
    let mut yaml = format!(
        "coordinator: {{ addr: {}, port: {} }}\nmachines:\n",
        fleet.hosts.gateway_ip(),
        fleet.port
    );
    for (i, id) in MACHINES.iter().enumerate() {
        let install = install_dir(&fleet, id);
        std::fs::create_dir_all(&install).unwrap();
        std::fs::copy(bin("adora"), install.join("adora")).unwrap();
        yaml.push_str(&format!(
            "  - {{ id: {id}, host: {}, user: root, install_dir: {}, state_dir: {} }}\n",
            fleet.hosts[i].ip(),
            install.display(),
            fleet.machine_dir(id).join("state").display()
        ));
    }
    let cluster = fleet.dir.path().join("cluster.yml");
    std::fs::write(&cluster, yaml).unwrap();
    (fleet, cluster)
}

fn install_dir(fleet: &Fleet, id: &str) -> PathBuf {
    fleet.machine_dir(id).join("bin")
}

/// Machine id → adora version of its connected daemon, from `cluster status --json`.
fn daemon_versions(fleet: &Fleet) -> Vec<(String, String)> {
    let out = fleet.ok(&["cluster", "status", "--json"]);
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
fn sink_progress(fleet: &Fleet, flow: &str, sink: &str) -> (u64, String) {
    let out = fleet.run(&["logs", flow, sink]);
    let count = out
        .stdout
        .lines()
        .filter_map(|l| l.split("received=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .max()
        .unwrap_or(0);
    (count, out.stdout)
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
    let (fleet, cluster) = three_machines(hosts);
    let up = fleet.cluster("up", &cluster, &[]);
    assert!(up.status.success(), "{up}");
    let old_version = daemon_versions(&fleet)[0].1.clone();
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
        sink_progress(&fleet, "ops", "robot-sink").0 >= 20
            && sink_progress(&fleet, "ops", "gpu-server-sink").0 >= 20
    });
    assert!(
        flowing,
        "{}",
        sink_progress(&fleet, "ops", "gpu-server-sink").1
    );

    // Upgrading robot alone: gpu-server → edge keeps delivering, without a gap.
    let only_robot = fleet.dir.path().join("robot-only.yml");
    let yaml = std::fs::read_to_string(&cluster).unwrap();
    let robot_line = yaml.lines().find(|l| l.contains("id: robot")).unwrap();
    let head: String = yaml
        .lines()
        .take_while(|l| !l.starts_with("  -"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&only_robot, format!("{head}{robot_line}\n")).unwrap();
    let (before, _) = sink_progress(&fleet, "ops", "gpu-server-sink");
    let new_s = new.display().to_string();
    let robot_up = fleet.cluster("upgrade", &only_robot, &["--binary", &new_s]);
    println!("{robot_up}");
    assert!(robot_up.status.success(), "{robot_up}");
    assert!(robot_up.stdout.contains("1/1 succeeded."), "{robot_up}");
    let grew = wait_until(WAIT, || {
        sink_progress(&fleet, "ops", "gpu-server-sink").0 >= before + 50
    });
    let (after, log) = sink_progress(&fleet, "ops", "gpu-server-sink");
    assert!(
        grew,
        "gpu-server → edge stalled at {after} (was {before}):\n{log}"
    );
    assert!(!log.contains("seq-sink gap"), "messages lost:\n{log}");

    // The whole fleet, one machine at a time.
    let out = fleet.cluster("upgrade", &cluster, &["--binary", &new_s]);
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
        assert_eq!(sha256(&install_dir(&fleet, id).join("adora")), sha256(&new));
        assert!(install_dir(&fleet, id).join("adora.previous").exists());
    }
    // In rollout order.
    let order: Vec<usize> = MACHINES
        .iter()
        .map(|id| out.stdout.find(&format!("Upgrading {id} (")).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{out}");
    assert!(out.stdout.contains("3/3 succeeded."), "{out}");
    let versions = daemon_versions(&fleet);
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
    let out = fleet.cluster(
        "upgrade",
        &cluster,
        &["--binary", &broken.display().to_string()],
    );
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
        assert_eq!(sha256(&install_dir(&fleet, id).join("adora")), sha256(&new));
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
    let versions = daemon_versions(&fleet);
    assert_eq!(
        versions,
        [
            ("edge".to_owned(), new_version.clone()),
            ("gpu-server".to_owned(), new_version.clone())
        ]
    );
}
