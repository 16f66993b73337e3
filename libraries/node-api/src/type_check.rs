//! The check of sent values against the node's declared `output_types`, asked for with
//! `ADORA_RUNTIME_TYPE_CHECK=warn|error` (or dora's `DORA_RUNTIME_TYPE_CHECK`) in the node's
//! environment.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Mutex, PoisonError},
};

use adora_core::{types, DataId};
use arrow_schema::DataType;

use crate::error::NodeError;

/// The variables that ask for the check, in the order they are read.
pub const RUNTIME_TYPE_CHECK_ENV: [&str; 2] =
    ["ADORA_RUNTIME_TYPE_CHECK", "DORA_RUNTIME_TYPE_CHECK"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    Warn,
    Error,
}

/// What a node checks its outputs against.
#[derive(Debug)]
pub(crate) struct TypeCheck {
    mode: Mode,
    /// Output → (declared URN, its Arrow type); standard types only (others are not checked).
    expected: BTreeMap<DataId, (String, DataType)>,
    /// Outputs already warned about (one warning per output).
    warned: Mutex<BTreeSet<DataId>>,
}

impl TypeCheck {
    /// The check asked for by the environment, for the declared `output_types`.
    pub(crate) fn from_env(output_types: &BTreeMap<DataId, String>) -> Result<Self, NodeError> {
        let setting = RUNTIME_TYPE_CHECK_ENV
            .iter()
            .find_map(|name| std::env::var(name).ok().map(|value| (*name, value)));
        let mode = match setting {
            None => Mode::Off,
            Some((name, value)) => parse_mode(&value).ok_or_else(|| {
                NodeError::Config(format!(
                    "{name} must be `warn`, `error` or `off`, not `{value}`"
                ))
            })?,
        };
        let expected = output_types
            .iter()
            .filter(|(_, urn)| urn.split('[').next() != Some(types::BYTES_URN))
            .filter_map(|(output, urn)| {
                types::arrow_type(urn).map(|t| (output.clone(), (urn.clone(), t)))
            })
            .collect();
        Ok(TypeCheck {
            mode,
            expected,
            warned: Mutex::default(),
        })
    }

    /// Checks that a value of type `found` may be sent on `output`: an error in `error` mode, a
    /// warning on stderr (once per output) in `warn` mode.
    pub(crate) fn check(&self, output: &DataId, found: &DataType) -> Result<(), NodeError> {
        if self.mode == Mode::Off {
            return Ok(());
        }
        let Some((urn, expected)) = self.expected.get(output) else {
            return Ok(());
        };
        if expected.equals_datatype(found) {
            return Ok(());
        }
        let mismatch = NodeError::TypeMismatch {
            output: output.clone(),
            urn: urn.clone(),
            expected: expected.to_string(),
            found: found.to_string(),
        };
        if self.mode == Mode::Error {
            return Err(mismatch);
        }
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.insert(output.clone()) {
            eprintln!("warning: {mismatch} (ADORA_RUNTIME_TYPE_CHECK=warn: sent anyway)");
        }
        Ok(())
    }
}

fn parse_mode(value: &str) -> Option<Mode> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "off" | "0" | "false" => Some(Mode::Off),
        "warn" => Some(Mode::Warn),
        "error" => Some(Mode::Error),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(mode: Mode) -> TypeCheck {
        TypeCheck {
            mode,
            expected: [(
                DataId::from("count"),
                ("std/core/v1/UInt64".to_owned(), DataType::UInt64),
            )]
            .into(),
            warned: Mutex::default(),
        }
    }

    #[test]
    fn a_mismatch_is_an_error_a_warning_or_nothing_as_asked() {
        let count = DataId::from("count");
        let err = check(Mode::Error)
            .check(&count, &DataType::Int64)
            .expect_err("Int64 is not UInt64");
        assert_eq!(
            err.to_string(),
            "output `count` sends Int64, but its declared type std/core/v1/UInt64 is UInt64"
        );
        assert!(check(Mode::Error).check(&count, &DataType::UInt64).is_ok());
        assert!(check(Mode::Warn).check(&count, &DataType::Int64).is_ok());
        assert!(check(Mode::Off).check(&count, &DataType::Int64).is_ok());
        // Undeclared outputs are not checked.
        assert!(check(Mode::Error)
            .check(&"other".into(), &DataType::Utf8)
            .is_ok());
    }

    #[test]
    fn settings_are_warn_error_or_off() {
        assert_eq!(parse_mode("warn"), Some(Mode::Warn));
        assert_eq!(parse_mode("ERROR"), Some(Mode::Error));
        assert_eq!(parse_mode(""), Some(Mode::Off));
        assert_eq!(parse_mode("strict"), None);
    }
}
