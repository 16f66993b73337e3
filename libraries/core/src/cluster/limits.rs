//! A machine's thresholds in `cluster.yml`: `max_cpu_percent` and `max_memory_percent` whole
//! percents from 1 to 100, `min_disk_free` a size (`5GiB`) or a number of bytes.

use serde_yaml::{Mapping, Value};

use super::{err, MachineAt};
use crate::{
    descriptor::ByteSize,
    validate::{describe, Report},
};

/// Checks the threshold fields of one machine.
pub(super) fn check_limits(report: &mut Report<'_>, machine: &MachineAt<'_>, map: &Mapping) {
    let prefix = machine.prefix;
    for key in ["max_cpu_percent", "max_memory_percent"] {
        match map.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_u64().is_some_and(|p| (1..=100).contains(&p)) => {}
            Some(other) => err(
                report,
                &machine.at(key),
                format!("{prefix}{key}"),
                format!(
                    "expected a whole percent from 1 to 100, found {}",
                    describe(other)
                ),
            ),
        }
    }
    let key = "min_disk_free";
    let problem = match map.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => ByteSize::parse(s).err(),
        Some(Value::Number(n)) if n.as_u64().is_some() => None,
        Some(other) => Some(format!(
            "expected a size like `5GiB` or a number of bytes, found {}",
            describe(other)
        )),
    };
    if let Some(message) = problem {
        err(report, &machine.at(key), format!("{prefix}{key}"), message);
    }
}
