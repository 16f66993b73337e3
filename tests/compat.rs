//! dora 1.x dataflows through the real binary: the compatibility corpus (`tests/compat/*.yml`)
//! validates without a warning, unsupported features get one clear line each, type problems are
//! warnings (errors with `--strict-types`), `adora graph` shows types, `adora schema` prints the
//! library's schema, and a dataflow in dora syntax runs.

use std::{path::Path, time::Duration};

use adora_test_support::{adora, bin, repo_root, run_with_timeout, temp_dir, Output};

/// Upper bound of one validate/graph/schema command.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound of the `adora run` of the runnable dataflow.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn cli(args: &[&str]) -> Output {
    let state = temp_dir();
    let mut cmd = adora(state.path());
    cmd.args(args);
    run_with_timeout(cmd, TIMEOUT)
}

#[test]
fn every_compat_dataflow_validates_without_warnings() {
    let dir = repo_root().join("tests/compat");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let out = cli(&["validate", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}:\n{out}", file.display());
        assert!(out.stdout.contains("is valid"), "{out}");
        assert!(
            !out.stderr.contains("warning"),
            "{}:\n{out}",
            file.display()
        );
    }
}

#[test]
fn unsupported_features_get_one_line_each() {
    let file = repo_root().join("tests/compat/unsupported/operators.yml");
    let out = cli(&["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let f = file.display();
    assert_eq!(
        lines,
        [
            format!("{f}:4: not supported by Adora yet: operators (node `runtime-node`, line 4)"),
            format!("{f}:12: not supported by Adora yet: operator (node `single`, line 12)"),
            format!("{f}:16: not supported by Adora yet: ros2 (node `bridge`, line 16)"),
            format!("{f}:19: not supported by Adora yet: hub (node `from-hub`, line 19)"),
            format!("4 problems found in {f}"),
        ],
        "{out}"
    );
}

/// A sender and a receiver whose annotated types do not match.
const MISMATCH: &str = "\
nodes:
  - id: sender
    path: ./sender.py
    outputs: [out]
    output_types:
      out: std/core/v1/Float64
  - id: sink
    path: ./sink.py
    inputs:
      in: sender/out
    input_types:
      in: std/core/v1/Float32
";

#[test]
fn type_mismatches_are_warnings_or_errors_when_strict() {
    let dir = temp_dir();
    let file = dir.path().join("dataflow.yml");
    std::fs::write(&file, MISMATCH).unwrap();
    let path = file.to_str().unwrap();
    let message = "node `sink`: field `input_types.in`: type mismatch: `sender/out` \
                   (std/core/v1/Float64) → `sink/in` (std/core/v1/Float32)";
    let out = cli(&["validate", path]);
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout.contains("is valid (2 nodes, 1 warning)"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains(&format!("warning: {path}:12: {message}")),
        "{out}"
    );
    let out = cli(&["validate", "--strict-types", path]);
    assert_eq!(out.status.code(), Some(2), "{out}");
    std::fs::write(&file, format!("strict_types: true\n{MISMATCH}")).unwrap();
    let out = cli(&["validate", path]);
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(
        out.stderr.contains(&format!("{path}:13: {message}")),
        "{out}"
    );
}

#[test]
fn graph_labels_edges_with_their_types() {
    let file = repo_root().join("tests/compat/typed-ports.yml");
    let out = cli(&["graph", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out}");
    for edge in [
        "camera -->|\"image: Image[encoding=rgb8]\"| detector",
        "microphone -->|\"audio: AudioFrame[channels=2,sample_type=f32]\"| recorder",
        "timer_millis_33 -->|\"tick: UInt64\"| camera",
    ] {
        assert!(out.stdout.contains(edge), "missing {edge}:\n{out}");
    }
}

#[test]
fn schema_prints_the_libraries_schema() {
    let out = cli(&["schema"]);
    assert!(out.status.success(), "{out}");
    let printed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(printed, adora_core::schema::dataflow_schema());
    assert_eq!(printed["title"], "Adora dataflow");
}

#[test]
fn a_dataflow_in_dora_syntax_runs() {
    let (state, dir) = (temp_dir(), temp_dir());
    let node = bin("adora-test-node");
    let work = dir.path().join("work");
    // The root `deploy` (a working directory) reaches the node that has an `_unstable_deploy`
    // of its own and the ones that have none.
    let yaml = format!(
        "\
deploy:
  working_dir: {work}
nodes:
  - id: source
    path: {node}
    env: {{ MODE: seq-source, COUNT: 10, PAYLOAD_BYTES: 8 }}
    inputs:
      tick: dora/timer/millis/20
    input_types:
      tick: std/core/v1/UInt64
    outputs: [data]
    output_types:
      data: std/core/v1/Bytes
    output_framing: arrow-ipc
  - id: relay
    path: {node}
    env: {{ MODE: relay }}
    inputs:
      in: source/data
    outputs: [out]
    _unstable_deploy:
      distribute: local
  - id: sink
    path: {node}
    env: {{ MODE: seq-sink, PROGRESS: 100 }}
    inputs:
      in: relay/out
    input_types:
      in: std/core/v1/Bytes
",
        work = work.display(),
        node = node.display()
    );
    let file = dir.path().join("dataflow.yml");
    std::fs::write(&file, yaml).unwrap();
    let mut cmd = adora(state.path());
    cmd.args(["run", file.to_str().unwrap()]);
    let out = run_with_timeout(cmd, RUN_TIMEOUT);
    assert!(out.status.success(), "{out}");
    let done = out
        .stdout
        .lines()
        .find(|l| l.contains("seq-sink done"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(done.contains("lost=0 next=10 "), "{done}\n{out}");
    assert!(
        Path::new(&work).is_dir(),
        "working_dir was not created\n{out}"
    );
}
