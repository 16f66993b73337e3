use super::*;

fn descriptor(yaml: &str) -> Descriptor {
    Descriptor::parse(yaml, std::path::Path::new("dataflow.yml")).expect("valid test descriptor")
}

fn daemon(machine: Option<&str>, labels: &[(&str, &str)]) -> Candidate {
    Candidate {
        machine_id: machine.map(str::to_owned),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Candidate::default()
    }
}

const MIXED: &str = "nodes:
  - id: cam
    path: ./cam
    _unstable_deploy: { machine: robot }
  - id: infer
    path: ./infer
    _unstable_deploy: { labels: { gpu: \"true\" } }
  - id: ui
    path: ./ui
";

#[test]
fn every_rule_picks_its_daemon() {
    let daemons = [
        daemon(None, &[]),
        daemon(Some("robot"), &[]),
        daemon(Some("gpu-box"), &[("gpu", "true"), ("arch", "x86")]),
    ];
    let placed = place(&descriptor(MIXED), &daemons).expect("everything can be placed");
    assert_eq!(placed[&NodeId::from("cam")], 1);
    assert_eq!(placed[&NodeId::from("infer")], 2);
    assert_eq!(placed[&NodeId::from("ui")], 0);
}

#[test]
fn machine_wins_over_labels() {
    let d = descriptor(
        "nodes:\n  - id: a\n    path: ./a\n    _unstable_deploy: { machine: m2, labels: { gpu: \"true\" } }\n",
    );
    let daemons = [
        daemon(Some("m1"), &[("gpu", "true")]),
        daemon(Some("m2"), &[]),
    ];
    assert_eq!(place(&d, &daemons).expect("placed")[&NodeId::from("a")], 1);
}

#[test]
fn labels_take_the_first_superset_with_exact_values() {
    let d = descriptor(
        "nodes:\n  - id: a\n    path: ./a\n    _unstable_deploy: { labels: { gpu: \"true\" } }\n",
    );
    let daemons = [
        daemon(Some("x"), &[("gpu", "yes")]),
        daemon(Some("y"), &[("gpu", "true"), ("zone", "1")]),
        daemon(Some("z"), &[("gpu", "true")]),
    ];
    assert_eq!(place(&d, &daemons).expect("placed")[&NodeId::from("a")], 1);
}

#[test]
fn unconstrained_nodes_never_go_to_named_daemons() {
    let d = descriptor("nodes:\n  - id: a\n    path: ./a\n");
    let daemons = [daemon(Some("robot"), &[]), daemon(None, &[("k", "v")])];
    assert_eq!(place(&d, &daemons).expect("placed")[&NodeId::from("a")], 1);
}

#[test]
fn errors_have_the_documented_wording_and_list_every_node() {
    let errors = place(&descriptor(MIXED), &[]).expect_err("no daemons at all");
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "node `cam`: no matching daemon for machine id \"robot\"",
            "node `infer`: no daemon matches labels {\"gpu\": \"true\"}",
            "node `ui`: no unnamed daemon connected",
        ]
    );
}

#[test]
fn one_unplaceable_node_fails_the_whole_dataflow() {
    let daemons = [daemon(None, &[]), daemon(Some("robot"), &[])];
    let errors = place(&descriptor(MIXED), &daemons).expect_err("no gpu daemon");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].node.as_str(), "infer");
    assert_eq!(
        errors[0].failure,
        PlacementFailure::NoLabels([("gpu".to_owned(), "true".to_owned())].into())
    );
}
