//! Modules (dora 1.x): a node with `module: file.yml` stands for the sub-graph in that file. The
//! file is read and checked like a dataflow (every problem reported with the module file's name
//! and line), then its nodes are inlined into the including file before anything is
//! deserialized, so the rest of Adora only ever sees ordinary nodes. How ids, inputs, outputs
//! and `params` are rewritten is in `inline`.
//!
//! A module file:
//!
//! ```yaml
//! module:
//!   name: filter            # metadata
//!   inputs: [raw]           # ports its nodes read as `_mod/raw`; must be wired
//!   inputs_optional: [cfg]  # may be left unwired (the input is then dropped)
//!   outputs: [filtered]     # outputs of its direct nodes that the parent can read
//! nodes:
//!   - id: filter
//!     path: filter.py       # relative to the module file
//!     inputs: { data: _mod/raw }
//!     outputs: [filtered]
//! ```

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde_yaml::{Mapping, Value};

use super::{
    checks, describe,
    locate::Seg,
    node::{self, ports::TypeSettings, NodeCtx, NodeSummary},
    unknown_field, Report, ValidationError,
};
use crate::ids::is_valid_id;

mod inline;
#[cfg(test)]
mod tests;

pub(crate) use inline::Flat;

/// How deep modules may include modules.
pub const MAX_MODULE_DEPTH: usize = 8;
/// The largest module file read, in bytes.
pub const MAX_MODULE_FILE_BYTES: u64 = 1 << 20;

/// Top-level keys of a module file.
const MODULE_FILE_FIELDS: &[&str] = &["module", "nodes"];
/// Keys of a module file's `module:` header.
const HEADER_FIELDS: &[&str] = &[
    "name",
    "description",
    "inputs",
    "inputs_optional",
    "outputs",
];
/// The pseudo-node through which a module's nodes read its inputs (`_mod/<port>`).
pub(crate) const MOD: &str = "_mod";

/// The ports of a module, from its `module:` header.
#[derive(Debug, Default)]
pub(crate) struct Header {
    /// Ports that must be wired.
    pub inputs: Vec<String>,
    /// Ports that may be left unwired.
    pub optional: Vec<String>,
    /// Outputs the parent may read as `<module node>/<output>`.
    pub outputs: Vec<String>,
}

/// A module file, read and checked: its header, and its nodes flattened when it had no errors.
#[derive(Debug)]
pub(crate) struct Included {
    /// The ports, when the header could be read.
    pub header: Header,
    /// The flattened module, when it had no errors.
    pub loaded: Option<Loaded>,
}

/// A module file, read, checked and flattened.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The module path as written in `module:` (its parent directory prefixes relative paths).
    pub written: PathBuf,
    /// The directory of the module file.
    pub dir: PathBuf,
    /// Its nodes, flattened, in the module's namespace.
    pub flat: Flat,
    /// Each declared output → the source producing it, in the module's namespace.
    pub exports: BTreeMap<String, String>,
}

/// State of one load: the files being expanded (to refuse cycles) and errors of module files.
pub(crate) struct Loader {
    stack: Vec<PathBuf>,
    /// Errors found in module files (each names its file).
    pub errors: Vec<ValidationError>,
}

impl Loader {
    /// A loader for the dataflow file `file`.
    pub(crate) fn new(file: &Path) -> Self {
        let top = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_owned());
        Loader {
            stack: vec![top],
            errors: Vec::new(),
        }
    }
}

/// Checks every node of a file (the dataflow, or a module with `header`), loads the modules it
/// includes, checks the graph (and the typed ports with `types`: the dataflow's settings; module
/// files are not type-checked yet), and returns its nodes flattened (`None` after an error).
pub(crate) fn check_file(
    report: &mut Report<'_>,
    file: &Path,
    nodes: &[Value],
    header: Option<&Header>,
    loader: &mut Loader,
    types: Option<&TypeSettings>,
) -> Option<Flat> {
    let mut summaries: Vec<NodeSummary<'_>> = nodes
        .iter()
        .enumerate()
        .map(|(index, value)| node::check_node(report, index, value))
        .collect();
    let included: Vec<Option<Included>> = nodes
        .iter()
        .enumerate()
        .map(|(index, value)| load_included(report, file, index, value, loader))
        .collect();
    let mut complete = true;
    for (index, value) in nodes.iter().enumerate() {
        if value.get("module").is_none_or(Value::is_null) {
            continue;
        }
        match &included[index] {
            Some(module) => {
                let outputs = module.header.outputs.iter().map(String::as_str).collect();
                summaries[index].outputs = Some(outputs);
                check_wiring(report, index, value, &module.header);
                complete &= module.loaded.is_some();
            }
            None => {
                complete = false;
                summaries[index].outputs = None; // its errors are reported in the module file
            }
        }
    }
    if let Some(header) = header {
        let ports = header.inputs.iter().chain(&header.optional);
        summaries.push(NodeSummary {
            index: nodes.len(),
            id: Some(MOD),
            outputs: Some(ports.map(String::as_str).collect()),
            inputs: Vec::new(),
            port_types: Default::default(),
            unsupported: false,
        });
    }
    checks::check_graph(report, &summaries);
    if let Some(types) = types {
        node::ports::check_types(report, &summaries, types);
    }
    if !(complete && report.is_empty()) {
        return None;
    }
    let loaded = included.into_iter().map(|i| i.and_then(|i| i.loaded));
    Some(inline::flatten(nodes, loaded.collect()))
}

