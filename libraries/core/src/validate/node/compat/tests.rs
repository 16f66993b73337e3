//! `deploy` / `_unstable_deploy`, the root `deploy`, `output_framing` and unsupported features.

use std::{collections::BTreeMap, path::Path};

use crate::{
    descriptor::{Deploy, Distribute, OutputFraming},
    placement::{place, Candidate},
    validate::tests::{e, errors, parse_ok},
    Descriptor,
};

#[test]
fn deploy_and_unstable_deploy_are_the_same_field() {
    let new = parse_ok("nodes:\n  - id: a\n    path: ./a\n    deploy: { machine: m1, labels: { gpu: \"true\" } }\n");
    let old = parse_ok("nodes:\n  - id: a\n    path: ./a\n    _unstable_deploy: { machine: m1, labels: { gpu: \"true\" } }\n");
    assert_eq!(new, old);
    let deploy = new.nodes[0].deploy();
    assert_eq!(deploy.machine.as_deref(), Some("m1"));
    assert_eq!(deploy.labels.get("gpu").map(String::as_str), Some("true"));
}

#[test]
fn both_spellings_on_one_node_is_an_error_naming_both() {
    assert_eq!(
        errors("nodes:\n  - id: a\n    path: ./a\n    deploy: { machine: m1 }\n    _unstable_deploy: { machine: m2 }\n"),
        [e(
            5,
            Some("a"),
            Some("_unstable_deploy"),
            "`deploy` and `_unstable_deploy` are two spellings of the same field; keep one"
        )]
    );
}

#[test]
fn deploy_fields_are_checked_under_either_spelling() {
    assert_eq!(
        errors("nodes:\n  - id: a\n    path: ./a\n    deploy: { distribute: ftp }\n"),
        [e(
            4,
            Some("a"),
            Some("deploy.distribute"),
            "invalid distribute mode `ftp`; expected one of: local, scp, http"
        )]
    );
}

const ROOT_DEPLOY: &str = "\
deploy:
  machine: robot
  working_dir: /srv/robot
  labels: { arch: arm64 }
nodes:
  - id: plain
    path: ./plain
  - id: own
    path: ./own
    deploy:
      labels: { gpu: \"true\" }
      distribute: scp
  - id: old
    path: ./old
    _unstable_deploy: { machine: other }
";

#[test]
fn root_deploy_is_the_default_merged_field_by_field() {
    let d = parse_ok(ROOT_DEPLOY);
    let plain = d.nodes[0].deploy();
    assert_eq!(plain.machine.as_deref(), Some("robot"));
    assert_eq!(plain.working_dir.as_deref(), Some(Path::new("/srv/robot")));
    // The node's fields win; `labels` is replaced as a whole; the rest comes from the root.
    let own = d.nodes[1].deploy();
    assert_eq!(own.machine.as_deref(), Some("robot"));
    assert_eq!(own.distribute, Distribute::Scp);
    assert_eq!(
        own.labels,
        BTreeMap::from([("gpu".to_owned(), "true".to_owned())])
    );
    let old = d.nodes[2].deploy();
    assert_eq!(old.machine.as_deref(), Some("other"));
    assert_eq!(old.working_dir.as_deref(), Some(Path::new("/srv/robot")));
    assert_eq!(
        d.deploy.as_ref().and_then(|r| r.machine.as_deref()),
        Some("robot")
    );
}

#[test]
fn placement_sees_the_root_default() {
    let d = parse_ok("deploy: { machine: robot }\nnodes:\n  - id: a\n    path: ./a\n  - id: b\n    path: ./b\n    deploy: { machine: base }\n");
    let daemons = [
        Candidate {
            machine_id: Some("base".into()),
            ..Candidate::default()
        },
        Candidate {
            machine_id: Some("robot".into()),
            ..Candidate::default()
        },
    ];
    let placed = place(&d, &daemons).expect("both nodes have a daemon");
    assert_eq!(placed[&crate::NodeId::from("a")], 1);
    assert_eq!(placed[&crate::NodeId::from("b")], 0);
}

#[test]
fn a_serialized_descriptor_reads_back_the_same() {
    let d = parse_ok(ROOT_DEPLOY);
    let yaml = serde_yaml::to_string(&d).expect("a descriptor serializes");
    assert_eq!(parse_ok(&yaml), d);
}

#[test]
fn root_deploy_errors_have_a_line() {
    let found = errors("nodes:\n  - id: a\n    path: ./a\ndeploy:\n  machin: x\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, Some(4));
    assert_eq!(found[0].2.as_deref(), Some("deploy"));
    assert!(found[0].3.contains("unknown field `machin`"), "{found:?}");
}

#[test]
fn output_framing_accepts_raw_and_arrow_ipc() {
    for (text, framing) in [
        ("raw", OutputFraming::Raw),
        ("arrow-ipc", OutputFraming::ArrowIpc),
    ] {
        let d = parse_ok(&format!(
            "nodes:\n  - id: a\n    path: ./a\n    output_framing: {text}\n"
        ));
        assert_eq!(d.nodes[0].output_framing, Some(framing));
    }
    assert_eq!(
        errors("nodes:\n  - id: a\n    path: ./a\n    output_framing: arrow_ipc\n"),
        [e(
            4,
            Some("a"),
            Some("output_framing"),
            "invalid output framing `arrow_ipc`; expected one of: raw, arrow-ipc (did you mean `arrow-ipc`?)"
        )]
    );
}

#[test]
fn unsupported_features_are_reported_one_line_each() {
    let yaml = "\
nodes:
  - id: runtime
    operators:
      - id: op
        python: op.py
        outputs: [out]
  - id: bridge
    path: ./bridge
    ros2: { topic: /chatter }
  - id: single
    operator: { python: op.py }
  - id: hubbed
    hub: dora-rs/some-node
  - id: sink
    path: ./sink
    inputs:
      a: runtime/op/out
      b: hubbed/frames
";
    let found = Descriptor::parse(yaml, Path::new("df.yml")).expect_err("unsupported");
    let lines: Vec<String> = found.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "df.yml:3: not supported by Adora yet: operators (node `runtime`, line 3)",
            "df.yml:9: not supported by Adora yet: ros2 (node `bridge`, line 9)",
            "df.yml:11: not supported by Adora yet: operator (node `single`, line 11)",
            "df.yml:13: not supported by Adora yet: hub (node `hubbed`, line 13)",
        ]
    );
}

#[test]
fn deploy_is_serialized_under_its_new_name() {
    let d = parse_ok("nodes:\n  - id: a\n    path: ./a\n    _unstable_deploy: { machine: m }\n");
    let yaml = serde_yaml::to_string(&d).expect("a descriptor serializes");
    assert!(
        yaml.contains("deploy:") && !yaml.contains("_unstable_deploy"),
        "{yaml}"
    );
    assert_eq!(
        d.nodes[0].deploy,
        Some(Deploy {
            machine: Some("m".into()),
            ..Deploy::default()
        })
    );
}
