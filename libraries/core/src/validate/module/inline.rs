//! Inlining a checked module into the file that includes it, as a module node `m`:
//!
//! - each node `n` of the module becomes `m.n` (nested modules give `outer.inner.n`);
//! - an input from `_mod/<port>` takes the source the module node wires to `<port>` (an unwired
//!   optional port drops the input); an input from another node of the module, `n/out`, becomes
//!   `m.n/out`; timers stay as they are;
//! - the includer's inputs from `m/<output>` become the node of the module producing `<output>`;
//! - `params` (`key: value`): `$PARAM_<KEY>` in `args` is replaced by the value, and `PARAM_<KEY>`
//!   is set in `env` unless the node (or a module nested in this one) already sets it;
//! - a relative `path` is relative to the module file (unless the node comes from `git`).

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
};

use serde_yaml::{Mapping, Value};

use super::{Loaded, MOD};
use crate::descriptor::InputSource;

/// A file's nodes with every module inlined.
#[derive(Debug, Default)]
pub(crate) struct Flat {
    /// Ordinary nodes, in the file's namespace.
    pub nodes: Vec<Value>,
    /// For each module node of the file: output → the source producing it (file's namespace).
    pub exports: BTreeMap<String, BTreeMap<String, String>>,
}

/// Inlines the modules of a checked file (`loaded[i]` is the module of `nodes[i]`, if any).
pub(crate) fn flatten(nodes: &[Value], loaded: Vec<Option<Loaded>>) -> Flat {
    let mut flat = Flat::default();
    for (value, module) in nodes.iter().zip(loaded) {
        let Some(module) = module else {
            flat.nodes.push(value.clone());
            continue;
        };
        let id = value.get("id").and_then(Value::as_str).unwrap_or_default();
        let wiring: BTreeMap<String, String> = match value.get("inputs") {
            Some(Value::Mapping(inputs)) => inputs
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), source_of(v)?.to_owned())))
                .collect(),
            _ => BTreeMap::new(),
        };
        let params = params_of(value);
        let internal: HashSet<String> = module
            .flat
            .nodes
            .iter()
            .filter_map(|n| n.get("id")?.as_str().map(str::to_owned))
            .collect();
        let dir = module.written.parent().unwrap_or(Path::new(""));
        for inner in &module.flat.nodes {
            let Value::Mapping(inner) = inner else {
                continue;
            };
            let mut node = inner.clone();
            prefix_id(&mut node, id);
            rewrite_sources(&mut node, |source| {
                inner_source(source, id, &internal, &wiring)
            });
            apply_params(&mut node, &params);
            relocate_path(&mut node, dir, &module.dir);
            flat.nodes.push(Value::Mapping(node));
        }
        let exports = module
            .exports
            .iter()
            .map(|(port, source)| (port.clone(), format!("{id}.{source}")))
            .collect();
        flat.exports.insert(id.to_owned(), exports);
    }
    let exports = &flat.exports;
    for node in &mut flat.nodes {
        if let Value::Mapping(node) = node {
            rewrite_sources(node, |source| {
                Some(match InputSource::parse(source) {
                    Ok(InputSource::Node { node, output }) => exports
                        .get(node.as_str())
                        .and_then(|ports| ports.get(output.as_str()))
                        .cloned()
                        .unwrap_or_else(|| source.to_owned()),
                    _ => source.to_owned(),
                })
            });
        }
    }
    flat
}

/// The sources (in the module's namespace) producing `port` among the module's direct nodes.
pub(crate) fn producers(nodes: &[Value], flat: &Flat, port: &str) -> Vec<String> {
    let mut found = Vec::new();
    for node in nodes {
        let Some(id) = node.get("id").and_then(Value::as_str) else {
            continue;
        };
        if node.get("module").is_some_and(|m| !m.is_null()) {
            if let Some(source) = flat.exports.get(id).and_then(|p| p.get(port)) {
                found.push(source.clone());
            }
        } else if let Some(Value::Sequence(outputs)) = node.get("outputs") {
            if outputs.iter().any(|o| o.as_str() == Some(port)) {
                found.push(format!("{id}/{port}"));
            }
        }
    }
    found
}

