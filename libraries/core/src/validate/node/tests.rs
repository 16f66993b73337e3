//! Tests of the checks on one node's fields: each asserts the line, node, field and message.

use crate::validate::tests::{e, errors, parse_ok};

/// A dataflow with one node `a` (lines 1–3) followed by `extra` lines at the node's indentation.
fn node_a(extra: &str) -> String {
    format!("nodes:\n  - id: a\n    path: ./a\n{extra}")
}

#[test]
fn unknown_fields_with_and_without_suggestion() {
    assert_eq!(
        errors(&node_a("    ouputs: [x]\n    colour: red\n")),
        [
            e(
                4,
                Some("a"),
                Some("ouputs"),
                "unknown field `ouputs`; did you mean `outputs`?"
            ),
            e(
                5,
                Some("a"),
                Some("colour"),
                &format!(
                    "unknown field `colour`; expected one of: {}",
                    super::NODE_FIELDS.join(", ")
                )
            ),
        ]
    );
}

#[test]
fn missing_id_and_path() {
    assert_eq!(
        errors("nodes:\n  - id: a\n    path: x\n  - path: ./b\n    outputs: [o]\n  - id: c\n"),
        [
            e(4, None, Some("nodes[1].id"), "missing required field `id`"),
            e(6, Some("c"), Some("path"), "missing required field `path`"),
        ]
    );
}

#[test]
fn nodes_must_be_mappings() {
    assert_eq!(
        errors("nodes:\n  - id: a\n    path: x\n  - camera\n"),
        [e(
            4,
            None,
            Some("nodes[1]"),
            "expected a node (a mapping with `id` and `path`), found a string (`camera`)"
        )]
    );
}

#[test]
fn wrong_types() {
    assert_eq!(
        errors("nodes:\n  - id: 5\n    path: [a]\n    name: { x: 1 }\n    outputs: 5\n    inputs: [a/b]\n    env: 5\n    args: 3\n"),
        [
            e(2, None, Some("nodes[0].id"), "expected a string, found a number (5)"),
            e(3, None, Some("nodes[0].path"), "expected a string, found a list"),
            e(4, None, Some("nodes[0].name"), "expected a string, found a mapping"),
            e(
                5,
                None,
                Some("nodes[0].outputs"),
                "expected a list of output ids (e.g. `[frames]`), found a number (5)"
            ),
            e(
                6,
                None,
                Some("nodes[0].inputs"),
                "expected a mapping of input ids to sources, found a list"
            ),
            e(
                7,
                None,
                Some("nodes[0].env"),
                "expected a mapping of variable names to values, found a number (5)"
            ),
            e(
                8,
                None,
                Some("nodes[0].args"),
                "expected a string of arguments, found a number (3)"
            ),
        ]
    );
}

#[test]
fn empty_path_is_an_error() {
    assert_eq!(
        errors("nodes:\n  - id: a\n    path: \"  \"\n"),
        [e(3, Some("a"), Some("path"), "must not be empty")]
    );
}

#[test]
fn invalid_ids() {
    assert_eq!(
        errors(&node_a("    outputs: [ok, \"bad out\", \"\"]\n    inputs:\n      in/put: adora/timer/secs/1\n")).into_iter().chain(errors("nodes:\n  - id: my node\n    path: x\n")).collect::<Vec<_>>(),
        [
            e(
                4,
                Some("a"),
                Some("outputs[1]"),
                "invalid output id `bad out`: ids may only contain letters, digits, `_`, `.` and `-`"
            ),
            e(4, Some("a"), Some("outputs[2]"), "output id must not be empty"),
            e(
                6,
                Some("a"),
                Some("inputs.in/put"),
                "invalid input id `in/put`: ids may only contain letters, digits, `_`, `.` and `-`"
            ),
            e(
                2,
                Some("my node"),
                Some("id"),
                "invalid node id `my node`: ids may only contain letters, digits, `_`, `.` and `-`"
            ),
        ]
    );
}

#[test]
fn duplicate_outputs() {
    assert_eq!(
        errors(&node_a(
            "    outputs:\n      - frames\n      - depth\n      - frames\n"
        )),
        [e(
            7,
            Some("a"),
            Some("outputs[2]"),
            "duplicate output `frames`"
        )]
    );
}

