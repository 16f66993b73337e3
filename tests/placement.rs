//! Resource-aware placement end to end: the real `adora` coordinator and CLI, with simulated
//! daemons (`adora_test_support::simulator`) reporting chosen capacity, use and thresholds, so
//! the outcome does not depend on this machine's load.

use std::{path::Path, time::Duration};

use adora_core::resources::MachineLimits;
use adora_test_support::{
    run_with_timeout,
    services::Coordinator,
    simulator::{SimulatedFleet, SimulatedMachine},
    temp_dir, wait_until, Output,
};

/// Upper bound of one CLI command.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for the simulated daemons' first heartbeats to reach the coordinator.
const WAIT: Duration = Duration::from_secs(30);
const GIB: u64 = 1 << 30;

fn cli(coordinator: &Coordinator, args: &[&str]) -> Output {
    let mut cmd = coordinator.cli();
    cmd.args(args);
    run_with_timeout(cmd, TIMEOUT)
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn dataflow(dir: &Path, name: &str, resources: &str) -> String {
    let path = dir.join(format!("{name}.yml"));
    let yaml = format!(
        "nodes:\n  - id: {name}\n    path: /bin/true\n    deploy:\n      labels: {{ pool: vision }}\n      resources: {resources}\n"
    );
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

#[test]
fn placement_follows_reported_headroom_and_refuses_what_fits_nowhere() {
    let state = temp_dir();
    let coordinator = Coordinator::start(state.path(), "127.0.0.1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // Three daemons with the same labels: `small` has 3.1 GiB free and a GPU, `roomy` 12 GiB
    // and no GPU free, `busy` is above its CPU threshold.
    let machines = [
        SimulatedMachine::new("small")
            .label("pool", "vision")
            .figures(8, 20.0, 16 * GIB, 3_328_599_654, 100 * GIB, Some(1)),
        SimulatedMachine::new("roomy")
            .label("pool", "vision")
            .figures(8, 20.0, 16 * GIB, 12 * GIB, 100 * GIB, Some(0)),
        SimulatedMachine::new("busy")
            .label("pool", "vision")
            .limits(MachineLimits {
                max_cpu_percent: Some(90),
                ..MachineLimits::default()
            })
            .figures(8, 95.0, 16 * GIB, 15 * GIB, 100 * GIB, Some(4)),
    ];
    let fleet = runtime
        .block_on(SimulatedFleet::start_machines(
            &coordinator.addr,
            &coordinator.auth(),
            machines,
        ))
        .expect("the simulated daemons connect");
    coordinator.wait_for_daemons(3);
    let reported = || {
        let status = json(&cli(&coordinator, &["cluster", "status", "--json"]));
        status["daemons"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["machine"]["cpus"] == 8)
            .count()
            == 3
    };
    assert!(wait_until(WAIT, reported), "no figures in the heartbeats");

    // What a user sees: cores, GPUs, and the machine above its threshold.
    let status = json(&cli(&coordinator, &["cluster", "status", "--json"]));
    let daemon = |id: &str| {
        status["daemons"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("no daemon {id}: {status}"))
            .clone()
    };
    assert_eq!(
        daemon("busy")["over_limits"],
        serde_json::json!(["cpu 95% > 90%"])
    );
    assert_eq!(daemon("small")["over_limits"], serde_json::json!([]));
    assert_eq!(daemon("small")["machine"]["gpus"], 1);
    let table = cli(&coordinator, &["cluster", "status"]);
    assert!(table.status.success(), "{table}");
    assert!(table.stdout.contains("full: cpu 95% > 90%"), "{table}");

    // 4 GiB: only `roomy` has the headroom (the first matching daemon, `small`, has not).
    let file = dataflow(state.path(), "detector", "{ memory: 4GiB }");
    let out = cli(
        &coordinator,
        &["start", &file, "--detach", "--name", "vision"],
    );
    assert!(out.status.success(), "{out}");
    let nodes = json(&cli(&coordinator, &["node", "list", "vision", "--json"]));
    assert_eq!(nodes[0]["node"], "detector");
    assert_eq!(nodes[0]["machine"], "roomy", "{nodes}");
    let status = json(&cli(&coordinator, &["cluster", "status", "--json"]));
    let roomy = status["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "roomy")
        .unwrap()
        .clone();
    assert_eq!(roomy["reserved"]["memory"], 4 * GIB, "{roomy}");

    // Memory and a GPU: no machine has both; the start fails naming each machine and resource.
    let file = dataflow(state.path(), "tracker", "{ memory: 4GiB, gpus: 1 }");
    let out = cli(
        &coordinator,
        &["start", &file, "--detach", "--name", "tracking"],
    );
    assert!(
        !out.status.success(),
        "an impossible request must fail: {out}"
    );
    assert!(
        out.stderr.contains(
            "node `tracker`: no machine can take it: small: memory 3.1 GiB free < 4.0 GiB \
             requested; roomy: 0 GPUs free < 1 requested; busy: above its threshold: \
             cpu 95% > 90%"
        ),
        "{out}"
    );
    let list = json(&cli(&coordinator, &["list", "--json"]));
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|d| d["name"] != "tracking"),
        "nothing started: {list}"
    );

    // A node without requests takes the first matching daemon below its thresholds.
    let file = dataflow(state.path(), "plain", "{}");
    let out = cli(
        &coordinator,
        &["start", &file, "--detach", "--name", "plain"],
    );
    assert!(out.status.success(), "{out}");
    let nodes = json(&cli(&coordinator, &["node", "list", "plain", "--json"]));
    assert_eq!(nodes[0]["machine"], "small", "{nodes}");

    for name in ["vision", "plain"] {
        let out = cli(&coordinator, &["stop", name]);
        assert!(out.status.success(), "{out}");
    }
    runtime
        .block_on(fleet.shutdown())
        .expect("no simulated daemon failed");
}

#[test]
fn a_real_daemon_reports_its_capacity_and_thresholds() {
    let state = temp_dir();
    let coordinator = Coordinator::start(state.path(), "127.0.0.1");
    // No file system has a petabyte free: this daemon is always above its disk threshold.
    let _daemon = coordinator.daemon_local("real", &["--min-disk-free", "1048576GiB"]);
    coordinator.wait_for_daemons(1);
    let mut seen = serde_json::Value::Null;
    let reported = || {
        let status = json(&cli(&coordinator, &["cluster", "status", "--json"]));
        seen = status["daemons"][0].clone();
        !seen["machine"].is_null()
    };
    assert!(wait_until(WAIT, reported), "no figures in the heartbeats");
    let machine = &seen["machine"];
    assert!(machine["cpus"].as_u64().unwrap() >= 1, "{seen}");
    let cpu = machine["cpu_percent"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&cpu), "{seen}");
    assert_eq!(seen["limits"]["min_disk_free"], 1024u64 << 40, "{seen}");
    let over = seen["over_limits"][0].as_str().unwrap();
    assert!(
        over.starts_with("disk ") && over.ends_with(" free < 1024.0 TiB"),
        "{seen}"
    );

    let file = state.path().join("pinned.yml");
    std::fs::write(
        &file,
        "nodes:\n  - id: pinned\n    path: /bin/true\n    deploy: { machine: real }\n",
    )
    .unwrap();
    let out = cli(&coordinator, &["start", file.to_str().unwrap(), "--detach"]);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("node `pinned`: no machine can take it: real: above its threshold: disk "),
        "{out}"
    );
}
