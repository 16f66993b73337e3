//! Typed ports: the shape of `output_types` / `input_types`, the root `strict_types` and
//! `type_rules`, and the type check of every connected pair annotated on both ends.
//!
//! A malformed field (not a mapping, not a URN) is always an error. Type problems (a port that
//! does not exist, an unknown type, a mismatch) are warnings, or errors with `strict_types: true`.

use std::collections::{BTreeMap, HashMap};

use serde_yaml::{Mapping, Value};

use super::{describe, expected, invalid_id, present, NodeCtx, NodeSummary};
use crate::{
    descriptor::InputSource,
    ids::is_valid_id,
    types::{self, TypeUrn, TIMER_URN},
    validate::{locate::Seg, suggest, unknown_field, Report},
};

/// A node's annotated ports: port id → type URN as written.
#[derive(Debug, Default)]
pub(crate) struct PortTypes<'v> {
    /// `output_types`.
    pub outputs: BTreeMap<&'v str, &'v str>,
    /// `input_types`.
    pub inputs: BTreeMap<&'v str, &'v str>,
}

/// The root type settings.
#[derive(Debug, Default)]
pub(crate) struct TypeSettings {
    /// `strict_types`: type problems are errors.
    pub strict: bool,
    /// `type_rules` as (from, to) base URNs.
    pub rules: Vec<(String, String)>,
}

/// Known keys of a `type_rules` entry.
const RULE_FIELDS: &[&str] = &["from", "to"];

/// Checks the shape of `output_types` and `input_types` and returns their string entries.
pub(super) fn check_port_fields<'v>(
    cx: &mut NodeCtx<'_, '_, '_>,
    map: &'v Mapping,
) -> PortTypes<'v> {
    let mut ports = PortTypes::default();
    for (name, found) in [
        ("output_types", &mut ports.outputs),
        ("input_types", &mut ports.inputs),
    ] {
        let Some(value) = present(map, name) else {
            continue;
        };
        let Value::Mapping(entries) = value else {
            let what = "a mapping of port ids to type URNs (e.g. `image: std/media/v1/Image`)";
            cx.error(&[Seg::Key(name)], expected(what, value));
            continue;
        };
        for (key, urn) in entries {
            let Some(port) = key.as_str() else {
                let message = format!("port ids must be strings, found {}", describe(key));
                cx.error(&[Seg::Key(name)], message);
                continue;
            };
            let field = [Seg::Key(name), Seg::Key(port)];
            if !is_valid_id(port) {
                cx.error(&field, invalid_id("port id", port));
            }
            match urn.as_str() {
                None => cx.error(
                    &field,
                    expected("a type URN like `std/core/v1/Float32`", urn),
                ),
                Some(text) => match TypeUrn::parse(text) {
                    Ok(_) => {
                        found.insert(port, text);
                    }
                    Err(e) => cx.error(&field, e.to_string()),
                },
            }
        }
    }
    ports
}

/// Checks the root `strict_types` and `type_rules`.
pub(crate) fn check_root_types(report: &mut Report<'_>, root: &Value) -> TypeSettings {
    let mut settings = TypeSettings::default();
    if let Some(strict) = root.get("strict_types").filter(|v| !v.is_null()) {
        match strict.as_bool() {
            Some(b) => settings.strict = b,
            None => root_error(
                report,
                &[Seg::Key("strict_types")],
                expected("true or false", strict),
            ),
        }
    }
    let rules = match root.get("type_rules") {
        None | Some(Value::Null) => return settings,
        Some(Value::Sequence(rules)) => rules,
        Some(other) => {
            let message = expected("a list of `{ from, to }` type URN pairs", other);
            root_error(report, &[Seg::Key("type_rules")], message);
            return settings;
        }
    };
    for (i, rule) in rules.iter().enumerate() {
        let at = [Seg::Key("type_rules"), Seg::Index(i)];
        let Value::Mapping(rule) = rule else {
            root_error(report, &at, expected("a mapping `{ from, to }`", rule));
            continue;
        };
        for key in rule.keys() {
            let name = key.as_str().unwrap_or_default();
            if !RULE_FIELDS.contains(&name) {
                let at = [at[0], at[1], Seg::Key(name)];
                root_error(report, &at, unknown_field(name, RULE_FIELDS));
            }
        }
        let mut side = |name: &'static str| -> Option<String> {
            let field = [at[0], at[1], Seg::Key(name)];
            let message = match rule.get(name).map(|v| (v, v.as_str())) {
                None | Some((Value::Null, _)) => {
                    // A missing key has no line: report it on the rule's.
                    let line = report.line(&at);
                    let message = format!("missing required field `{name}`");
                    report.push(None, Some(super::field_name(&field)), line, message);
                    return None;
                }
                Some((_, Some(text))) => match TypeUrn::parse(text) {
                    Ok(urn) => return Some(urn.base),
                    Err(e) => e.to_string(),
                },
                Some((value, None)) => expected("a type URN", value),
            };
            root_error(report, &field, message);
            None
        };
        if let (Some(from), Some(to)) = (side("from"), side("to")) {
            settings.rules.push((from, to));
        }
    }
    settings
}

