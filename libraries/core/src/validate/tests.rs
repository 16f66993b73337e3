//! Tests of parsing and validation: accepted dataflows, the document shape, and reporting.
//! Field-level errors are tested in `node/tests.rs`, cross-node errors in `checks/tests.rs`.

use std::{path::Path, time::Duration};

use super::*;
use crate::{
    descriptor::{Distribute, EnvValue, InputSource, InputSpec, LongInput, RestartPolicy},
    timer::TimerSpec,
};

/// The file name used in every test.
pub(crate) const FILE: &str = "flow.yml";

/// Parses `yaml`, which must be valid.
pub(crate) fn parse_ok(yaml: &str) -> Descriptor {
    match Descriptor::parse(yaml, Path::new(FILE)) {
        Ok(d) => d,
        Err(e) => panic!("expected a valid dataflow, got:\n{e}"),
    }
}

/// One error as `(line, node, field, message)`, for exact comparisons.
pub(crate) type Found = (Option<usize>, Option<String>, Option<String>, String);

/// Parses `yaml`, which must be invalid, and returns its errors; checks they name [`FILE`].
pub(crate) fn errors(yaml: &str) -> Vec<Found> {
    let errors = Descriptor::parse(yaml, Path::new(FILE)).expect_err("expected validation errors");
    errors
        .0
        .into_iter()
        .map(|e| {
            assert_eq!(e.file, Path::new(FILE));
            (e.line, e.node, e.field, e.message)
        })
        .collect()
}

/// The expected form of one error.
pub(crate) fn e(line: usize, node: Option<&str>, field: Option<&str>, message: &str) -> Found {
    (
        Some(line),
        node.map(str::to_owned),
        field.map(str::to_owned),
        message.to_owned(),
    )
}

const FULL: &str = r#"
nodes:
  - id: camera
    name: Camera
    description: Captures frames
    path: ./target/release/camera
    args: --device 0 --title "front camera"
    env: { WIDTH: 640, SCALE: 1.5, DEBUG: true, MODE: fast }
    build: cargo build -p camera --release
    inputs:
      tick: adora/timer/millis/20
    outputs: [frames, status]
    restart_policy: on-failure
    max_restarts: 5
    restart_delay: 500ms
    max_restart_delay: 10
    restart_window: 1m 30s
  - id: inference
    path: ./ml-model
    inputs:
      frames: { source: camera/frames, queue_size: 2 }
      status: camera/status
    outputs: [predictions]
    _unstable_deploy:
      labels: { gpu: "true" }
      machine: robot
      distribute: scp
      working_dir: /tmp/inference
"#;

#[test]
fn parses_every_field() {
    let d = parse_ok(FULL);
    let camera = &d.nodes[0];
    assert_eq!(camera.id.as_str(), "camera");
    assert_eq!(camera.name.as_deref(), Some("Camera"));
    assert_eq!(camera.path, "./target/release/camera");
    let args = camera.split_args().expect("balanced quotes");
    assert_eq!(args, ["--device", "0", "--title", "front camera"]);
    assert_eq!(camera.env["WIDTH"], EnvValue::Integer(640));
    assert_eq!(camera.env["SCALE"], EnvValue::Float(1.5));
    assert_eq!(camera.env["DEBUG"], EnvValue::Bool(true));
    assert_eq!(camera.env["MODE"], EnvValue::String("fast".into()));
    assert_eq!(camera.restart_policy, RestartPolicy::OnFailure);
    assert_eq!(camera.max_restarts, Some(5));
    assert_eq!(
        camera.restart_delay.map(|d| d.0),
        Some(Duration::from_millis(500))
    );
    assert_eq!(
        camera.max_restart_delay.map(|d| d.0),
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        camera.restart_window.map(|d| d.0),
        Some(Duration::from_secs(90))
    );
    let outputs: Vec<_> = camera.outputs.iter().map(|o| o.as_str()).collect();
    assert_eq!(outputs, ["frames", "status"]);
    let deploy = d.nodes[1].deploy();
    assert_eq!(deploy.machine.as_deref(), Some("robot"));
    assert_eq!(deploy.labels["gpu"], "true");
    assert_eq!(deploy.distribute, Distribute::Scp);
    assert_eq!(deploy.working_dir, Some("/tmp/inference".into()));
}

