//! Typed ports: field shapes, unknown types, mismatches, strictness and `type_rules`.

use std::path::Path;

use crate::{
    validate::tests::{e, errors, parse_ok, Found},
    Descriptor,
};

/// `(line, node, field, message)` of each warning; the file must be valid.
fn warnings(yaml: &str) -> Vec<Found> {
    let (_, warnings) =
        Descriptor::parse_with_warnings(yaml, Path::new("df.yml")).expect("valid dataflow");
    warnings
        .into_iter()
        .map(|w| (w.line, w.node, w.field, w.message))
        .collect()
}

/// A sender `src` with output `out` typed `from`, and a sink whose input `in` is typed `to`.
fn pair(from: &str, to: &str) -> String {
    format!(
        "nodes:\n  - id: src\n    path: ./src\n    outputs: [out]\n    output_types:\n      out: {from}\n  - id: sink\n    path: ./sink\n    inputs:\n      in: src/out\n    input_types:\n      in: {to}\n"
    )
}

#[test]
fn compatible_pairs_give_no_warning() {
    for (from, to) in [
        ("std/media/v1/Image", "std/media/v1/Image"),
        ("std/core/v1/UInt8", "std/core/v1/UInt64"),
        ("std/core/v1/Float32", "std/core/v1/Float64"),
        ("std/vision/v1/BoundingBox", "std/core/v1/Bytes"),
        (
            "std/media/v1/AudioFrame[sample_type=f32]",
            "std/media/v1/AudioFrame",
        ),
        (
            "std/media/v1/AudioFrame",
            "std/media/v1/AudioFrame[sample_type=i16]",
        ),
    ] {
        assert_eq!(warnings(&pair(from, to)), [], "{from} → {to}");
    }
    let d = parse_ok(&pair("std/core/v1/String", "std/core/v1/String"));
    assert_eq!(
        d.nodes[0].output_types[&crate::DataId::from("out")],
        "std/core/v1/String"
    );
    assert_eq!(
        d.nodes[1].input_types[&crate::DataId::from("in")],
        "std/core/v1/String"
    );
}

#[test]
fn a_mismatch_names_both_ends() {
    let message = "type mismatch: `src/out` (std/media/v1/AudioFrame[sample_type=f32]) → \
                   `sink/in` (std/media/v1/AudioFrame[sample_type=i16])";
    let yaml = pair(
        "std/media/v1/AudioFrame[sample_type=f32]",
        "std/media/v1/AudioFrame[sample_type=i16]",
    );
    assert_eq!(
        warnings(&yaml),
        [e(12, Some("sink"), Some("input_types.in"), message)]
    );
    // With `strict_types: true` the same problem is an error (one line down).
    assert_eq!(
        errors(&format!("strict_types: true\n{yaml}")),
        [e(13, Some("sink"), Some("input_types.in"), message)]
    );
    let narrowing = warnings(&pair("std/core/v1/UInt64", "std/core/v1/UInt8"));
    assert_eq!(narrowing.len(), 1, "{narrowing:?}");
}

#[test]
fn unknown_types_and_ports_are_warnings_malformed_urns_are_errors() {
    let yaml = "nodes:\n  - id: a\n    path: ./a\n    outputs: [img]\n    output_types:\n      img: std/media/v1/Imgae\n      nope: std/core/v1/Bool\n    inputs:\n      x: a/img\n    input_types:\n      x: std/media/v1/Image[colour=red]\n";
    assert_eq!(
        warnings(yaml),
        [
            e(
                6,
                Some("a"),
                Some("output_types.img"),
                "unknown type `std/media/v1/Imgae` (did you mean `std/media/v1/Image`?)"
            ),
            e(
                7,
                Some("a"),
                Some("output_types.nope"),
                "`nope` is not one of the node's outputs"
            ),
            e(
                11,
                Some("a"),
                Some("input_types.x"),
                "type `std/media/v1/Image` has no parameter `colour` (its parameters: encoding)"
            ),
        ]
    );
    assert_eq!(
        errors("nodes:\n  - id: a\n    path: ./a\n    outputs: [o]\n    output_types:\n      o: std/core/Float32\n    input_types: [x]\n"),
        [
            e(6, Some("a"), Some("output_types.o"), "invalid type URN `std/core/Float32`: standard types are written `std/<category>/v<N>/<Type>`"),
            e(7, Some("a"), Some("input_types"), "expected a mapping of port ids to type URNs (e.g. `image: std/media/v1/Image`), found a list"),
        ]
    );
}

#[test]
fn timer_inputs_are_uint64() {
    let timer = |ty: &str| {
        format!("nodes:\n  - id: a\n    path: ./a\n    inputs:\n      tick: dora/timer/millis/10\n    input_types:\n      tick: {ty}\n")
    };
    assert_eq!(warnings(&timer("std/core/v1/UInt64")), []);
    assert_eq!(
        warnings(&timer("std/core/v1/Float32")),
        [e(7, Some("a"), Some("input_types.tick"), "type mismatch: `dora/timer/millis/10` (std/core/v1/UInt64) → `a/tick` (std/core/v1/Float32)")]
    );
}

#[test]
fn type_rules_make_user_types_known_and_compatible() {
    let yaml = pair(
        "myproject/sensors/v1/Reading",
        "myproject/sensors/v2/Reading",
    );
    assert_eq!(warnings(&yaml).len(), 2, "two unknown types");
    let rules = "type_rules:\n  - from: myproject/sensors/v1/Reading\n    to: myproject/sensors/v2/Reading\n";
    let d = parse_ok(&format!("{rules}{yaml}"));
    assert_eq!(d.type_rules.len(), 1);
    assert_eq!(warnings(&format!("{rules}{yaml}")), []);
}

#[test]
fn root_type_settings_are_checked() {
    assert_eq!(
        errors("strict_types: yes please\ntype_rules:\n  - from: a/b\n    too: c/d\n  - 7\nnodes:\n  - id: a\n    path: ./a\n"),
        [
            e(1, None, Some("strict_types"), "expected true or false, found a string (`yes please`)"),
            e(3, None, Some("type_rules[0].to"), "missing required field `to`"),
            e(4, None, Some("type_rules[0].too"), "unknown field `too`; did you mean `to`?"),
            e(5, None, Some("type_rules[1]"), "expected a mapping `{ from, to }`, found a number (7)"),
        ]
    );
}
