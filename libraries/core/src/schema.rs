//! The JSON Schema of `dataflow.yml` (`adora schema`), generated from the descriptor types.
//!
//! [`Descriptor`] and every type under it derive `schemars::JsonSchema` beside serde, so the
//! schema follows the parser: a field added to a descriptor type appears here with its `///` doc.
//! The validator ([`crate::validate`]) is stricter than the schema (ids, sources, URNs); the
//! schema is for editors: completion, hover docs and shape errors while typing.

use crate::descriptor::Descriptor;

/// The JSON Schema (draft 2020-12) of a dataflow file.
pub fn dataflow_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Descriptor);
    schema.to_value()
}

/// Adds `_unstable_deploy` (the older spelling of `deploy`, a serde alias that schemars does not
/// list) to the node schema, forbids using both spellings on one node, and asks for `path` or
/// `module`.
pub(crate) fn add_deploy_alias(schema: &mut schemars::Schema) {
    let Some(properties) = schema
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    let Some(mut deploy) = properties.get("deploy").cloned() else {
        return;
    };
    if let Some(object) = deploy.as_object_mut() {
        object.insert(
            "description".into(),
            "Older spelling of `deploy` (dora before 1.0); never both on one node.".into(),
        );
    }
    properties.insert("_unstable_deploy".into(), deploy);
    schema.insert(
        "not".into(),
        serde_json::json!({ "required": ["deploy", "_unstable_deploy"] }),
    );
    // A `module:` node has no `path` (it is inlined before the rest of Adora reads it): `path` or
    // `module`, not `path` alone.
    if let Some(required) = schema
        .get_mut("required")
        .and_then(serde_json::Value::as_array_mut)
    {
        required.retain(|field| field != "path");
    }
    schema.insert(
        "anyOf".into(),
        serde_json::json!([{ "required": ["path"] }, { "required": ["module"] }]),
    );
}

/// [`dataflow_schema`] as pretty-printed JSON, with a final newline.
pub fn dataflow_schema_json() -> String {
    let mut text = serde_json::to_string_pretty(&dataflow_schema())
        .expect("a serde_json::Value always serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests;
