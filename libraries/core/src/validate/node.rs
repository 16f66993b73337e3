//! Checks of one node's fields, each on its own so that every problem is reported.

use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::{describe, locate::Seg, suggest, unknown_field, Report};
use crate::{ids::is_valid_id, RESERVED_ENV_VARS};

mod compat;
pub(crate) mod ports;

pub(crate) use compat::apply_root_deploy;

/// Known node fields (the serde names of [`crate::descriptor::NodeSpec`]).
pub(crate) const NODE_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "path",
    "args",
    "env",
    "build",
    "git",
    "branch",
    "tag",
    "rev",
    "module",
    "params",
    "inputs",
    "outputs",
    "restart_policy",
    "max_restarts",
    "restart_delay",
    "max_restart_delay",
    "restart_window",
    // -- typed ports, framing, deploy (compat-descriptor) --
    "output_types",
    "input_types",
    "output_framing",
    "deploy",
    "_unstable_deploy",
    // Runtime behaviour (dora 1.x compatibility), checked in `node/runtime.rs`.
    "health_check_timeout",
    "cpu_affinity",
    "send_stdout_as",
    "send_logs_as",
    "min_log_level",
    "max_log_size",
    "max_rotated_files",
];

/// Known keys of a long-form input.
const LONG_INPUT_FIELDS: &[&str] = &["source", "queue_size", "input_timeout", "poll"];
/// Known keys of `deploy` / `_unstable_deploy`.
const DEPLOY_FIELDS: &[&str] = &[
    "machine",
    "labels",
    "distribute",
    "working_dir",
    "resources",
];
/// Accepted `restart_policy` values.
const RESTART_POLICIES: &[&str] = &["never", "on-failure", "always"];
/// Accepted `distribute` values.
const DISTRIBUTE_MODES: &[&str] = &["local", "scp", "http"];

/// What the cross-node checks need to know about a node, read even when the node has errors.
#[derive(Debug)]
pub(crate) struct NodeSummary<'v> {
    /// Position in the `nodes` list.
    pub index: usize,
    /// The id, when it is a string (valid or not).
    pub id: Option<&'v str>,
    /// Declared outputs; `None` when `outputs` could not be read at all.
    pub outputs: Option<Vec<&'v str>>,
    /// Inputs whose source is a string.
    pub inputs: Vec<InputRef<'v>>,
    /// `output_types` and `input_types` entries whose URN is a string (port → URN).
    pub port_types: ports::PortTypes<'v>,
    /// Whether the node uses a feature Adora does not support yet (`operators`, `ros2`, ...).
    pub unsupported: bool,
}

/// One input and its source, as written.
#[derive(Debug)]
pub(crate) struct InputRef<'v> {
    /// The input id.
    pub id: &'v str,
    /// The source string.
    pub source: &'v str,
    /// Whether the long form `{ source, queue_size }` was used.
    pub long: bool,
}

/// Checks every field of the node at `index` and returns what the cross-node checks need.
pub(crate) fn check_node<'v>(
    report: &mut Report<'_>,
    index: usize,
    value: &'v Value,
) -> NodeSummary<'v> {
    let mut summary = NodeSummary {
        index,
        id: None,
        outputs: None,
        inputs: Vec::new(),
        port_types: ports::PortTypes::default(),
        unsupported: false,
    };
    let Value::Mapping(map) = value else {
        let line = report.line(&[Seg::Key("nodes"), Seg::Index(index)]);
        let message = format!(
            "expected a node (a mapping with `id` and `path`), found {}",
            describe(value)
        );
        report.push(None, Some(format!("nodes[{index}]")), line, message);
        return summary;
    };
    summary.id = map.get("id").and_then(Value::as_str);
    let mut cx = NodeCtx::new(report, index, summary.id);
    cx.check_id(map.get("id"));
    summary.unsupported = compat::report_unsupported(&mut cx, map);
    for key in map.keys() {
        match key.as_str() {
            Some(name) if NODE_FIELDS.contains(&name) => {}
            Some(name) if compat::UNSUPPORTED_FIELDS.contains(&name) => {}
            Some(name) => cx.error(&[Seg::Key(name)], unknown_field(name, NODE_FIELDS)),
            None => cx.error(
                &[],
                format!("field names must be strings, found {}", describe(key)),
            ),
        }
    }
    if !summary.unsupported {
        // An operator/hub node has no `path`; it was already reported as unsupported.
        cx.check_source(map);
    }
    for name in ["name", "description", "build"] {
        if let Some(v) = present(map, name) {
            cx.string(&[Seg::Key(name)], v, false);
        }
    }
    if let Some(args) = present(map, "args") {
        match args.as_str() {
            Some(a) => {
                if let Err(e) = shell_words::split(a) {
                    cx.error(
                        &[Seg::Key("args")],
                        format!("cannot split `{a}` into arguments: {e}"),
                    );
                }
            }
            None => cx.error(&[Seg::Key("args")], expected("a string of arguments", args)),
        }
    }
    if let Some(env) = present(map, "env") {
        cx.check_env(env);
    }
    summary.outputs = match present(map, "outputs") {
        None => Some(Vec::new()),
        Some(outputs) => cx.check_outputs(outputs),
    };
    if let Some(inputs) = present(map, "inputs") {
        summary.inputs = cx.check_inputs(inputs);
    }
    cx.check_restart(map);
    compat::check_deploy_and_framing(&mut cx, map);
    summary.port_types = ports::check_port_fields(&mut cx, map);
    if summary.unsupported {
        // Its outputs are unknown (operators declare their own): do not check sources against it.
        summary.outputs = None;
    }
    cx.check_runtime(map, summary.outputs.as_deref());
    summary
}

