//! Tests of the checks across nodes: duplicate ids and input sources.

use crate::validate::tests::{e, errors, parse_ok};

/// `camera` (outputs `frames`, `depth`) on lines 2–4, then `sink` whose inputs start on line 8.
fn with_sink_inputs(inputs: &str) -> String {
    format!(
        "nodes:\n  - id: camera\n    path: ./camera\n    outputs: [frames, depth]\n  - id: sink\n    path: ./sink\n    inputs:\n{inputs}"
    )
}

#[test]
fn sources_resolving_to_declared_outputs_are_accepted() {
    let d = parse_ok(&with_sink_inputs(
        "      image: camera/frames\n      d: { source: camera/depth }\n",
    ));
    assert_eq!(d.nodes[1].inputs.len(), 2);
}

#[test]
fn source_node_must_exist() {
    assert_eq!(
        errors(&with_sink_inputs(
            "      image: camra/frames\n      other: lidar/points\n"
        )),
        [
            e(
                8,
                Some("sink"),
                Some("inputs.image"),
                "node `camra` does not exist (did you mean `camera`?)"
            ),
            e(
                9,
                Some("sink"),
                Some("inputs.other"),
                "node `lidar` does not exist"
            ),
        ]
    );
}

#[test]
fn source_output_must_be_declared() {
    assert_eq!(
        errors(&with_sink_inputs(
            "      image:\n        source: camera/frame\n        queue_size: 1\n      back: sink/out\n"
        )),
        [
            e(
                9,
                Some("sink"),
                Some("inputs.image.source"),
                "node `camera` has no output `frame` (its outputs: frames, depth)"
            ),
            e(
                11,
                Some("sink"),
                Some("inputs.back"),
                "node `sink` has no output `out` (it declares no outputs)"
            ),
        ]
    );
}

#[test]
fn malformed_sources_and_timers() {
    let timer_help = "(expected adora/timer/millis/N, adora/timer/secs/N or adora/timer/hz/F)";
    assert_eq!(
        errors(&with_sink_inputs(
            "      a: camera\n      b: dora/timer/millis/0\n      c: adora/timer/hz/fast\n      d: camera/fr ames\n"
        )),
        [
            e(
                8,
                Some("sink"),
                Some("inputs.a"),
                "invalid source `camera`: expected `node/output` or a timer like `adora/timer/millis/100`"
            ),
            e(
                9,
                Some("sink"),
                Some("inputs.b"),
                &format!(
                    "invalid timer `dora/timer/millis/0`: the interval must be greater than zero {timer_help}"
                )
            ),
            e(
                10,
                Some("sink"),
                Some("inputs.c"),
                &format!("invalid timer `adora/timer/hz/fast`: `fast` is not a number {timer_help}")
            ),
            e(
                11,
                Some("sink"),
                Some("inputs.d"),
                "invalid source `camera/fr ames`: expected `node/output` with ids made of [A-Za-z0-9_.-]"
            ),
        ]
    );
}

#[test]
fn outputs_of_a_broken_sender_are_not_guessed() {
    // `camera.outputs` is reported once, on `camera`; `sink` gets no follow-up error.
    assert_eq!(
        errors("nodes:\n  - { id: camera, path: x, outputs: frames }\n  - { id: sink, path: y, inputs: { i: camera/frames } }\n"),
        [e(
            2,
            Some("camera"),
            Some("outputs"),
            "expected a list of output ids (e.g. `[frames]`), found a string (`frames`)"
        )]
    );
}

#[test]
fn duplicate_node_ids() {
    assert_eq!(
        errors("nodes:\n  - id: a\n    path: x\n  - id: b\n    path: x\n  - id: a\n    path: y\n  - { id: a, path: z }\n"),
        [
            e(6, Some("a"), Some("id"), "duplicate node id `a` (first defined on line 2)"),
            e(8, Some("a"), Some("id"), "duplicate node id `a` (first defined on line 2)"),
        ]
    );
}