#[test]
fn round_trips_through_yaml() {
    let d = parse_ok(FULL);
    let yaml = serde_yaml::to_string(&d).expect("descriptor serializes");
    assert_eq!(parse_ok(&yaml), d);
}

#[test]
fn short_and_long_inputs_with_default_queue_size() {
    let d = parse_ok(FULL);
    let inference = &d.nodes[1];
    let frames = &inference.inputs["frames"];
    assert_eq!(
        frames,
        &InputSpec::Long(LongInput {
            source: "camera/frames".into(),
            queue_size: Some(2),
            input_timeout: None,
            poll: None,
        })
    );
    assert_eq!(frames.queue_size(), 2);
    let status = &inference.inputs["status"];
    assert_eq!(status, &InputSpec::Short("camera/status".into()));
    assert_eq!(status.queue_size(), crate::DEFAULT_QUEUE_SIZE);
    assert_eq!(crate::DEFAULT_QUEUE_SIZE, 10);
    assert_eq!(
        status.resolve(),
        Ok(InputSource::Node {
            node: "camera".into(),
            output: "status".into()
        })
    );
    // The long form without `queue_size` also gets the default.
    let d =
        parse_ok("nodes:\n  - { id: a, path: x, inputs: { t: { source: adora/timer/secs/1 } } }\n");
    assert_eq!(d.nodes[0].inputs["t"].queue_size(), 10);
}

#[test]
fn accepts_the_dora_timer_alias() {
    let d = parse_ok(
        "nodes:\n  - id: a\n    path: x\n    inputs:\n      fast: dora/timer/millis/20\n      slow: adora/timer/hz/2\n",
    );
    let timer = |input: &str| d.nodes[0].inputs[input].resolve();
    let millis = |ms| {
        Ok(InputSource::Timer(TimerSpec {
            interval: Duration::from_millis(ms),
        }))
    };
    assert_eq!(timer("fast"), millis(20));
    assert_eq!(timer("slow"), millis(500));
}

#[test]
fn empty_fields_mean_not_set() {
    let d = parse_ok("nodes:\n  - id: a\n    path: x\n    inputs:\n    outputs:\n    env:\n    restart_policy:\n    _unstable_deploy:\n");
    let node = &d.nodes[0];
    assert!(node.inputs.is_empty() && node.outputs.is_empty() && node.env.is_empty());
    assert_eq!(node.restart_policy, RestartPolicy::Never);
    assert_eq!(node.deploy, None);
}

#[test]
fn self_inputs_and_cycles_are_allowed() {
    let d = parse_ok(
        "\
nodes:
  - { id: a, path: x, outputs: [o], inputs: { own: a/o, back: b/o } }
  - { id: b, path: x, outputs: [o], inputs: { in: a/o } }
",
    );
    assert_eq!(d.nodes.len(), 2);
}

#[test]
fn malformed_yaml_reports_its_line() {
    let found = errors("nodes:\n  - id: a\n    path: [x\n  - id: b\n");
    assert_eq!(found.len(), 1);
    let (line, node, field, message) = &found[0];
    assert_eq!((*line, node, field), (Some(4), &None, &None));
    assert!(message.starts_with("invalid YAML: "), "{message}");
}

