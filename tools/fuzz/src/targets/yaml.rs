//! `dataflow.yml` (loader + validator) and `cluster.yml`: valid files from the repository,
//! mutated as trees (fields flipped, hostile values, deep nesting, unknown fields) and as text
//! (YAML anchors, tags, deep block nesting, cuts), plus random text. A file that validates must
//! survive the way it travels: to JSON and back (`Start`/`Spawn` carry the descriptor), and to
//! YAML and through the validator again.

use std::{path::Path, sync::OnceLock};

use adora_core::{cluster::ClusterConfig, Descriptor};
use proptest::{prelude::RngExt, test_runner::TestRunner};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use super::{check_memory, excerpt, mode, Mode};
use crate::{alloc::peak_during, mutate, runner::Target};

/// The dataflow loader and validator (`Descriptor::parse`).
pub const DATAFLOW: Target = Target {
    name: "dataflow-yaml",
    about: "dataflow.yml text -> Descriptor::parse (+ JSON and YAML round trips)",
    case: dataflow_case,
};

/// The `cluster.yml` parser and validator (`ClusterConfig::parse`).
pub const CLUSTER: Target = Target {
    name: "cluster-yaml",
    about: "cluster.yml text -> ClusterConfig::parse (+ YAML round trip)",
    case: cluster_case,
};

const DATAFLOW_SEEDS: &[&str] = &[
    include_str!("../../../../examples/rust-dataflow/dataflow.yml"),
    include_str!("../../../../examples/python-dataflow/dataflow.yml"),
    include_str!("../../../../examples/benchmark/dataflow.yml"),
    include_str!("../../../../examples/multiple-daemons/dataflow.yml"),
    include_str!("../../../../examples/python-camera/dataflow.yml"),
    include_str!("../../../../cluster-examples/robot-fleet/dataflow.yml"),
    include_str!("../../../../cluster-examples/edge-ai/dataflow.yml"),
    include_str!("../../../../cluster-examples/ci-pipeline/dataflow.yml"),
    include_str!("../../../../tests/compat/deploy.yml"),
    include_str!("../../../../tests/compat/runtime-fields.yml"),
    include_str!("../../../../tests/compat/sources.yml"),
    include_str!("../../../../tests/compat/timers-and-framing.yml"),
    include_str!("../../../../tests/compat/typed-ports.yml"),
];

const CLUSTER_SEEDS: &[&str] = &[
    include_str!("../../../../cluster-examples/robot-fleet/cluster.yml"),
    include_str!("../../../../cluster-examples/edge-ai/cluster.yml"),
    include_str!("../../../../cluster-examples/ci-pipeline/cluster.yml"),
];

/// The file name errors mention; no file exists there, so `module:` includes fail to read.
const FILE: &str = "/nonexistent/adora-fuzz/dataflow.yml";

/// YAML a hostile file may contain: alias bombs, tags, deep block nesting, odd scalars.
const SNIPPETS: &[&str] = &[
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n",
    "x: !!binary AAAA\n", "x: !custom {a: 1}\n", "<<: *undefined\n", "? [a, b]\n: c\n",
    "%YAML 1.1\n---\n", "---\n...\n---\n", "\u{feff}", "\t", "x: 'unterminated\n", "x: |\n  a\n b\n",
    "id: a\nid: b\n", "nodes: []\n", "nodes: ~\n", "x: 0x_\n", "x: 1_000e9999\n",
];

struct Seeds {
    texts: &'static [&'static str],
    trees: Vec<Value>,
    vocabulary: Vec<String>,
}

fn seeds(texts: &'static [&'static str]) -> Seeds {
    let trees: Vec<Value> = texts
        .iter()
        .map(|t| serde_yaml::from_str(t).expect("the seed files of adora-fuzz are valid YAML"))
        .collect();
    let mut vocabulary = Vec::new();
    trees.iter().for_each(|t| mutate::keys(t, &mut vocabulary));
    vocabulary.sort();
    vocabulary.dedup();
    Seeds {
        texts,
        trees,
        vocabulary,
    }
}

fn dataflow_seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    SEEDS.get_or_init(|| seeds(DATAFLOW_SEEDS))
}

fn cluster_seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    SEEDS.get_or_init(|| seeds(CLUSTER_SEEDS))
}

/// Largest input generated: mutations that copy array elements compound into files of tens of
/// MB, which are read in linear time (~20 MB/s) but would exceed any per-case time limit.
const MAX_INPUT_BYTES: usize = 4 << 20;

