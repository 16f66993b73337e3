//! `deploy.resources`: `cpus` a number of cores above 0 (fractions allowed) and at most
//! [`MAX_CPUS`], `memory` a size (`4GiB`, `512MiB`, or bytes) above 0, `gpus` a whole number
//! from 0 to [`MAX_GPUS`]; nothing else.

use serde_yaml::Value;

use super::{expected, present, NodeCtx};
use crate::validate::{locate::Seg, unknown_field};
use crate::{
    descriptor::ByteSize,
    resources::{Cpus, MAX_CPUS, MAX_GPUS},
};

/// Known keys of `deploy.resources`.
const RESOURCE_FIELDS: &[&str] = &["cpus", "memory", "gpus"];

/// Checks `resources` under the deploy key `d` (`deploy` or `_unstable_deploy`).
pub(super) fn check_resources(cx: &mut NodeCtx<'_, '_, '_>, d: Seg<'static>, value: &Value) {
    let r = Seg::Key("resources");
    let Value::Mapping(map) = value else {
        return cx.error(
            &[d, r],
            expected("a mapping like `{ cpus: 2, memory: 4GiB, gpus: 1 }`", value),
        );
    };
    for key in map.keys() {
        let name = key.as_str().unwrap_or_default();
        if !RESOURCE_FIELDS.contains(&name) {
            cx.error(
                &[d, r, Seg::Key(name)],
                unknown_field(name, RESOURCE_FIELDS),
            );
        }
    }
    if let Some(cpus) = present(map, "cpus") {
        let what = format!("a number of CPU cores above 0 and at most {MAX_CPUS} (e.g. 0.5 or 2)");
        match cpus.as_f64() {
            Some(n) if Cpus::new(n).is_ok() => {}
            _ => cx.error(&[d, r, Seg::Key("cpus")], expected(&what, cpus)),
        }
    }
    if let Some(memory) = present(map, "memory") {
        let field = [d, r, Seg::Key("memory")];
        let bytes = match memory {
            Value::String(s) => ByteSize::parse(s).map(|b| b.0),
            Value::Number(n) => n.as_u64().ok_or_else(|| {
                expected(
                    "a size like `4GiB` or a non-negative number of bytes",
                    memory,
                )
            }),
            other => Err(expected("a size like `4GiB` or `512MiB`", other)),
        };
        match bytes {
            Ok(0) => cx.error(&field, "memory must be above 0".into()),
            Ok(_) => {}
            Err(message) => cx.error(&field, message),
        }
    }
    if let Some(gpus) = present(map, "gpus") {
        if gpus.as_u64().is_none_or(|n| n > u64::from(MAX_GPUS)) {
            let what = format!("a whole number of GPUs from 0 to {MAX_GPUS}");
            cx.error(&[d, r, Seg::Key("gpus")], expected(&what, gpus));
        }
    }
}