#[test]
fn long_form_inputs() {
    let found = errors(&node_a(
        "    inputs:\n      x: { source: adora/timer/secs/1, queue_sise: 2, priority: 1 }\n      y:\n        source: adora/timer/secs/1\n        queue_size: 0\n      z: { queue_size: 3 }\n      w: 7\n      v:\n",
    ));
    let what = "expected a source like `node/output` or `{ source, queue_size }`";
    assert_eq!(
        found,
        [
            e(
                5,
                Some("a"),
                Some("inputs.x.queue_sise"),
                "unknown field `queue_sise`; did you mean `queue_size`?"
            ),
            e(
                5,
                Some("a"),
                Some("inputs.x.priority"),
                "unknown field `priority`; expected one of: source, queue_size, input_timeout, poll"
            ),
            e(
                8,
                Some("a"),
                Some("inputs.y.queue_size"),
                "expected an integer of at least 1, found a number (0)"
            ),
            e(
                9,
                Some("a"),
                Some("inputs.z.source"),
                "missing required field `source`"
            ),
            e(
                10,
                Some("a"),
                Some("inputs.w"),
                &format!("{what}, found a number (7)")
            ),
            e(
                11,
                Some("a"),
                Some("inputs.v"),
                &format!("{what}, found nothing (null)")
            ),
        ]
    );
}

#[test]
fn env_reserved_names_and_non_scalar_values() {
    assert_eq!(
        errors(&node_a("    env:\n      ADORA_NODE_CONFIG: '{}'\n      OK: 1\n      LIST: [1, 2]\n      EMPTY:\n")),
        [
            e(
                5,
                Some("a"),
                Some("env.ADORA_NODE_CONFIG"),
                "`ADORA_NODE_CONFIG` is set by the runtime and cannot be overridden"
            ),
            e(7, Some("a"), Some("env.LIST"), "expected a string, number or boolean, found a list"),
            e(
                8,
                Some("a"),
                Some("env.EMPTY"),
                "expected a string, number or boolean, found nothing (null)"
            ),
        ]
    );
}

#[test]
fn args_with_unbalanced_quotes() {
    let found = errors(&node_a("    args: --title \"front camera\n"));
    assert_eq!(found.len(), 1);
    let (line, node, field, message) = &found[0];
    assert_eq!(
        (*line, node.as_deref(), field.as_deref()),
        (Some(4), Some("a"), Some("args"))
    );
    assert!(
        message.starts_with("cannot split `--title \"front camera` into arguments: "),
        "{message}"
    );
}

#[test]
fn restart_policy_and_durations() {
    let found = errors(&node_a(
        "    restart_policy: on_failure\n    max_restarts: -1\n    restart_delay: 5s\n    max_restart_delay: 1s\n    restart_window: soon\n",
    ));
    assert_eq!(found.len(), 4, "{found:?}");
    assert_eq!(
        found[..3],
        [
            e(
                4,
                Some("a"),
                Some("restart_policy"),
                "invalid restart policy `on_failure`; expected one of: never, on-failure, always \
                 (did you mean `on-failure`?)"
            ),
            e(
                5,
                Some("a"),
                Some("max_restarts"),
                "expected a non-negative integer, found a number (-1)"
            ),
            e(
                7,
                Some("a"),
                Some("max_restart_delay"),
                "`max_restart_delay` (1s) is shorter than `restart_delay` (5s)"
            ),
        ]
    );
    let (line, node, field, message) = &found[3];
    assert_eq!(
        (*line, node.as_deref(), field.as_deref()),
        (Some(8), Some("a"), Some("restart_window"))
    );
    assert!(
        message.starts_with("invalid duration `soon`: "),
        "{message}"
    );
    assert!(message
        .ends_with("(expected a duration like `500ms`, `5s` or `1m 30s`, or a number of seconds)"));
}

