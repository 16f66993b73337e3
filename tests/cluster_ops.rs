//! Fleet operations on real test hosts: `cluster restart` of a dataflow on the detached daemons
//! `cluster up` started (the rolling `cluster upgrade` is tested in `upgrade.rs`).
//!
//! Test hosts share this filesystem, so every machine gets its **own** `install_dir` (a copy of
//! `target/debug/adora`) and `state_dir` under the test's temp dir.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use adora_test_support::{bin, fleet::Fleet, hosts::TestHosts, require_hosts, wait_until};

/// Upper bound of one CLI command.
const TIMEOUT: Duration = Duration::from_secs(240);
/// Upper bound for a condition to become true.
const WAIT: Duration = Duration::from_secs(30);
/// Marks the processes this test starts locally (the coordinator inherits it).
const MARKER: &str = "ADORA_E2E_CLUSTER_OPS_TEST";
/// Machine ids, in rollout order; `robot` and `gpu-server` each run a sequence source, `edge`
/// runs the sinks.
const MACHINES: [&str; 3] = ["robot", "gpu-server", "edge"];

/// Three machines, each with its own copy of the current adora in its own install_dir; returns
/// the fleet and its cluster.yml.
fn three_machines(hosts: TestHosts) -> (Fleet, PathBuf) {
    Fleet::with_own_installs(hosts, MARKER, TIMEOUT, &MACHINES)
}

/// Machine id → adora version of its connected daemon, from `cluster status --json`.
fn daemon_versions(fleet: &Fleet) -> Vec<(String, String)> {
    adora_test_support::connected_versions(&fleet.ok(&["cluster", "status", "--json"]).stdout)
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
fn restart_of_a_dataflow_on_ad_hoc_daemons() {
    let hosts = require_hosts!("cluster_ops", 3);
    let (fleet, cluster) = three_machines(hosts);
    let up = fleet.cluster("up", &cluster, &[]);
    assert!(up.status.success(), "{up}");
    assert_eq!(daemon_versions(&fleet).len(), 3);

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

    fleet.down();
}