/// Loads the module of the node at `index` when it has one; `None` otherwise or when not even
/// its header could be read.
fn load_included(
    report: &mut Report<'_>,
    file: &Path,
    index: usize,
    value: &Value,
    loader: &mut Loader,
) -> Option<Included> {
    let written = PathBuf::from(value.get("module")?.as_str()?);
    if written.as_os_str().is_empty() {
        return None; // reported by the field checks
    }
    let id = value.get("id").and_then(Value::as_str);
    let mut cx = NodeCtx::new(report, index, id);
    let field = [Seg::Key("module")];
    let path = file.parent().unwrap_or(Path::new("")).join(&written);
    let canonical = match std::fs::canonicalize(&path) {
        Ok(p) => p,
        Err(e) => {
            cx.error(&field, format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    if let Some(at) = loader.stack.iter().position(|p| *p == canonical) {
        let mut chain: Vec<String> = loader.stack[at..]
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        chain.push(canonical.display().to_string());
        let message = format!("the module includes itself: {}", chain.join(" → "));
        cx.error(&field, message);
        return None;
    }
    if loader.stack.len() > MAX_MODULE_DEPTH {
        let message = format!("modules are nested more than {MAX_MODULE_DEPTH} deep");
        cx.error(&field, message);
        return None;
    }
    let text = match read_module(&path) {
        Ok(text) => text,
        Err(message) => {
            cx.error(&field, message);
            return None;
        }
    };
    let dir = canonical.parent().unwrap_or(Path::new("/")).to_owned();
    loader.stack.push(canonical);
    let loaded = load_module(&path, &text, loader);
    loader.stack.pop();
    let (header, parts) = loaded?;
    Some(Included {
        header,
        loaded: parts.map(|(flat, exports)| Loaded {
            written,
            dir,
            flat,
            exports,
        }),
    })
}

/// Reads a module file, refusing one over [`MAX_MODULE_FILE_BYTES`].
fn read_module(path: &Path) -> Result<String, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if size > MAX_MODULE_FILE_BYTES {
        return Err(format!(
            "{} is {size} bytes; a module file may have at most {MAX_MODULE_FILE_BYTES}",
            path.display()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A module's header, and its flattened nodes and exports when it had no errors.
type LoadedParts = (Header, Option<(Flat, BTreeMap<String, String>)>);

/// Checks and flattens a module file's text; its errors go to `loader.errors`.
fn load_module(path: &Path, text: &str, loader: &mut Loader) -> Option<LoadedParts> {
    let mut report = Report::new(path, text);
    let result = match super::yaml::parse_value(text) {
        Ok(root) => {
            let root = super::strip_tags(&mut report, &root, &root, &mut Vec::new());
            check_module_root(&mut report, &root).map(|(header, nodes)| {
                let flat = check_file(&mut report, path, nodes, Some(&header), loader, None);
                let parts = flat.map(|flat| {
                    let exports = check_exports(&mut report, &header, nodes, &flat);
                    (flat, exports)
                });
                (header, parts)
            })
        }
        Err((line, message)) => {
            report.push(None, None, line, message);
            None
        }
    };
    let ok = report.is_empty();
    loader.errors.append(&mut report.errors);
    result.map(|(header, parts)| (header, parts.filter(|_| ok)))
}

/// Checks the keys of a module file and reads its header; returns it with the `nodes` list.
fn check_module_root<'v>(
    report: &mut Report<'_>,
    root: &'v Value,
) -> Option<(Header, &'v [Value])> {
    let Value::Mapping(map) = root else {
        let line = report.line(&[]);
        let message = format!(
            "a module file must be a mapping with `module` and `nodes`, found {}",
            describe(root)
        );
        report.push(None, None, line, message);
        return None;
    };
    for name in map.keys().map(|k| k.as_str().unwrap_or_default()) {
        if !MODULE_FILE_FIELDS.contains(&name) {
            let line = report.line(&[Seg::Key(name)]);
            let message = if name == "build" {
                "not supported by Adora yet: a module-level `build` (give the module's nodes a `build`)".to_owned()
            } else {
                unknown_field(name, MODULE_FILE_FIELDS)
            };
            report.push(None, Some(name.to_owned()), line, message);
        }
    }
    let header = match map.get("module") {
        Some(Value::Mapping(header)) => read_header(report, header),
        None | Some(Value::Null) => Header::default(),
        Some(other) => {
            let line = report.line(&[Seg::Key("module")]);
            let message = format!(
                "expected the module header (a mapping), found {}",
                describe(other)
            );
            report.push(None, Some("module".into()), line, message);
            Header::default()
        }
    };
    match map.get("nodes") {
        Some(Value::Sequence(nodes)) if !nodes.is_empty() => Some((header, nodes)),
        other => {
            let line = report.line(&[Seg::Key("nodes")]);
            let message = match other {
                Some(Value::Sequence(_) | Value::Null) => "the module has no nodes".to_owned(),
                None => "missing required field `nodes`".to_owned(),
                Some(other) => format!("expected a list of nodes, found {}", describe(other)),
            };
            report.push(None, Some("nodes".into()), line, message);
            None
        }
    }
}

/// Reads the `module:` header, reporting unknown keys and bad port lists.
fn read_header(report: &mut Report<'_>, header: &Mapping) -> Header {
    for name in header.keys().map(|k| k.as_str().unwrap_or_default()) {
        if !HEADER_FIELDS.contains(&name) {
            let line = report.line(&[Seg::Key("module"), Seg::Key(name)]);
            let field = Some(format!("module.{name}"));
            report.push(None, field, line, unknown_field(name, HEADER_FIELDS));
        }
    }
    let mut ports = |name: &str| -> Vec<String> {
        let Some(value) = header.get(name).filter(|v| !v.is_null()) else {
            return Vec::new();
        };
        let field = Some(format!("module.{name}"));
        let Value::Sequence(list) = value else {
            let line = report.line(&[Seg::Key("module"), Seg::Key(name)]);
            let message = format!("expected a list of port ids, found {}", describe(value));
            report.push(None, field, line, message);
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, port) in list.iter().enumerate() {
            match port.as_str() {
                Some(p) if is_valid_id(p) && !out.iter().any(|o| o == p) => out.push(p.to_owned()),
                _ => {
                    let path = [Seg::Key("module"), Seg::Key(name), Seg::Index(i)];
                    let line = report.line(&path);
                    let message = format!(
                        "expected a unique port id (letters, digits, `_`, `.`, `-`), found {}",
                        describe(port)
                    );
                    report.push(None, field.clone(), line, message);
                }
            }
        }
        out
    };
    Header {
        inputs: ports("inputs"),
        optional: ports("inputs_optional"),
        outputs: ports("outputs"),
    }
}

/// Every declared output must be produced by exactly one direct node of the module; returns
/// each output with its source.
fn check_exports(
    report: &mut Report<'_>,
    header: &Header,
    nodes: &[Value],
    flat: &Flat,
) -> BTreeMap<String, String> {
    let mut exports = BTreeMap::new();
    for (i, port) in header.outputs.iter().enumerate() {
        let producers = inline::producers(nodes, flat, port);
        let message = match producers.as_slice() {
            [source] => {
                exports.insert(port.clone(), source.clone());
                continue;
            }
            [] => format!("no node of the module has an output `{port}`"),
            many => format!(
                "output `{port}` is produced by several nodes of the module ({}); rename all but one",
                many.join(", ")
            ),
        };
        let line = report.line(&[Seg::Key("module"), Seg::Key("outputs"), Seg::Index(i)]);
        report.push(None, Some("module.outputs".into()), line, message);
    }
    exports
}

/// The module node's `inputs` must name declared ports; every required port must be wired.
fn check_wiring(report: &mut Report<'_>, index: usize, value: &Value, header: &Header) {
    let id = value.get("id").and_then(Value::as_str);
    let wired: Vec<&str> = match value.get("inputs") {
        Some(Value::Mapping(m)) => m.keys().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut cx = NodeCtx::new(report, index, id);
    for port in &wired {
        if !header
            .inputs
            .iter()
            .chain(&header.optional)
            .any(|p| p == port)
        {
            let declared: Vec<&str> = header
                .inputs
                .iter()
                .chain(&header.optional)
                .map(String::as_str)
                .collect();
            let message = if declared.is_empty() {
                format!("the module has no input `{port}` (it declares no inputs)")
            } else {
                format!(
                    "the module has no input `{port}` (its inputs: {})",
                    declared.join(", ")
                )
            };
            cx.error(&[Seg::Key("inputs"), Seg::Key(port)], message);
        }
    }
    for port in &header.inputs {
        if !wired.contains(&port.as_str()) {
            let field = if wired.is_empty() {
                vec![Seg::Key("module")]
            } else {
                vec![Seg::Key("inputs")]
            };
            cx.error(&field, format!("the module's input `{port}` is not wired (add `inputs: {{ {port}: <node>/<output> }}`)"));
        }
    }
}

/// After inlining, ids must still be unique (a node `a.b` next to a module `a` with a node `b`).
pub(crate) fn check_unique_ids(report: &mut Report<'_>, nodes: &[Value]) {
    let mut seen = std::collections::HashSet::new();
    for id in nodes.iter().filter_map(|n| n.get("id")?.as_str()) {
        if !seen.insert(id) {
            let message = format!(
                "node id `{id}` is used twice once modules are inlined \
                 (a module `m` with a node `n` becomes `m.n`)"
            );
            report.push(Some(id), Some("id".into()), None, message);
        }
    }
}