#[test]
fn document_shape_errors() {
    let shape = |yaml| errors(yaml);
    assert_eq!(
        shape(""),
        [e(
            1,
            None,
            None,
            "the dataflow is empty: expected a mapping with a `nodes` list"
        )]
    );
    assert_eq!(
        shape("- id: a\n"),
        [e(
            1,
            None,
            None,
            "the dataflow must be a mapping with a `nodes` list, found a list"
        )]
    );
    assert_eq!(
        shape("name: x\n"),
        [
            e(
                1,
                None,
                Some("name"),
                &format!(
                    "unknown field `name`; expected one of: {}",
                    ROOT_FIELDS.join(", ")
                )
            ),
            (
                None,
                None,
                Some("nodes".into()),
                "missing required field `nodes`".into()
            ),
        ]
    );
    assert_eq!(
        shape("# flow\nnodes: camera\n"),
        [e(
            2,
            None,
            Some("nodes"),
            "expected a list of nodes, found a string (`camera`)"
        )]
    );
    assert_eq!(
        shape("nodes: []\n"),
        [e(1, None, Some("nodes"), "the dataflow has no nodes")]
    );
}

#[test]
fn unknown_top_level_key_gets_a_suggestion() {
    assert_eq!(
        errors("node:\n  - { id: a, path: x }\n"),
        [
            e(
                1,
                None,
                Some("node"),
                "unknown field `node`; did you mean `nodes`?"
            ),
            (
                None,
                None,
                Some("nodes".into()),
                "missing required field `nodes`".into()
            ),
        ]
    );
}

#[test]
fn several_errors_are_all_reported_in_file_order() {
    let found = errors(
        "\
nodes:
  - id: camera
    path: ./camera
    ouputs: [frames]
    env:
      ADORA_NODE_ID: x
  - id: camera
    inputs:
      image: camera/frames
      tick: adora/timer/weeks/1
    restart_policy: sometimes
",
    );
    let invalid_timer = "invalid timer `adora/timer/weeks/1`: unknown unit `weeks` (expected \
                         adora/timer/millis/N, adora/timer/secs/N or adora/timer/hz/F)";
    assert_eq!(
        found,
        [
            e(
                4,
                Some("camera"),
                Some("ouputs"),
                "unknown field `ouputs`; did you mean `outputs`?"
            ),
            e(
                6,
                Some("camera"),
                Some("env.ADORA_NODE_ID"),
                "`ADORA_NODE_ID` is set by the runtime and cannot be overridden"
            ),
            e(
                7,
                Some("camera"),
                Some("path"),
                "missing required field `path`"
            ),
            e(
                7,
                Some("camera"),
                Some("id"),
                "duplicate node id `camera` (first defined on line 2)"
            ),
            e(
                9,
                Some("camera"),
                Some("inputs.image"),
                "node `camera` has no output `frames` (it declares no outputs)"
            ),
            e(10, Some("camera"), Some("inputs.tick"), invalid_timer),
            e(
                11,
                Some("camera"),
                Some("restart_policy"),
                "invalid restart policy `sometimes`; expected one of: never, on-failure, always"
            ),
        ]
    );
}

#[test]
fn display_names_file_line_node_and_field() {
    let err = Descriptor::parse(
        "nodes:\n  - id: a\n    path: x\n    outputs: 5\n",
        Path::new(FILE),
    )
    .expect_err("outputs must be a list");
    assert_eq!(
        err.to_string(),
        "flow.yml:4: node `a`: field `outputs`: expected a list of output ids (e.g. `[frames]`), found a number (5)"
    );
}

#[test]
fn read_reports_unreadable_files_and_validates_readable_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.yml");
    let err = Descriptor::read(&missing).expect_err("file does not exist");
    assert_eq!(err.0.len(), 1);
    assert_eq!(
        (err.0[0].file.as_path(), err.0[0].line),
        (missing.as_path(), None)
    );
    assert!(
        err.0[0].message.starts_with("cannot read file: "),
        "{}",
        err.0[0].message
    );

    let file = dir.path().join("dataflow.yml");
    std::fs::write(&file, "nodes:\n  - { id: a, path: x }\n  - { id: b }\n").expect("write");
    let err = Descriptor::read(&file).expect_err("b has no path");
    assert_eq!(
        err.to_string(),
        format!(
            "{}:3: node `b`: field `path`: missing required field `path`",
            file.display()
        )
    );
    std::fs::write(&file, "nodes:\n  - { id: a, path: x }\n").expect("write");
    assert_eq!(
        Descriptor::read(&file).expect("valid").nodes[0].id.as_str(),
        "a"
    );
}

