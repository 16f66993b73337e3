//! Parsing and validation of `dataflow.yml`, reporting every problem at once with its location.
//!
//! The YAML is first read into a [`serde_yaml::Value`] (YAML tags are reported and dropped); every
//! field of every node is then checked on that value (so one bad field does not hide the others),
//! then the nodes are checked against each other (duplicate ids, input sources naming real nodes
//! and outputs). Only when nothing was found is the value deserialized into a [`Descriptor`], so
//! what is accepted is exactly what serde accepts. Lines are found by `locate::line_of`, which
//! asks `serde_yaml` itself for the position of a path (see that module for how).

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde_yaml::{Mapping, Value};

use crate::descriptor::Descriptor;

mod checks;
pub(crate) mod locate;
pub mod module;
mod node;
#[cfg(test)]
mod tests;
pub(crate) mod yaml;

use locate::Seg;

/// One problem found in a dataflow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The dataflow file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The node concerned, when known.
    pub node: Option<String>,
    /// The field concerned (e.g. `inputs.tick`), when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(node) = &self.node {
            write!(f, "node `{node}`: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// All problems found in a dataflow file (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Reads a YAML file, or reports why it cannot be read as a validation error of that file.
pub(crate) fn read_file(path: &Path) -> Result<String, ValidationErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ValidationErrors(vec![ValidationError {
            file: path.to_owned(),
            line: None,
            node: None,
            field: None,
            message: format!("cannot read file: {e}"),
        }])
    })
}

impl Descriptor {
    /// Reads and validates a dataflow file.
    pub fn read(path: &Path) -> Result<Descriptor, ValidationErrors> {
        Self::parse(&read_file(path)?, path)
    }

    /// Parses and validates dataflow YAML; `file` is only used in error messages.
    ///
    /// Every problem is reported, sorted by line (problems without a known line come last).
    /// Warnings (type problems without `strict_types`) are dropped: see
    /// [`Descriptor::parse_with_warnings`].
    pub fn parse(yaml: &str, file: &Path) -> Result<Descriptor, ValidationErrors> {
        Self::parse_with_warnings(yaml, file).map(|(descriptor, _)| descriptor)
    }

    /// Like [`Descriptor::read`], also returning the warnings.
    pub fn read_with_warnings(
        path: &Path,
    ) -> Result<(Descriptor, Vec<ValidationError>), ValidationErrors> {
        Self::parse_with_warnings(&read_file(path)?, path)
    }

    /// Like [`Descriptor::parse`], also returning the warnings, sorted by line.
    pub fn parse_with_warnings(
        yaml: &str,
        file: &Path,
    ) -> Result<(Descriptor, Vec<ValidationError>), ValidationErrors> {
        let mut report = Report::new(file, yaml);
        let root: Value = match yaml::parse_value(yaml) {
            Ok(root) => root,
            Err((line, message)) => {
                report.push(None, None, line, message);
                return Err(report.finish());
            }
        };
        let root = strip_tags(&mut report, &root, &root, &mut Vec::new());
        let settings = node::ports::check_root_types(&mut report, &root);
        check_root_deploy(&mut report, &root);
        let mut flat = None;
        if let Some(nodes) = check_root(&mut report, &root) {
            let mut loader = module::Loader::new(file);
            flat = module::check_file(&mut report, file, nodes, None, &mut loader, Some(&settings));
            report.errors.append(&mut loader.errors);
        }
        let mut root = root;
        if let (Some(flat), Value::Mapping(map)) = (flat, &mut root) {
            module::check_unique_ids(&mut report, &flat.nodes);
            map.insert("nodes".into(), Value::Sequence(flat.nodes));
        }
        if !report.errors.is_empty() {
            return Err(report.finish());
        }
        let root = node::apply_root_deploy(&root);
        match serde_yaml::from_value(without_nulls(&root)) {
            Ok(descriptor) => Ok((descriptor, report.finish_warnings())),
            Err(e) => {
                // The checks above should have caught everything; never accept what serde rejects.
                report.push(None, None, None, e.to_string());
                Err(report.finish())
            }
        }
    }
}

/// Known top-level keys.
const ROOT_FIELDS: &[&str] = &[
    "nodes",
    // -- deploy and typed ports (compat-descriptor) --
    "deploy",
    "strict_types",
    "type_rules",
    // Runtime behaviour (dora 1.x compatibility), checked in `node/runtime.rs`.
    "health_check_interval",
    "exit_when_nodes_finish",
];