/// The value of `key` unless it is absent or null (both mean "not set").
fn present<'v>(map: &'v Mapping, key: &str) -> Option<&'v Value> {
    map.get(key).filter(|v| !v.is_null())
}

/// "expected {what}, found {value}".
fn expected(what: &str, found: &Value) -> String {
    format!("expected {what}, found {}", describe(found))
}

/// The message for an id that does not match `[A-Za-z0-9_.-]+`.
fn invalid_id(what: &str, id: &str) -> String {
    if id.is_empty() {
        format!("{what} must not be empty")
    } else {
        format!("invalid {what} `{id}`: ids may only contain letters, digits, `_`, `.` and `-`")
    }
}

/// The message for a string that is not one of `allowed`.
fn not_one_of(what: &str, value: &str, allowed: &[&str]) -> String {
    let mut message = format!(
        "invalid {what} `{value}`; expected one of: {}",
        allowed.join(", ")
    );
    if let Some(s) = suggest(value, allowed.iter().copied()) {
        message.push_str(&format!(" (did you mean `{s}`?)"));
    }
    message
}

/// Reporting context of one node: turns field paths into field names and lines.
pub(crate) struct NodeCtx<'r, 'a, 'v> {
    report: &'r mut Report<'a>,
    index: usize,
    id: Option<&'v str>,
}

impl<'r, 'a, 'v> NodeCtx<'r, 'a, 'v> {
    /// Reports on the node at `index` with id `id` (when it has a string id).
    pub(crate) fn new(report: &'r mut Report<'a>, index: usize, id: Option<&'v str>) -> Self {
        Self { report, index, id }
    }

    /// Reports `message` on the field at `field` (relative to the node), at that field's line.
    pub(crate) fn error(&mut self, field: &[Seg<'_>], message: String) {
        let mut path = vec![Seg::Key("nodes"), Seg::Index(self.index)];
        path.extend_from_slice(field);
        let line = self.report.line(&path);
        self.error_at(field_name(field), line, message);
    }
}

impl NodeCtx<'_, '_, '_> {
    /// Reports `message` on the field named `field`, at `line`.
    fn error_at(&mut self, field: String, line: Option<usize>, message: String) {
        // A node without a usable id is named by its position, as part of the field.
        let (node, field) = match self.id {
            Some(id) => (Some(id), field),
            None if field.is_empty() => (None, format!("nodes[{}]", self.index)),
            None => (None, format!("nodes[{}].{field}", self.index)),
        };
        let field = (!field.is_empty()).then_some(field);
        self.report.push(node, field, line, message);
    }

    /// Reports a missing required field, at the node's first line.
    fn missing(&mut self, name: &str) {
        let line = self
            .report
            .line(&[Seg::Key("nodes"), Seg::Index(self.index)]);
        self.error_at(
            name.to_owned(),
            line,
            format!("missing required field `{name}`"),
        );
    }

    fn check_id(&mut self, id: Option<&Value>) {
        match id {
            None | Some(Value::Null) => self.missing("id"),
            Some(Value::String(s)) if !is_valid_id(s) => {
                self.error(&[Seg::Key("id")], invalid_id("node id", s));
            }
            Some(Value::String(_)) => {}
            Some(other) => self.error(&[Seg::Key("id")], expected("a string", other)),
        }
    }

