//! Checks across nodes: unique ids, and input sources that name real nodes and outputs.

use std::collections::HashMap;

use super::{
    locate::Seg,
    node::{NodeCtx, NodeSummary},
    suggest, Report,
};
use crate::descriptor::InputSource;

/// Reports duplicate node ids and input sources that do not resolve.
pub(crate) fn check_graph(report: &mut Report<'_>, nodes: &[NodeSummary<'_>]) {
    let mut by_id: HashMap<&str, &NodeSummary<'_>> = HashMap::new();
    for node in nodes {
        let Some(id) = node.id else { continue };
        match by_id.get(id) {
            None => {
                by_id.insert(id, node);
            }
            Some(first) => {
                let first_path = [Seg::Key("nodes"), Seg::Index(first.index), Seg::Key("id")];
                let message = match report.line(&first_path) {
                    Some(line) => {
                        format!("duplicate node id `{id}` (first defined on line {line})")
                    }
                    None => format!(
                        "duplicate node id `{id}` (also used by nodes[{}])",
                        first.index
                    ),
                };
                NodeCtx::new(report, node.index, node.id).error(&[Seg::Key("id")], message);
            }
        }
    }
    let mut ids: Vec<&str> = by_id.keys().copied().collect();
    ids.sort_unstable();
    for node in nodes {
        for input in &node.inputs {
            // Outputs of an unsupported (operator) node are unknown, and may be `node/op/output`.
            let sender = input.source.split('/').next().and_then(|n| by_id.get(n));
            if sender.is_some_and(|s| s.unsupported) {
                continue;
            }
            let Some(message) = source_problem(input.source, &by_id, &ids) else {
                continue;
            };
            let mut field = vec![Seg::Key("inputs"), Seg::Key(input.id)];
            if input.long {
                field.push(Seg::Key("source"));
            }
            NodeCtx::new(report, node.index, node.id).error(&field, message);
        }
    }
}

/// What is wrong with `source`, if anything.
fn source_problem(
    source: &str,
    by_id: &HashMap<&str, &NodeSummary<'_>>,
    ids: &[&str],
) -> Option<String> {
    let (node, output) = match InputSource::parse(source) {
        Err(message) => return Some(message),
        Ok(InputSource::Timer(_)) => return None,
        Ok(InputSource::Node { node, output }) => (node, output),
    };
    let Some(sender) = by_id.get(node.as_str()) else {
        let mut message = format!("node `{node}` does not exist");
        if let Some(s) = suggest(node.as_str(), ids.iter().copied()) {
            message.push_str(&format!(" (did you mean `{s}`?)"));
        }
        return Some(message);
    };
    // When the sender's `outputs` could not be read, that error is reported on the sender.
    let outputs = sender.outputs.as_ref()?;
    if outputs.contains(&output.as_str()) {
        return None;
    }
    Some(if outputs.is_empty() {
        format!("node `{node}` has no output `{output}` (it declares no outputs)")
    } else {
        format!(
            "node `{node}` has no output `{output}` (its outputs: {})",
            outputs.join(", ")
        )
    })
}

#[cfg(test)]
mod tests;