#[test]
fn suggestions_only_for_obvious_typos() {
    let fields = node::NODE_FIELDS.iter().copied();
    assert_eq!(suggest("ouputs", fields.clone()), Some("outputs"));
    assert_eq!(suggest("inptus", fields.clone()), Some("inputs"));
    assert_eq!(suggest("Path", fields.clone()), Some("path"));
    assert_eq!(suggest("colour", fields.clone()), None);
    assert_eq!(suggest("operators", fields), None);
}

#[test]
fn yaml_tags_are_reported_not_silently_dropped() {
    assert_eq!(
        errors("nodes:\n  - id: a\n    path: !env CAMERA_PATH\n    outputs: [!o x]\n"),
        [
            e(
                3,
                Some("a"),
                Some("path"),
                "YAML tags are not supported (found `!env`)"
            ),
            e(
                4,
                Some("a"),
                Some("outputs[0]"),
                "YAML tags are not supported (found `!o`)"
            ),
        ]
    );
    assert_eq!(
        errors("nodes: !list\n  - { id: a, path: x }\n"),
        [e(
            1,
            None,
            Some("nodes"),
            "YAML tags are not supported (found `!list`)"
        )]
    );
}

#[test]
fn duplicate_keys_are_yaml_errors_with_a_line() {
    // serde_yaml reports a duplicate key at the start of its mapping, not at the repeated key.
    let found = errors("nodes:\n  - id: a\n    path: x\n    path: y\n");
    assert_eq!(found.len(), 1);
    let (line, node, field, message) = &found[0];
    assert_eq!((*line, node, field), (Some(2), &None, &None));
    assert!(
        message.contains("duplicate entry with key \"path\""),
        "{message}"
    );
}

#[test]
fn a_file_with_thousands_of_problems_locates_only_the_first_ones() {
    // Found by adora-fuzz: every problem re-read the file to find its line, so many copies of
    // one node took time quadratic in the file's size.
    let node = "  - id: same\n    path: x\n    inputs: { a: nowhere/out }\n";
    let yaml = format!("nodes:\n{}", node.repeat(300));
    let errors = Descriptor::parse(&yaml, Path::new("big.yml")).expect_err("duplicate ids");
    assert!(errors.0.len() > MAX_LINE_LOOKUPS, "{}", errors.0.len());
    let located = errors.0.iter().filter(|e| e.line.is_some()).count();
    assert!(located <= MAX_LINE_LOOKUPS, "{located} lines looked up");
    assert!(located > 0);
}

#[test]
fn huge_unknown_names_get_no_suggestion() {
    // Found by adora-fuzz: the edit distance of a 146 KB field name took a second.
    let long = "x".repeat(200_000);
    assert_eq!(suggest(&long, ["inputs", "outputs"]), None);
    assert_eq!(suggest("inputs", [long.as_str()]), None);
    assert_eq!(suggest("inptus", ["inputs", long.as_str()]), Some("inputs"));
}

#[test]
fn an_empty_machine_or_working_dir_in_the_root_deploy_is_refused() {
    // Found by adora-fuzz: the nodes inherit them, and a node's own may not be empty.
    let found =
        errors("deploy:\n  machine: ''\n  working_dir: ' '\nnodes:\n  - id: a\n    path: x\n");
    let fields: Vec<Option<&str>> = found.iter().map(|f| f.2.as_deref()).collect();
    assert!(fields.contains(&Some("deploy.machine")), "{found:?}");
    assert!(fields.contains(&Some("deploy.working_dir")), "{found:?}");
}

#[test]
fn an_empty_root_deploy_is_no_default() {
    // Found by adora-fuzz: it came back from the descriptor as the defaults' values.
    let d = parse_ok("deploy: {}\nnodes:\n  - id: a\n    path: x\n");
    assert!(d.deploy.is_none());
    assert!(d.nodes[0].deploy.is_none());
}
