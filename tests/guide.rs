//! The user guide's YAML examples are real: every ```yaml block of `guide/src/*.md` that is a
//! dataflow (has `nodes:`) passes the real `adora validate`, and every `cluster.yml` block (has
//! `machines:`) parses as a [`ClusterConfig`]. A block that is intentionally partial or not Adora's
//! (a Prometheus config, a fragment) is marked ```yaml,ignore and says why in its first line.

use std::{path::Path, time::Duration};

use adora_core::cluster::ClusterConfig;
use adora_test_support::{adora, repo_root, run_with_timeout, temp_dir};

/// Upper bound of one `adora validate`.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A fenced YAML block: file, first line number, text.
struct Block {
    file: String,
    line: usize,
    text: String,
}

/// Every ```yaml block (not ```yaml,ignore) of a markdown text.
fn yaml_blocks(file: &str, markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start();
        match &mut current {
            Some(block) if fence.starts_with("```") => {
                blocks.push(std::mem::replace(
                    block,
                    Block {
                        file: String::new(),
                        line: 0,
                        text: String::new(),
                    },
                ));
                current = None;
            }
            Some(block) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            None if fence == "```yaml" || fence == "```yml" => {
                current = Some(Block {
                    file: file.to_owned(),
                    line: i + 2,
                    text: String::new(),
                })
            }
            None if fence.starts_with("```yaml,ignore") => {
                assert!(
                    markdown
                        .lines()
                        .nth(i + 1)
                        .is_some_and(|l| l.trim_start().starts_with('#')),
                    "{file}:{}: a ```yaml,ignore block must say why in a first `#` comment line",
                    i + 1
                );
            }
            None => {}
        }
    }
    assert!(current.is_none(), "{file}: unclosed ```yaml block");
    blocks
}

fn guide_blocks() -> Vec<Block> {
    let dir = repo_root().join("guide/src");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            yaml_blocks(&name, &std::fs::read_to_string(p).unwrap())
        })
        .collect()
}

fn has_key(text: &str, key: &str) -> bool {
    text.lines().any(|l| l.starts_with(key))
}

#[test]
fn every_dataflow_example_in_the_guide_is_valid() {
    let blocks = guide_blocks();
    let dataflows: Vec<&Block> = blocks
        .iter()
        .filter(|b| has_key(&b.text, "nodes:"))
        .collect();
    assert!(
        dataflows.len() >= 3,
        "found only {} dataflow examples",
        dataflows.len()
    );
    let state = temp_dir();
    let mut failures = Vec::new();
    for (i, block) in dataflows.iter().enumerate() {
        let path = state.path().join(format!("example-{i}.yml"));
        std::fs::write(&path, &block.text).unwrap();
        let mut cmd = adora(state.path());
        cmd.arg("validate").arg(&path);
        let out = run_with_timeout(cmd, TIMEOUT);
        if !out.status.success() {
            failures.push(format!("{}:{}:\n{}", block.file, block.line, out.all()));
        }
    }
    assert!(
        failures.is_empty(),
        "invalid guide examples:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_cluster_example_in_the_guide_parses() {
    let blocks = guide_blocks();
    let clusters: Vec<&Block> = blocks
        .iter()
        .filter(|b| has_key(&b.text, "machines:"))
        .collect();
    assert!(!clusters.is_empty(), "no cluster.yml example in the guide");
    for block in clusters {
        let file = format!("{}:{}", block.file, block.line);
        if let Err(errors) = ClusterConfig::parse(&block.text, Path::new(&file)) {
            panic!("invalid cluster.yml example at {file}:\n{errors}");
        }
    }
}

#[test]
fn every_yaml_block_is_checked_or_marked() {
    for block in guide_blocks() {
        assert!(
            has_key(&block.text, "nodes:") || has_key(&block.text, "machines:"),
            "{}:{}: a ```yaml block that is neither a dataflow nor a cluster.yml; mark it \
             ```yaml,ignore with a first line saying why",
            block.file,
            block.line
        );
    }
}
