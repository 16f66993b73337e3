//! Tests of module inlining: ids, wiring in and out, params, nesting, and errors naming the
//! module file and line.

use std::path::{Path, PathBuf};

use crate::{
    descriptor::{EnvValue, InputSpec},
    Descriptor, ValidationErrors,
};

use super::inline::substitute;

/// A directory with `files` (name, text) written into it.
fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

fn read(dir: &Path) -> Result<Descriptor, ValidationErrors> {
    Descriptor::read(&dir.join("flow.yml"))
}

const TRANSFORM: &str = "\
module:
  name: transform
  inputs: [raw]
  inputs_optional: [config]
  outputs: [filtered]
nodes:
  - id: doubler
    path: doubler.py
    args: --factor $PARAM_FACTOR --mode=$PARAM_MODE $PARAM_OTHER
    inputs:
      data: _mod/raw
      config: _mod/config
      tick: adora/timer/millis/100
    outputs: [doubled]
  - id: filter
    path: ./filter
    env: { PARAM_MODE: own }
    inputs:
      data: { source: doubler/doubled, queue_size: 3 }
    outputs: [filtered]
";

const FLOW: &str = "\
nodes:
  - id: sender
    path: ./sender
    outputs: [value]
  - id: pipe
    module: modules/transform.yml
    params: { factor: 2, mode: fast }
    inputs:
      raw: sender/value
  - id: receiver
    path: ./receiver
    inputs:
      filtered: pipe/filtered
";

#[test]
fn a_module_is_inlined_with_prefixed_ids_and_wired_inputs_and_outputs() {
    let dir = dir_with(&[
        ("flow.yml", FLOW),
        ("modules/transform.yml", TRANSFORM),
        ("modules/doubler.py", ""),
    ]);
    let d = read(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = d.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["sender", "pipe.doubler", "pipe.filter", "receiver"]);
    let doubler = &d.nodes[1];
    assert_eq!(doubler.path, "modules/doubler.py");
    assert_eq!(doubler.inputs["data"].source(), "sender/value");
    assert!(!doubler.inputs.contains_key("config"), "unwired optional");
    assert_eq!(doubler.inputs["tick"].source(), "adora/timer/millis/100");
    assert_eq!(
        doubler.args.as_deref(),
        Some("--factor 2 --mode=fast $PARAM_OTHER")
    );
    assert_eq!(doubler.env["PARAM_FACTOR"], EnvValue::String("2".into()));
    let filter = &d.nodes[2];
    assert_eq!(filter.path, "modules/./filter");
    let InputSpec::Long(long) = &filter.inputs["data"] else {
        panic!("long form kept");
    };
    assert_eq!(long.source, "pipe.doubler/doubled");
    assert_eq!(long.queue_size, Some(3));
    assert_eq!(filter.env["PARAM_MODE"], EnvValue::String("own".into()));
    assert_eq!(
        d.nodes[3].inputs["filtered"].source(),
        "pipe.filter/filtered"
    );
}

#[test]
fn nested_modules_are_inlined_recursively() {
    let outer = "\
module: { name: outer, inputs: [data], outputs: [result, processed] }
nodes:
  - id: inner
    module: inner.yml
    params: { level: inner }
    inputs: { raw: _mod/data }
  - id: post
    path: post
    inputs: { x: inner/processed }
    outputs: [result]
";
    let inner = "\
module: { name: inner, inputs: [raw], outputs: [processed] }
nodes:
  - id: work
    path: work
    args: $PARAM_LEVEL $PARAM_TOP
    inputs: { in: _mod/raw }
    outputs: [processed]
";
    let flow = "\
nodes:
  - id: src
    path: src
    outputs: [o]
  - id: top
    module: m/outer.yml
    params: { level: outer, top: t }
    inputs: { data: src/o }
  - id: sink
    path: sink
    inputs: { a: top/result, b: top/processed }
";
    let dir = dir_with(&[
        ("flow.yml", flow),
        ("m/outer.yml", outer),
        ("m/inner.yml", inner),
    ]);
    let d = read(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = d.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["src", "top.inner.work", "top.post", "sink"]);
    let work = &d.nodes[1];
    assert_eq!(work.inputs["in"].source(), "src/o");
    // The innermost params win; outer ones fill what is left.
    assert_eq!(work.args.as_deref(), Some("inner t"));
    assert_eq!(work.env["PARAM_LEVEL"], EnvValue::String("inner".into()));
    assert_eq!(d.nodes[2].inputs["x"].source(), "top.inner.work/processed");
    assert_eq!(d.nodes[3].inputs["a"].source(), "top.post/result");
    assert_eq!(d.nodes[3].inputs["b"].source(), "top.inner.work/processed");
}

/// `(file name, line, field, message)` of each error.
fn found(e: ValidationErrors) -> Vec<(String, Option<usize>, Option<String>, String)> {
    e.0.into_iter()
        .map(|e| {
            let name = e.file.file_name().map(PathBuf::from).unwrap_or_default();
            (name.display().to_string(), e.line, e.field, e.message)
        })
        .collect()
}