/// Checks the root `deploy` (the default of every node's) by deserializing it.
fn check_root_deploy(report: &mut Report<'_>, root: &Value) {
    let Some(deploy) = root.get("deploy").filter(|v| !v.is_null()) else {
        return;
    };
    if let Err(e) = serde_yaml::from_value::<crate::descriptor::Deploy>(without_nulls(deploy)) {
        let line = report.line(&[Seg::Key("deploy")]);
        report.push(None, Some("deploy".into()), line, e.to_string());
    }
    // What a node's own `deploy` may not be, the default for every node may not be either.
    for field in ["machine", "working_dir"] {
        if deploy
            .get(field)
            .and_then(Value::as_str)
            .is_some_and(|v| v.trim().is_empty())
        {
            let line = report.line(&[Seg::Key("deploy"), Seg::Key(field)]);
            let name = format!("deploy.{field}");
            report.push(None, Some(name), line, "must not be empty".into());
        }
    }
}

/// Checks the document shape and returns the `nodes` list when there is one.
fn check_root<'v>(report: &mut Report<'_>, root: &'v Value) -> Option<&'v [Value]> {
    let Value::Mapping(map) = root else {
        let message = match root {
            Value::Null => "the dataflow is empty: expected a mapping with a `nodes` list".into(),
            other => format!(
                "the dataflow must be a mapping with a `nodes` list, found {}",
                describe(other)
            ),
        };
        let line = report.line(&[]);
        report.push(None, None, line, message);
        return None;
    };
    for key in map.keys() {
        let Some(name) = key.as_str() else {
            let line = report.line(&[]);
            report.push(
                None,
                None,
                line,
                format!("top-level keys must be strings, found {}", describe(key)),
            );
            continue;
        };
        if !ROOT_FIELDS.contains(&name) {
            let line = report.line(&[Seg::Key(name)]);
            report.push(
                None,
                Some(name.to_owned()),
                line,
                unknown_field(name, ROOT_FIELDS),
            );
        }
    }
    node::check_runtime_root(report, map);
    let message = match map.get("nodes") {
        Some(Value::Sequence(nodes)) if !nodes.is_empty() => return Some(nodes),
        None => {
            let message = "missing required field `nodes`".into();
            report.push(None, Some("nodes".into()), None, message);
            return None;
        }
        Some(Value::Sequence(_) | Value::Null) => "the dataflow has no nodes".into(),
        Some(other) => format!("expected a list of nodes, found {}", describe(other)),
    };
    let line = report.line(&[Seg::Key("nodes")]);
    report.push(None, Some("nodes".into()), line, message);
    None
}

/// Most lines one report looks up. Each lookup re-reads the whole file, so a file with
/// thousands of problems took time quadratic in its size (found by `adora-fuzz`: 175 copies of
/// one node, 33 KB, took 0.6 s; 2 MB of them would take hours). Later problems are reported
/// without a line.
pub(crate) const MAX_LINE_LOOKUPS: usize = 64;

/// Most bytes the line lookups of one report re-read in all (YAML with long scalars parses at
/// ~10 MB/s, so under a second): a 12 MB file gets one lookup, not 64 (found by `adora-fuzz`:
/// 64 lookups of 12 MB took 13 s, of 195 KB with a 185 KB line 1.3 s).
pub(crate) const MAX_LINE_LOOKUP_BYTES: usize = 8 << 20;

/// Collects the errors of one file.
pub(crate) struct Report<'a> {
    file: &'a Path,
    yaml: &'a str,
    /// Lines looked up so far (at most [`MAX_LINE_LOOKUPS`]).
    lookups: std::cell::Cell<usize>,
    errors: Vec<ValidationError>,
    /// Problems that do not make the file invalid (type problems without `strict_types`).
    warnings: Vec<ValidationError>,
}

