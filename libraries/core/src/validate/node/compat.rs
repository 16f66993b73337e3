//! dora 1.x node fields: `deploy` and its older spelling `_unstable_deploy`, `output_framing`, and
//! the features Adora does not support yet (reported as such rather than as unknown fields).

use serde_yaml::{Mapping, Value};

use super::{expected, not_one_of, present, NodeCtx};
use crate::validate::locate::Seg;

/// Node fields of dora 1.x that Adora does not support yet.
pub(crate) const UNSUPPORTED_FIELDS: &[&str] = &["operator", "operators", "ros2", "hub"];

/// Accepted `output_framing` values.
const FRAMINGS: &[&str] = &["raw", "arrow-ipc"];

/// Reports each unsupported feature of the node on its own line:
/// "not supported by Adora yet: operators (node `x`, line N)". Returns whether there was one.
pub(super) fn report_unsupported(cx: &mut NodeCtx<'_, '_, '_>, map: &Mapping) -> bool {
    let mut found = false;
    for key in map.keys() {
        let Some(feature) = key.as_str().filter(|k| UNSUPPORTED_FIELDS.contains(k)) else {
            continue;
        };
        found = true;
        let path = [Seg::Key("nodes"), Seg::Index(cx.index), Seg::Key(feature)];
        let line = cx.report.line(&path);
        let node = match cx.id {
            Some(id) => format!("node `{id}`"),
            None => format!("nodes[{}]", cx.index),
        };
        let place = match line {
            Some(line) => format!("{node}, line {line}"),
            None => node,
        };
        let message = format!("not supported by Adora yet: {feature} ({place})");
        cx.report.push(None, None, line, message);
    }
    found
}

/// Checks `deploy` / `_unstable_deploy` (one spelling only) and `output_framing`.
pub(super) fn check_deploy_and_framing(cx: &mut NodeCtx<'_, '_, '_>, map: &Mapping) {
    match (present(map, "deploy"), present(map, "_unstable_deploy")) {
        (Some(_), Some(_)) => cx.error(
            &[Seg::Key("_unstable_deploy")],
            "`deploy` and `_unstable_deploy` are two spellings of the same field; keep one".into(),
        ),
        (Some(deploy), None) => cx.check_deploy("deploy", deploy),
        (None, Some(deploy)) => cx.check_deploy("_unstable_deploy", deploy),
        (None, None) => {}
    }
    if let Some(framing) = present(map, "output_framing") {
        let field = [Seg::Key("output_framing")];
        match framing.as_str() {
            Some(f) if FRAMINGS.contains(&f) => {}
            Some(f) => cx.error(&field, not_one_of("output framing", f, FRAMINGS)),
            None => cx.error(&field, expected("one of raw, arrow-ipc", framing)),
        }
    }
}

/// `root` with the root `deploy` merged into every node's own, field by field (the node's fields
/// win; `labels` is replaced as a whole), under the key `deploy`. Run on a validated document.
pub(crate) fn apply_root_deploy(root: &Value) -> Value {
    let mut root = root.clone();
    let default = match root.get("deploy") {
        Some(Value::Mapping(d)) => d.clone(),
        _ => Mapping::new(),
    };
    if default.is_empty() {
        // `deploy: {}` is no default at all (kept, it would come back from the descriptor as
        // the defaults' values).
        if let Value::Mapping(map) = &mut root {
            map.remove("deploy");
        }
    }
    let Some(Value::Sequence(nodes)) = root.get_mut("nodes") else {
        return root;
    };
    for node in nodes {
        let Value::Mapping(node) = node else { continue };
        let old = node.remove("_unstable_deploy");
        let new = node.remove("deploy");
        let own = [old, new].into_iter().flatten().find(Value::is_mapping);
        let mut merged = default.clone();
        if let Some(Value::Mapping(own)) = own {
            for (key, value) in own {
                if !value.is_null() {
                    merged.insert(key, value);
                }
            }
        }
        if !merged.is_empty() {
            node.insert("deploy".into(), Value::Mapping(merged));
        }
    }
    root
}

#[cfg(test)]
mod tests;