fn root_error(report: &mut Report<'_>, path: &[Seg<'_>], message: String) {
    let line = report.line(path);
    let field = super::field_name(path);
    report.push(None, Some(field), line, message);
}

/// Reports a type problem: a warning, or an error when `strict`.
fn problem(cx: &mut NodeCtx<'_, '_, '_>, strict: bool, field: &[Seg<'_>], message: String) {
    cx.error(field, message);
    if !strict {
        if let Some(e) = cx.report.errors.pop() {
            cx.report.warnings.push(e);
        }
    }
}

/// Checks annotated port ids, URNs, and every connected pair annotated on both ends.
pub(crate) fn check_types(
    report: &mut Report<'_>,
    nodes: &[NodeSummary<'_>],
    settings: &TypeSettings,
) {
    let by_id: HashMap<&str, &NodeSummary<'_>> =
        nodes.iter().filter_map(|n| Some((n.id?, n))).collect();
    for node in nodes {
        let mut cx = NodeCtx::new(report, node.index, node.id);
        let strict = settings.strict;
        let inputs: Vec<&str> = node.inputs.iter().map(|i| i.id).collect();
        for (name, ports, declared) in [
            (
                "output_types",
                &node.port_types.outputs,
                node.outputs.as_deref(),
            ),
            (
                "input_types",
                &node.port_types.inputs,
                Some(inputs.as_slice()),
            ),
        ] {
            for (port, urn) in ports {
                let field = [Seg::Key(name), Seg::Key(port)];
                if declared.is_some_and(|d| !d.contains(port)) {
                    let list = if name == "output_types" {
                        "outputs"
                    } else {
                        "inputs"
                    };
                    let message = format!("`{port}` is not one of the node's {list}");
                    problem(&mut cx, strict, &field, message);
                }
                if let Some(message) = unknown_type(urn, &settings.rules) {
                    problem(&mut cx, strict, &field, message);
                }
            }
        }
        for input in &node.inputs {
            let Some(to) = node.port_types.inputs.get(input.id) else {
                continue;
            };
            let (from, sender) = match InputSource::parse(input.source) {
                Ok(InputSource::Timer(_)) => (TIMER_URN, input.source.to_owned()),
                Ok(InputSource::Node { node: from, output }) => {
                    let sent = by_id
                        .get(from.as_str())
                        .and_then(|s| s.port_types.outputs.get(output.as_str()));
                    let Some(sent) = sent else { continue };
                    (*sent, format!("{from}/{output}"))
                }
                Err(_) => continue,
            };
            // Unknown or malformed types were reported above; a mismatch with them says nothing.
            let known = |urn| unknown_type(urn, &settings.rules).is_none();
            let (Ok(from_urn), Ok(to_urn)) = (TypeUrn::parse(from), TypeUrn::parse(to)) else {
                continue;
            };
            if !known(from) || !known(to) {
                continue;
            }
            if !from_urn.compatible_with(&to_urn, &settings.rules) {
                let receiver = format!("{}/{}", node.id.unwrap_or("?"), input.id);
                let message = format!("type mismatch: `{sender}` ({from}) → `{receiver}` ({to})");
                problem(
                    &mut cx,
                    strict,
                    &[Seg::Key("input_types"), Seg::Key(input.id)],
                    message,
                );
            }
        }
    }
}

/// Why `urn` is not a known type (standard, or named in `type_rules`), if it is not.
fn unknown_type(urn: &str, rules: &[(String, String)]) -> Option<String> {
    let parsed = TypeUrn::parse(urn).ok()?;
    if let Some(std) = types::lookup(&parsed.base) {
        let bad = parsed
            .params
            .keys()
            .find(|k| !std.params.contains(&k.as_str()))?;
        return Some(if std.params.is_empty() {
            format!("type `{}` takes no parameters (found `{bad}`)", std.urn)
        } else {
            format!(
                "type `{}` has no parameter `{bad}` (its parameters: {})",
                std.urn,
                std.params.join(", ")
            )
        });
    }
    if rules
        .iter()
        .any(|(a, b)| *a == parsed.base || *b == parsed.base)
    {
        return None;
    }
    let mut message = format!("unknown type `{urn}`");
    match suggest(&parsed.base, types::STD_TYPES.iter().map(|t| t.urn)) {
        Some(s) => message.push_str(&format!(" (did you mean `{s}`?)")),
        None => message.push_str(" (not a standard type, and not named in `type_rules`)"),
    }
    Some(message)
}

#[cfg(test)]
mod tests;
