//! Mermaid rendering of a dataflow (`adora graph`).
//!
//! ```text
//! flowchart TB
//!   camera["camera"]
//!   sink["sink"]
//!   timer_millis_20(("adora/timer/millis/20"))
//!   timer_millis_20 -->|tick| camera
//!   camera -->|frames as image| sink
//! ```
//!
//! Every node is a box labelled with its id; every input is an edge from the sender to the
//! receiver, labelled with the output (and `as input` when the input id differs). Timers are
//! circles. Mermaid ids only use `[A-Za-z0-9_]`, so node ids are sanitised (and made unique) for
//! the diagram while labels show them verbatim. Edge labels use the `-->|label|` form because a
//! `--` inside an id would end a `-- label -->` early. An edge whose ports are typed
//! (`output_types` of the sender, else `input_types` of the receiver) shows the type's short name,
//! quoted: `-->|"frames: Image"|`. The output only depends on the descriptor.

use std::collections::{HashMap, HashSet};

use crate::{
    descriptor::{Descriptor, InputSource},
    types::TypeUrn,
};

/// Words Mermaid's flowchart grammar treats specially, which cannot be node ids as is.
const MERMAID_KEYWORDS: &[&str] = &[
    "end",
    "graph",
    "flowchart",
    "subgraph",
    "direction",
    "style",
    "class",
    "classDef",
    "click",
    "call",
    "href",
    "linkStyle",
    "default",
];

/// Renders the dataflow as a Mermaid `flowchart`.
pub fn mermaid(descriptor: &Descriptor) -> String {
    let mut diagram = Diagram::default();
    for node in &descriptor.nodes {
        diagram.node(node.id.as_str());
    }
    for node in &descriptor.nodes {
        let receiver = diagram.node(node.id.as_str());
        for (input_id, input) in &node.inputs {
            match input.resolve() {
                Ok(InputSource::Node { node: from, output }) => {
                    // A sender missing from the dataflow (unvalidated descriptor) still gets a box.
                    let sender = diagram.node(from.as_str());
                    let label = if output == *input_id {
                        output.to_string()
                    } else {
                        format!("{output} as {input_id}")
                    };
                    let sent = descriptor
                        .nodes
                        .iter()
                        .find(|n| n.id == from)
                        .and_then(|n| n.output_types.get(&output));
                    let ty = sent.or_else(|| node.input_types.get(input_id));
                    diagram.edge(&sender, &typed(label, ty), &receiver);
                }
                Ok(InputSource::Timer(_)) => {
                    let sender = diagram.timer(input.source());
                    let label = typed(input_id.to_string(), node.input_types.get(input_id));
                    diagram.edge(&sender, &label, &receiver);
                }
                Err(_) => diagram.edges.push_str(&format!(
                    "  %% input `{input_id}` of `{}` has an invalid source\n",
                    node.id
                )),
            }
        }
    }
    diagram.shapes + &diagram.edges
}

/// `label`, or `"label: Type"` (quoted for Mermaid) when the edge has a type URN.
fn typed(label: String, urn: Option<&String>) -> String {
    let Some(urn) = urn else { return label };
    let short = match TypeUrn::parse(urn) {
        Ok(parsed) => {
            let full = parsed.to_string();
            let base_len = parsed.base.len() - parsed.short_name().len();
            full[base_len..].to_owned()
        }
        Err(_) => urn.clone(),
    };
    format!("\"{label}: {}\"", short.replace('"', "'"))
}

/// The diagram being built: shapes first, then edges.
struct Diagram {
    shapes: String,
    edges: String,
    /// Mermaid name of each node id / canonical timer source already drawn.
    names: HashMap<String, String>,
    /// Every Mermaid name in use.
    used: HashSet<String>,
}

impl Default for Diagram {
    fn default() -> Self {
        Self {
            shapes: String::from("flowchart TB\n"),
            edges: String::new(),
            names: HashMap::new(),
            used: HashSet::new(),
        }
    }
}

impl Diagram {
    /// The Mermaid name of node `id`, drawing its box the first time.
    fn node(&mut self, id: &str) -> String {
        self.shape(id.to_owned(), sanitize(id), |name| {
            format!("{name}[\"{id}\"]")
        })
    }

    /// The Mermaid name of a timer, drawing its circle the first time; `dora/timer/...` and
    /// `adora/timer/...` with the same text are the same timer.
    fn timer(&mut self, source: &str) -> String {
        let source = match source.strip_prefix("dora/") {
            Some(rest) => format!("adora/{rest}"),
            None => source.to_owned(),
        };
        let preferred = sanitize(source.trim_start_matches("adora/"));
        // Node ids cannot contain `/`, so this key never collides with a node's.
        let key = format!("/{source}");
        self.shape(key, preferred, |name| format!("{name}((\"{source}\"))"))
    }

    fn shape(&mut self, key: String, preferred: String, draw: impl Fn(&str) -> String) -> String {
        if let Some(name) = self.names.get(&key) {
            return name.clone();
        }
        let mut name = preferred.clone();
        let mut n = 1;
        while self.used.contains(&name) || MERMAID_KEYWORDS.contains(&name.as_str()) {
            name = format!("{preferred}_{n}");
            n += 1;
        }
        self.shapes.push_str(&format!("  {}\n", draw(&name)));
        self.used.insert(name.clone());
        self.names.insert(key, name.clone());
        name
    }

    fn edge(&mut self, sender: &str, label: &str, receiver: &str) {
        self.edges
            .push_str(&format!("  {sender} -->|{label}| {receiver}\n"));
    }
}

/// A Mermaid node name for `id`: characters other than `[A-Za-z0-9_]` become `_`, and a leading
/// digit gets a `n` prefix.
fn sanitize(id: &str) -> String {
    let mut name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        name.insert(0, 'n');
    }
    name
}

#[cfg(test)]
mod tests;
