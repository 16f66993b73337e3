//! CI: a few thousand cases of every fuzz target, fixed seed (so a failure replays), each target
//! its own test so they run in parallel.

use std::time::Duration;

use adora_fuzz::{find, run_on_case_stack, RunConfig};

/// Cases per target in CI (`ADORA_FUZZ_CASES` overrides it); the release runner does 100x more.
const CI_CASES: u64 = 10_000;

/// Cases of the JSON targets in CI: unoptimized serde_json on mutated messages runs ~400 cases/s.
const CI_JSON_CASES: u64 = 3_000;

/// Cases of the YAML targets in CI: the unoptimized YAML parser and validator run ~40 cases/s on
/// the hostile inputs (the release runner ~250).
const CI_YAML_CASES: u64 = 300;

const JSON_TARGETS: &[&str] = &[
    "cli-to-coordinator",
    "coordinator-to-cli",
    "daemon-to-coordinator",
    "coordinator-to-daemon",
    "handshake-enroll",
];

fn check(name: &str) {
    let target = find(name).expect("the test names a target");
    let default = if name.ends_with("-yaml") {
        CI_YAML_CASES
    } else if JSON_TARGETS.contains(&name) {
        CI_JSON_CASES
    } else {
        CI_CASES
    };
    let cases = std::env::var("ADORA_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    let seed = std::env::var("ADORA_FUZZ_SEED")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(22);
    let report = run_on_case_stack(
        target,
        RunConfig {
            cases,
            seed,
            start: 0,
            // Unoptimized code is 10-20x slower than the release runner (1 s limit); the 4 MiB inputs
            // of the YAML targets take seconds.
            time_limit: Duration::from_secs(30),
        },
    );
    println!(
        "{name}: {} cases, {:.0} cases/s, slowest {:?} (case {})",
        report.cases,
        report.rate(),
        report.slowest.0,
        report.slowest.1
    );
    let findings: Vec<String> = report
        .findings
        .iter()
        .map(|f| format!("{:?} (replay: cargo run -p adora-fuzz --release -- --target {name} --seed {seed} --case {}): {}", f.kind, f.case, f.message))
        .collect();
    assert!(
        findings.is_empty(),
        "{} findings:\n{}",
        report.finding_count,
        findings.join("\n")
    );
}

macro_rules! targets {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(#[test] fn $test() { check($name); })*

        #[test]
        fn every_target_has_a_test() {
            let tested = [$($name),*];
            for t in adora_fuzz::TARGETS {
                assert!(tested.contains(&t.name), "target {} has no test here", t.name);
            }
        }
    };
}

targets! {
    dataflow_yaml => "dataflow-yaml",
    cluster_yaml => "cluster-yaml",
    node_to_daemon => "node-to-daemon",
    daemon_to_node => "daemon-to-node",
    lane_entries => "lane-entries",
    cli_to_coordinator => "cli-to-coordinator",
    coordinator_to_cli => "coordinator-to-cli",
    daemon_to_coordinator => "daemon-to-coordinator",
    coordinator_to_daemon => "coordinator-to-daemon",
    handshake_enroll => "handshake-enroll",
    remote_header => "remote-header",
    type_info => "type-info",
    artifact_paths => "artifact-paths",
    remote_shell => "remote-shell",
}