#[test]
fn durations_as_numbers() {
    let d = parse_ok(&node_a(
        "    restart_delay: 0.25\n    max_restart_delay: 2\n",
    ));
    let delay = d.nodes[0].restart_delay.map(|d| d.0.as_millis());
    assert_eq!(delay, Some(250));
    assert_eq!(
        errors(&node_a("    restart_delay: -2\n")),
        [e(
            4,
            Some("a"),
            Some("restart_delay"),
            "expected a duration like `500ms`, `5s` or `1m 30s`, or a number of seconds, not \
             negative, found a number (-2)"
        )]
    );
}

#[test]
fn deploy_options() {
    assert_eq!(
        errors(&node_a(
            "    _unstable_deploy:\n      machine: \"\"\n      distribute: ftp\n      lables: {}\n      labels:\n        gpu: true\n        cores: 8\n        ok: \"yes\"\n",
        )),
        [
            e(5, Some("a"), Some("_unstable_deploy.machine"), "must not be empty"),
            e(
                6,
                Some("a"),
                Some("_unstable_deploy.distribute"),
                "invalid distribute mode `ftp`; expected one of: local, scp, http"
            ),
            e(
                7,
                Some("a"),
                Some("_unstable_deploy.lables"),
                "unknown field `lables`; did you mean `labels`?"
            ),
            e(
                9,
                Some("a"),
                Some("_unstable_deploy.labels.gpu"),
                "expected a string (quote it: \"true\"), found a boolean (true)"
            ),
            e(
                10,
                Some("a"),
                Some("_unstable_deploy.labels.cores"),
                "expected a string (quote it: \"8\"), found a number (8)"
            ),
        ]
    );
    assert_eq!(
        errors(&node_a("    _unstable_deploy: robot\n")),
        [e(
            4,
            Some("a"),
            Some("_unstable_deploy"),
            "expected a mapping, found a string (`robot`)"
        )]
    );
}

#[test]
fn resources_are_checked_with_their_line() {
    let ok = parse_ok(&node_a(
        "    deploy:\n      resources: { cpus: 0.5, memory: 512MiB, gpus: 1 }\n",
    ));
    let requests = ok.nodes[0].deploy().resources.expect("resources");
    assert_eq!(requests.cpus(), Some(0.5));
    assert_eq!(requests.memory(), Some(512 << 20));
    assert_eq!(requests.gpus(), Some(1));
    assert!(parse_ok(&node_a(
        "    deploy: { resources: { memory: 1073741824 } }\n"
    ))
    .nodes[0]
        .deploy()
        .resources
        .is_some());
    let found = errors(&node_a(
        "    deploy:\n      resources:\n        cpus: 0\n        memory: 4 parsecs\n        gpus: -1\n        disk: 1\n",
    ));
    let fields: Vec<(Option<usize>, String)> = found
        .iter()
        .map(|e| (e.0, e.2.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        fields,
        [
            (Some(6), "deploy.resources.cpus".to_owned()),
            (Some(7), "deploy.resources.memory".to_owned()),
            (Some(8), "deploy.resources.gpus".to_owned()),
            (Some(9), "deploy.resources.disk".to_owned()),
        ],
        "{found:?}"
    );
    assert!(found[0].3.contains("above 0 and at most 4096"), "{found:?}");
    assert!(found[1].3.contains("invalid size unit"), "{found:?}");
    assert!(found[2].3.contains("from 0 to 1024"), "{found:?}");
    assert!(found[3].3.contains("unknown field `disk`"), "{found:?}");
    for bad in [
        "cpus: 5000",
        "cpus: '2'",
        "memory: 0",
        "gpus: 2000",
        "gpus: 1.5",
    ] {
        let found = errors(&node_a(&format!(
            "    deploy: {{ resources: {{ {bad} }} }}\n"
        )));
        assert_eq!(found.len(), 1, "{bad}: {found:?}");
        assert_eq!(found[0].0, Some(4), "{bad}: {found:?}");
    }
    let found = errors(&node_a("    deploy: { resources: 2 }\n"));
    assert!(found[0].3.contains("expected a mapping"), "{found:?}");
}

#[test]
fn root_deploy_resources_are_range_checked() {
    let found = errors("deploy: { resources: { cpus: -2 } }\nnodes:\n  - id: a\n    path: ./a\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, Some(1));
    assert!(found[0].3.contains("invalid cpus -2"), "{found:?}");
}