    /// Checks that `value` is a string, and not blank when `non_empty`.
    fn string(&mut self, field: &[Seg<'_>], value: &Value, non_empty: bool) {
        match value.as_str() {
            Some(s) if non_empty && s.trim().is_empty() => {
                self.error(field, "must not be empty".into());
            }
            Some(_) => {}
            None => self.error(field, expected("a string", value)),
        }
    }

    fn check_env(&mut self, env: &Value) {
        let Value::Mapping(env) = env else {
            return self.error(
                &[Seg::Key("env")],
                expected("a mapping of variable names to values", env),
            );
        };
        for (key, value) in env {
            let Some(name) = key.as_str() else {
                let message = format!("variable names must be strings, found {}", describe(key));
                self.error(&[Seg::Key("env")], message);
                continue;
            };
            let field = [Seg::Key("env"), Seg::Key(name)];
            if RESERVED_ENV_VARS.contains(&name) {
                let message = format!("`{name}` is set by the runtime and cannot be overridden");
                self.error(&field, message);
            } else if name.is_empty() || name.contains(['=', '\0']) {
                self.error(
                    &field,
                    format!("invalid environment variable name `{name}`"),
                );
            }
            if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                self.error(&field, expected("a string, number or boolean", value));
            }
        }
    }

    /// Returns the outputs that are strings, or `None` when `outputs` is not a list.
    fn check_outputs<'v>(&mut self, outputs: &'v Value) -> Option<Vec<&'v str>> {
        let Value::Sequence(list) = outputs else {
            let message = expected("a list of output ids (e.g. `[frames]`)", outputs);
            self.error(&[Seg::Key("outputs")], message);
            return None;
        };
        let mut seen: Vec<&str> = Vec::new();
        for (i, output) in list.iter().enumerate() {
            let field = [Seg::Key("outputs"), Seg::Index(i)];
            match output.as_str() {
                None => self.error(&field, expected("an output id", output)),
                Some(o) if !is_valid_id(o) => self.error(&field, invalid_id("output id", o)),
                Some(o) if seen.contains(&o) => {
                    self.error(&field, format!("duplicate output `{o}`"))
                }
                Some(o) => seen.push(o),
            }
        }
        Some(seen)
    }

    /// Checks the shape of `inputs`; the sources themselves are checked across nodes later.
    fn check_inputs<'v>(&mut self, inputs: &'v Value) -> Vec<InputRef<'v>> {
        let Value::Mapping(inputs) = inputs else {
            let message = expected("a mapping of input ids to sources", inputs);
            self.error(&[Seg::Key("inputs")], message);
            return Vec::new();
        };
        let mut refs = Vec::new();
        for (key, value) in inputs {
            let Some(id) = key.as_str() else {
                let message = format!("input ids must be strings, found {}", describe(key));
                self.error(&[Seg::Key("inputs")], message);
                continue;
            };
            let field = [Seg::Key("inputs"), Seg::Key(id)];
            if !is_valid_id(id) {
                self.error(&field, invalid_id("input id", id));
            }
            match value {
                Value::String(source) => refs.push(InputRef {
                    id,
                    source,
                    long: false,
                }),
                Value::Mapping(long) => {
                    if let Some(source) = self.check_long_input(id, long) {
                        refs.push(InputRef {
                            id,
                            source,
                            long: true,
                        });
                    }
                }
                other => {
                    let what = "a source like `node/output` or `{ source, queue_size }`";
                    self.error(&field, expected(what, other));
                }
            }
        }
        refs
    }

    /// Checks `{ source, queue_size }` and returns the source when it is a string.
    fn check_long_input<'v>(&mut self, id: &str, long: &'v Mapping) -> Option<&'v str> {
        for key in long.keys() {
            let name = key.as_str().unwrap_or_default();
            if !LONG_INPUT_FIELDS.contains(&name) {
                let field = [Seg::Key("inputs"), Seg::Key(id), Seg::Key(name)];
                self.error(&field, unknown_field(name, LONG_INPUT_FIELDS));
            }
        }
        if let Some(size) = present(long, "queue_size") {
            if size.as_u64().is_none_or(|n| n == 0) {
                let field = [Seg::Key("inputs"), Seg::Key(id), Seg::Key("queue_size")];
                self.error(&field, expected("an integer of at least 1", size));
            }
        }
        self.check_input_timeout(id, long);
        if let Some(poll) = present(long, "poll") {
            if !matches!(poll.as_str(), Some("spin" | "sleep")) {
                let field = [Seg::Key("inputs"), Seg::Key(id), Seg::Key("poll")];
                self.error(&field, expected("`spin` or `sleep`", poll));
            }
        }
        match present(long, "source") {
            None => {
                let path = [
                    Seg::Key("nodes"),
                    Seg::Index(self.index),
                    Seg::Key("inputs"),
                    Seg::Key(id),
                ];
                let line = self.report.line(&path);
                let message = "missing required field `source`".to_owned();
                self.error_at(format!("inputs.{id}.source"), line, message);
                None
            }
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                let field = [Seg::Key("inputs"), Seg::Key(id), Seg::Key("source")];
                self.error(&field, expected("a source like `node/output`", other));
                None
            }
        }
    }

    fn check_restart(&mut self, map: &Mapping) {
        if let Some(policy) = present(map, "restart_policy") {
            let field = [Seg::Key("restart_policy")];
            match policy.as_str() {
                Some(p) if RESTART_POLICIES.contains(&p) => {}
                Some(p) => self.error(&field, not_one_of("restart policy", p, RESTART_POLICIES)),
                None => self.error(&field, expected("one of never, on-failure, always", policy)),
            }
        }
        if let Some(max) = present(map, "max_restarts") {
            if max.as_u64().is_none_or(|n| u32::try_from(n).is_err()) {
                self.error(
                    &[Seg::Key("max_restarts")],
                    expected("a non-negative integer", max),
                );
            }
        }
        let mut duration = |name: &'static str| {
            let value = present(map, name)?;
            parse_duration(value)
                .map_err(|message| self.error(&[Seg::Key(name)], message))
                .ok()
        };
        let delay = duration("restart_delay");
        let max_delay = duration("max_restart_delay");
        duration("restart_window");
        if let (Some(delay), Some(max_delay)) = (delay, max_delay) {
            if max_delay < delay {
                let message = format!(
                    "`max_restart_delay` ({}) is shorter than `restart_delay` ({})",
                    humantime::format_duration(max_delay),
                    humantime::format_duration(delay)
                );
                self.error(&[Seg::Key("max_restart_delay")], message);
            }
        }
    }

    /// Checks the deployment options written under `key` (`deploy` or `_unstable_deploy`).
    fn check_deploy(&mut self, key: &'static str, deploy: &Value) {
        let d = Seg::Key(key);
        let Value::Mapping(deploy) = deploy else {
            return self.error(&[d], expected("a mapping", deploy));
        };
        for key in deploy.keys() {
            let name = key.as_str().unwrap_or_default();
            if !DEPLOY_FIELDS.contains(&name) {
                self.error(&[d, Seg::Key(name)], unknown_field(name, DEPLOY_FIELDS));
            }
        }
        if let Some(machine) = present(deploy, "machine") {
            self.string(&[d, Seg::Key("machine")], machine, true);
        }
        if let Some(dir) = present(deploy, "working_dir") {
            self.string(&[d, Seg::Key("working_dir")], dir, true);
        }
        if let Some(resources) = present(deploy, "resources") {
            resources::check_resources(self, d, resources);
        }
        if let Some(distribute) = present(deploy, "distribute") {
            let field = [d, Seg::Key("distribute")];
            match distribute.as_str() {
                Some(d) if DISTRIBUTE_MODES.contains(&d) => {}
                Some(d) => self.error(&field, not_one_of("distribute mode", d, DISTRIBUTE_MODES)),
                None => self.error(&field, expected("one of local, scp, http", distribute)),
            }
        }
        match present(deploy, "labels") {
            None => {}
            Some(Value::Mapping(labels)) => {
                for (key, value) in labels {
                    let Some(name) = key.as_str() else {
                        let message =
                            format!("label names must be strings, found {}", describe(key));
                        self.error(&[d, Seg::Key("labels")], message);
                        continue;
                    };
                    if !value.is_string() {
                        let message = match value {
                            Value::Bool(b) => {
                                expected(&format!("a string (quote it: \"{b}\")"), value)
                            }
                            Value::Number(n) => {
                                expected(&format!("a string (quote it: \"{n}\")"), value)
                            }
                            other => expected("a string", other),
                        };
                        self.error(&[d, Seg::Key("labels"), Seg::Key(name)], message);
                    }
                }
            }
            Some(other) => self.error(&[d, Seg::Key("labels")], expected("a mapping", other)),
        }
    }
}

/// `inputs.tick.source`, `outputs[1]`, ...
pub(crate) fn field_name(field: &[Seg<'_>]) -> String {
    let mut name = String::new();
    for seg in field {
        match seg {
            Seg::Key(k) if name.is_empty() => name.push_str(k),
            Seg::Key(k) => {
                name.push('.');
                name.push_str(k);
            }
            Seg::Index(i) => name.push_str(&format!("[{i}]")),
        }
    }
    name
}

/// A duration as accepted by [`crate::descriptor::HumanDuration`]: humantime text or seconds.
fn parse_duration(value: &Value) -> Result<Duration, String> {
    const WHAT: &str = "a duration like `500ms`, `5s` or `1m 30s`, or a number of seconds";
    match value {
        Value::String(s) => humantime::parse_duration(s)
            .map_err(|e| format!("invalid duration `{s}`: {e} (expected {WHAT})")),
        Value::Number(n) => n
            .as_f64()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .ok_or_else(|| expected(&format!("{WHAT}, not negative"), value)),
        other => Err(expected(WHAT, other)),
    }
}

mod resources;
mod runtime;
mod source;
#[cfg(test)]
mod tests;

pub(crate) use runtime::check_runtime_root;