impl<'a> Report<'a> {
    /// An empty report for `yaml` read from `file`.
    pub(crate) fn new(file: &'a Path, yaml: &'a str) -> Self {
        Report {
            file,
            yaml,
            lookups: std::cell::Cell::new(0),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// True when no error was recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The line of `path` in the source (see [`locate::line_of`]).
    /// `None` past [`MAX_LINE_LOOKUPS`] lookups or [`MAX_LINE_LOOKUP_BYTES`] re-read.
    pub(crate) fn line(&self, path: &[Seg<'_>]) -> Option<usize> {
        let done = self.lookups.get();
        let read = (done + 1).saturating_mul(self.yaml.len());
        if done >= MAX_LINE_LOOKUPS || (done > 0 && read > MAX_LINE_LOOKUP_BYTES) {
            return None;
        }
        self.lookups.set(done + 1);
        locate::line_of(self.yaml, path)
    }

    /// Records one error.
    pub(crate) fn push(
        &mut self,
        node: Option<&str>,
        field: Option<String>,
        line: Option<usize>,
        message: String,
    ) {
        self.errors.push(ValidationError {
            file: self.file.to_owned(),
            line,
            node: node.map(str::to_owned),
            field,
            message,
        });
    }

    /// All errors, in file order; errors without a line keep their order, after the others.
    /// Errors of this file come first, then those of the module files it includes.
    pub(crate) fn finish(mut self) -> ValidationErrors {
        let file = self.file;
        self.errors
            .sort_by_key(|e| (e.file != file, e.line.is_none(), e.line.unwrap_or(0)));
        ValidationErrors(self.errors)
    }

    /// All warnings, in the order of [`Report::finish`].
    fn finish_warnings(mut self) -> Vec<ValidationError> {
        self.warnings
            .sort_by_key(|e| (e.line.is_none(), e.line.unwrap_or(0)));
        self.warnings
    }
}

/// A short description of a YAML value's type for messages, e.g. "a number (5)".
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing (null)".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) => format!("a string (`{s}`)"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a tagged value (`{}`)", t.tag),
    }
}

/// "unknown field `x`", with the closest known field as a suggestion or else the list of them.
pub(crate) fn unknown_field(name: &str, known: &[&str]) -> String {
    match suggest(name, known.iter().copied()) {
        Some(s) => format!("unknown field `{name}`; did you mean `{s}`?"),
        None => format!(
            "unknown field `{name}`; expected one of: {}",
            known.join(", ")
        ),
    }
}

/// Longest name a typo is suggested for: the edit distance takes time and memory proportional to
/// the product of the lengths (found by `adora-fuzz`: an unknown field named with 146 KB took a
/// second), and no field or node id is anywhere near this long.
const MAX_SUGGEST_LEN: usize = 128;

/// The candidate closest to `name`, if it is close enough to be an obvious typo.
pub(crate) fn suggest<'c>(
    name: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    if name.len() > MAX_SUGGEST_LEN {
        return None;
    }
    let name = name.to_ascii_lowercase();
    candidates
        .into_iter()
        .filter(|c| c.len() <= MAX_SUGGEST_LEN)
        .map(|c| (edit_distance(&name, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= (name.len().max(c.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and adjacent swaps.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// A copy of `value` (found at `path` in `root`) without YAML tags, each tag reported as an error:
/// `!env X` would otherwise silently read as `X`.
fn strip_tags<'v>(
    report: &mut Report<'_>,
    root: &'v Value,
    value: &'v Value,
    path: &mut Vec<Seg<'v>>,
) -> Value {
    match value {
        Value::Tagged(tagged) => {
            let message = format!("YAML tags are not supported (found `{}`)", tagged.tag);
            if let [Seg::Key("nodes"), Seg::Index(index), field @ ..] = path.as_slice() {
                let id = root["nodes"][*index]["id"].as_str();
                node::NodeCtx::new(report, *index, id).error(field, message);
            } else {
                let line = report.line(path);
                let field = (!path.is_empty()).then(|| node::field_name(path));
                report.push(None, field, line, message);
            }
            strip_tags(report, root, &tagged.value, path)
        }
        Value::Mapping(map) => {
            let mut stripped = Mapping::new();
            for (key, value) in map {
                // `as_str` sees through tags; other keys are reported by the checks.
                path.push(Seg::Key(key.as_str().unwrap_or_default()));
                let key = strip_tags(report, root, key, path);
                let value = strip_tags(report, root, value, path);
                path.pop();
                stripped.insert(key, value);
            }
            Value::Mapping(stripped)
        }
        Value::Sequence(seq) => {
            let mut stripped = Vec::with_capacity(seq.len());
            for (i, item) in seq.iter().enumerate() {
                path.push(Seg::Index(i));
                stripped.push(strip_tags(report, root, item, path));
                path.pop();
            }
            Value::Sequence(stripped)
        }
        other => other.clone(),
    }
}

/// A copy of `value` where mapping entries whose value is null are removed, so that `field:`
/// left empty means "not set" for every field (serde would reject a null enum, for example).
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Mapping(map) => Value::Mapping(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect::<Mapping>(),
        ),
        Value::Sequence(seq) => Value::Sequence(seq.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}