/// The source string of an input value (short or long form).
fn source_of(input: &Value) -> Option<&str> {
    match input {
        Value::String(s) => Some(s),
        Value::Mapping(long) => long.get("source")?.as_str(),
        _ => None,
    }
}

/// `PARAM_<KEY>` and the value's text, for each of the node's `params`.
fn params_of(node: &Value) -> Vec<(String, String)> {
    let Some(Value::Mapping(params)) = node.get("params") else {
        return Vec::new();
    };
    params
        .iter()
        .filter_map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((format!("PARAM_{}", k.as_str()?.to_ascii_uppercase()), value))
        })
        .collect()
}

fn prefix_id(node: &mut Mapping, module: &str) {
    if let Some(Value::String(id)) = node.get_mut("id") {
        *id = format!("{module}.{id}");
    }
}

/// Applies `map` to every input source of `node`; `None` removes the input.
fn rewrite_sources(node: &mut Mapping, map: impl Fn(&str) -> Option<String>) {
    let Some(Value::Mapping(inputs)) = node.get_mut("inputs") else {
        return;
    };
    let mut dropped = Vec::new();
    for (key, input) in inputs.iter_mut() {
        let slot = match input {
            Value::String(s) => s,
            Value::Mapping(long) => match long.get_mut("source") {
                Some(Value::String(s)) => s,
                _ => continue,
            },
            _ => continue,
        };
        match map(slot) {
            Some(new) => *slot = new,
            None => dropped.push(key.clone()),
        }
    }
    for key in dropped {
        inputs.remove(&key);
    }
}

/// Where an input of a module's node comes from once the module is inlined as `module`.
fn inner_source(
    source: &str,
    module: &str,
    internal: &HashSet<String>,
    wiring: &BTreeMap<String, String>,
) -> Option<String> {
    match InputSource::parse(source) {
        Ok(InputSource::Node { node, output }) if node.as_str() == MOD => {
            // Unwired: an optional port (a required one is an error reported before).
            wiring.get(output.as_str()).cloned()
        }
        Ok(InputSource::Node { node, output }) if internal.contains(node.as_str()) => {
            Some(format!("{module}.{node}/{output}"))
        }
        _ => Some(source.to_owned()),
    }
}

/// Substitutes `$PARAM_<KEY>` in `args` and adds `PARAM_<KEY>` to `env` when not set.
fn apply_params(node: &mut Mapping, params: &[(String, String)]) {
    if params.is_empty() {
        return;
    }
    if let Some(Value::String(args)) = node.get_mut("args") {
        *args = substitute(args, params);
    }
    let env = node
        .entry(Value::String("env".into()))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if env.is_null() {
        *env = Value::Mapping(Mapping::new());
    }
    if let Value::Mapping(env) = env {
        for (name, value) in params {
            let key = Value::String(name.clone());
            if !env.contains_key(&key) {
                env.insert(key, Value::String(value.clone()));
            }
        }
    }
}

/// Replaces each `$PARAM_<KEY>` (the longest run of letters, digits and `_`) that names a
/// parameter; any other text, including unknown `$PARAM_...`, is kept.
pub(crate) fn substitute(text: &str, params: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("$PARAM_") {
        out.push_str(&rest[..at]);
        let name_len = rest[at + 1..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len() - at - 1);
        let name = &rest[at + 1..at + 1 + name_len];
        match params.iter().find(|(k, _)| k == name) {
            Some((_, value)) => out.push_str(value),
            None => out.push_str(&rest[at..at + 1 + name_len]),
        }
        rest = &rest[at + 1 + name_len..];
    }
    out.push_str(rest);
    out
}

/// Makes a relative `path` relative to the includer: `written_dir/path` when it names a file in
/// the module's directory `abs_dir` (or has a `/`); a bare command name found nowhere there is
/// left for the `PATH` lookup. Paths of `git` nodes are relative to their checkout: unchanged.
fn relocate_path(node: &mut Mapping, written_dir: &Path, abs_dir: &Path) {
    if node.get("git").is_some_and(|g| !g.is_null()) || written_dir.as_os_str().is_empty() {
        return;
    }
    if let Some(Value::String(path)) = node.get_mut("path") {
        let p = Path::new(path.as_str());
        if p.is_relative() && (path.contains('/') || abs_dir.join(p).exists()) {
            *path = written_dir.join(p).display().to_string();
        }
    }
}
