use std::path::{Path, PathBuf};

use super::*;

/// Every `dataflow.yml` under `examples/` and `cluster-examples/`, and the compatibility corpus.
fn example_dataflows() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut found = Vec::new();
    let mut dirs = vec![root.join("examples"), root.join("cluster-examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("example directory is readable") {
            let path = entry.expect("directory entry is readable").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| n == "dataflow.yml") {
                found.push(path);
            }
        }
    }
    for entry in std::fs::read_dir(root.join("tests/compat")).expect("tests/compat exists") {
        let path = entry.expect("directory entry is readable").path();
        if path.extension().is_some_and(|e| e == "yml") {
            found.push(path);
        }
    }
    found.sort();
    found
}

#[test]
fn every_example_dataflow_matches_the_schema() {
    let validator = jsonschema::validator_for(&dataflow_schema()).expect("the schema compiles");
    let files = example_dataflows();
    assert!(files.len() >= 8, "found only {files:?}");
    for file in files {
        let yaml = std::fs::read_to_string(&file).expect("example is readable");
        let doc: serde_json::Value = serde_yaml::from_str(&yaml).expect("example is YAML");
        let problems: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(problems.is_empty(), "{}: {problems:#?}", file.display());
    }
}

#[test]
fn the_schema_rejects_what_the_parser_rejects() {
    let validator = jsonschema::validator_for(&dataflow_schema()).expect("the schema compiles");
    for yaml in [
        "nodes:\n  - id: a\n    path: ./a\n    colour: red\n",
        "nodes:\n  - id: a\n    path: ./a\n    restart_policy: sometimes\n",
        "nodes:\n  - id: a\n    path: ./a\n    output_framing: json\n",
        "nodes:\n  - id: a\n    path: ./a\n    deploy: { machine: 3 }\n",
        "strict_types: yes please\nnodes: []\n",
        "nodes:\n  - id: a\n",
    ] {
        let doc: serde_json::Value = serde_yaml::from_str(yaml).expect("test input is YAML");
        assert!(!validator.is_valid(&doc), "accepted:\n{yaml}");
    }
    // A module node has no `path`.
    let module = "nodes:\n  - id: m\n    module: filter.yml\n    params: { window: 5 }\n";
    let doc: serde_json::Value = serde_yaml::from_str(module).expect("test input is YAML");
    assert!(validator.is_valid(&doc), "rejected:\n{module}");
}

#[test]
fn the_schema_documents_fields_and_both_deploy_spellings() {
    let schema = dataflow_schema_json();
    for needle in [
        "\"output_types\"",
        "\"input_types\"",
        "\"strict_types\"",
        "\"type_rules\"",
        "\"arrow-ipc\"",
        "\"deploy\"",
        "\"_unstable_deploy\"",
        "Type URN of each output",
    ] {
        assert!(schema.contains(needle), "schema lacks {needle}");
    }
}

#[test]
fn the_schema_knows_resource_requests() {
    let validator = jsonschema::validator_for(&dataflow_schema()).expect("the schema compiles");
    let doc = |yaml: &str| -> serde_json::Value { serde_yaml::from_str(yaml).expect("YAML") };
    let ok = "deploy: { resources: { memory: 1GiB } }\nnodes:\n  - id: a\n    path: ./a\n    deploy: { resources: { cpus: 0.5, memory: 4GiB, gpus: 1 } }\n";
    assert!(validator.is_valid(&doc(ok)), "rejected:\n{ok}");
    for bad in [
        "nodes:\n  - id: a\n    path: ./a\n    deploy: { resources: { cpus: 0 } }\n",
        "nodes:\n  - id: a\n    path: ./a\n    deploy: { resources: { gpus: -1 } }\n",
        "nodes:\n  - id: a\n    path: ./a\n    deploy: { resources: { disk: 1 } }\n",
    ] {
        assert!(!validator.is_valid(&doc(bad)), "accepted:\n{bad}");
    }
}