/// A YAML text: a seed, mutated as a tree or as text, or random; at most [`MAX_INPUT_BYTES`].
fn input(runner: &mut TestRunner, seeds: &Seeds) -> String {
    let mut text = unbounded_input(runner, seeds);
    if text.len() > MAX_INPUT_BYTES {
        let end = (0..=MAX_INPUT_BYTES)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
    }
    text
}

fn unbounded_input(runner: &mut TestRunner, seeds: &Seeds) -> String {
    let rng = runner.rng();
    let pick = rng.random_range(0..seeds.texts.len());
    match mode(runner) {
        Mode::Valid => seeds.texts[pick].to_owned(),
        Mode::Mutated if runner.rng().random_bool(0.75) => {
            let rng = runner.rng();
            let mut tree = seeds.trees[pick].clone();
            mutate::mutate_tree(rng, &mut tree, &seeds.vocabulary);
            serde_yaml::to_string(&tree).unwrap_or_default()
        }
        Mode::Mutated => mutate_text(runner, seeds.texts[pick]),
        Mode::Raw => {
            let rng = runner.rng();
            String::from_utf8_lossy(&mutate::raw_bytes(rng, 4096)).into_owned()
        }
    }
}

fn mutate_text(runner: &mut TestRunner, seed: &str) -> String {
    let rng = runner.rng();
    let mut text = seed.to_owned();
    let at = (0..=rng.random_range(0..=text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    match rng.random_range(0..5) {
        0 => text.truncate(at),
        1 => {
            let depth = rng.random_range(100..20_000);
            text.insert_str(at, &format!("\n{}x\n", "- ".repeat(depth)));
        }
        2 => {
            let depth = rng.random_range(100..20_000);
            text.insert_str(at, &format!("\nx: {}\n", "[".repeat(depth)));
        }
        _ => {
            let snippet = SNIPPETS[rng.random_range(0..SNIPPETS.len())];
            text.insert_str(at, snippet);
        }
    }
    text
}

/// A validated value must come back equal from JSON (how it travels) and from YAML.
fn round_trips<T>(value: &T, reparse: impl Fn(&str) -> Result<T, String>) -> Result<(), String>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_string(value).map_err(|e| format!("does not encode as JSON: {e}"))?;
    let back: T = serde_json::from_str(&json)
        .map_err(|e| format!("its JSON does not decode: {e}\n{}", excerpt(&json)))?;
    if &back != value {
        return Err(format!(
            "its JSON decodes to another value: {}",
            excerpt(&json)
        ));
    }
    let yaml = serde_yaml::to_string(value).map_err(|e| format!("does not encode as YAML: {e}"))?;
    let again = reparse(&yaml)
        .map_err(|e| format!("its YAML does not validate: {e}\n{}", excerpt(&yaml)))?;
    if &again != value {
        return Err(format!(
            "its YAML validates to another value: {}",
            excerpt(&yaml)
        ));
    }
    Ok(())
}

/// YAML values are far bigger than their text; aliases are expanded within serde_yaml's limit.
const YAML_BYTES_PER_BYTE: usize = 200;
const YAML_FIXED_BYTES: usize = 64 << 20;

/// With `ADORA_FUZZ_DUMP` set (a file), a replayed case writes its input there.
fn dump(text: &str) {
    if let Some(path) = std::env::var_os("ADORA_FUZZ_DUMP") {
        let _ = std::fs::write(path, text);
    }
}

fn dataflow_case(runner: &mut TestRunner) -> Result<(), String> {
    let text = input(runner, dataflow_seeds());
    dump(&text);
    let parse = |t: &str| Descriptor::parse(t, Path::new(FILE)).map_err(|e| e.to_string());
    let (result, peak) = peak_during(|| parse(&text));
    check_memory(peak, text.len(), YAML_BYTES_PER_BYTE, YAML_FIXED_BYTES)?;
    match result {
        Ok(descriptor) => round_trips(&descriptor, parse)
            .map_err(|e| format!("a dataflow that validates {e}\ninput: {}", excerpt(&text))),
        Err(_) => Ok(()),
    }
}

fn cluster_case(runner: &mut TestRunner) -> Result<(), String> {
    let text = input(runner, cluster_seeds());
    dump(&text);
    let parse = |t: &str| ClusterConfig::parse(t, Path::new(FILE)).map_err(|e| e.to_string());
    let (result, peak) = peak_during(|| parse(&text));
    check_memory(peak, text.len(), YAML_BYTES_PER_BYTE, YAML_FIXED_BYTES)?;
    match result {
        Ok(config) => round_trips(&config, parse).map_err(|e| {
            format!(
                "a cluster.yml that validates {e}\ninput: {}",
                excerpt(&text)
            )
        }),
        Err(_) => Ok(()),
    }
}
