//! Every dataflow shipped in `examples/*/` must validate.

use std::path::{Path, PathBuf};

use adora_core::Descriptor;

/// `examples/*/*.yml` and `*.yaml`, sorted; empty when there is no `examples/` directory.
fn example_dataflows(examples: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(examples) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for example in entries {
        let example = example.expect("readable examples/ entry").path();
        if !example.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&example).expect("readable example directory") {
            let file = file.expect("readable example entry").path();
            let is_yaml = file
                .extension()
                .is_some_and(|ext| ext == "yml" || ext == "yaml");
            if is_yaml && file.is_file() {
                files.push(file);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_example_dataflow_is_valid() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let files = example_dataflows(&examples);
    let failures: Vec<String> = files
        .iter()
        .filter_map(|file| Descriptor::read(file).err().map(|e| e.to_string()))
        .collect();
    assert!(
        failures.is_empty(),
        "invalid example dataflows:\n{}",
        failures.join("\n")
    );
    println!("{} example dataflow(s) validated", files.len());
}