#[test]
fn errors_name_the_module_file_and_line() {
    let module = "\
module: { name: bad, inputs: [raw], outputs: [out, missing] }
nodes:
  - id: a
    path: a
    inputs: { x: _mod/nope, y: ghost/o }
    outputs: [out]
    colour: red
";
    let flow = "\
nodes:
  - id: m
    module: bad.yml
    inputs: { raw: m2/x, extra: m2/x }
";
    let dir = dir_with(&[("flow.yml", flow), ("bad.yml", module)]);
    let errors = found(read(dir.path()).expect_err("invalid"));
    let at = |file: &str, line: usize, message: &str| {
        errors
            .iter()
            .any(|(f, l, _, m)| f == file && *l == Some(line) && m.contains(message))
    };
    assert!(
        at("flow.yml", 4, "the module has no input `extra`"),
        "{errors:#?}"
    );
    assert!(at("flow.yml", 4, "node `m2` does not exist"), "{errors:#?}");
    assert!(
        at("bad.yml", 5, "node `_mod` has no output `nope`"),
        "{errors:#?}"
    );
    assert!(
        at("bad.yml", 5, "node `ghost` does not exist"),
        "{errors:#?}"
    );
    assert!(at("bad.yml", 7, "unknown field `colour`"), "{errors:#?}");
    assert_eq!(
        errors[0].0, "flow.yml",
        "the dataflow's own errors come first"
    );
}

#[test]
fn declared_outputs_need_one_producer() {
    let module = "module: { name: x, outputs: [out, gone] }\nnodes:\n  - id: a\n    path: a\n    outputs: [out]\n  - id: b\n    path: b\n    outputs: [out]\n";
    let dir = dir_with(&[
        ("flow.yml", "nodes:\n  - id: m\n    module: x.yml\n"),
        ("x.yml", module),
    ]);
    let errors = found(read(dir.path()).expect_err("invalid"));
    let messages: Vec<&str> = errors.iter().map(|e| e.3.as_str()).collect();
    assert_eq!(
        messages,
        [
            "output `out` is produced by several nodes of the module (a/out, b/out); rename all but one",
            "no node of the module has an output `gone`",
        ]
    );
    assert!(errors.iter().all(|e| e.0 == "x.yml" && e.1 == Some(1)));
}

#[test]
fn a_module_including_itself_is_refused() {
    let a = "module: { name: a }\nnodes:\n  - id: b\n    module: b.yml\n";
    let b = "module: { name: b }\nnodes:\n  - id: a\n    module: a.yml\n";
    let flow = "nodes:\n  - id: top\n    module: a.yml\n";
    let dir = dir_with(&[("flow.yml", flow), ("a.yml", a), ("b.yml", b)]);
    let errors = found(read(dir.path()).expect_err("cycle"));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let (file, line, field, message) = &errors[0];
    assert_eq!((file.as_str(), *line), ("b.yml", Some(4)));
    assert_eq!(field.as_deref(), Some("module"));
    assert!(
        message.starts_with("the module includes itself: "),
        "{message}"
    );
    assert!(
        message.contains("a.yml → ") && message.ends_with("a.yml"),
        "{message}"
    );
}

#[test]
fn module_nodes_take_only_module_fields_and_wired_required_inputs() {
    let module = "module: { name: x, inputs: [raw] }\nnodes:\n  - id: a\n    path: a\n    inputs: { r: _mod/raw }\n";
    let flow =
        "nodes:\n  - id: m\n    module: x.yml\n    path: ./a\n    params: { bad-key: 1, k: [1] }\n";
    let dir = dir_with(&[("flow.yml", flow), ("x.yml", module)]);
    let errors = found(read(dir.path()).expect_err("invalid"));
    let messages: Vec<(Option<usize>, &str)> =
        errors.iter().map(|(_, l, _, m)| (*l, m.as_str())).collect();
    assert_eq!(messages.len(), 4, "{messages:#?}");
    assert_eq!(messages[0].0, Some(3));
    assert!(
        messages[0].1.contains("input `raw` is not wired"),
        "{messages:#?}"
    );
    assert!(messages[1]
        .1
        .starts_with("`path` cannot be set on a `module` node"));
    assert!(messages[2]
        .1
        .starts_with("invalid parameter name `bad-key`"));
    assert!(messages[3]
        .1
        .starts_with("expected a string, number or boolean"));
}

#[test]
fn a_missing_module_file_is_reported_on_the_node() {
    let dir = dir_with(&[("flow.yml", "nodes:\n  - id: m\n    module: nowhere.yml\n")]);
    let errors = found(read(dir.path()).expect_err("missing"));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].1, Some(3));
    assert!(errors[0].3.contains("nowhere.yml"), "{errors:#?}");
}

#[test]
fn params_substitute_whole_names_only() {
    let params = [
        ("PARAM_A".to_owned(), "1".to_owned()),
        ("PARAM_AB".to_owned(), "2".to_owned()),
    ];
    assert_eq!(
        substitute("$PARAM_A $PARAM_AB x$PARAM_A.y $PARAM_ABC $PARAM_", &params),
        "1 2 x1.y $PARAM_ABC $PARAM_"
    );
}
