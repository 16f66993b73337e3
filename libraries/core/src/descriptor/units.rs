//! Values written in a descriptor with their own syntax: durations, byte sizes, log levels.

use std::{borrow::Cow, time::Duration};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The level of a log line, from the most verbose (`stdout`: any line the node prints) to the
/// least (`error`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// A plain line of output, without a level of its own.
    Stdout,
    /// `trace`.
    Trace,
    /// `debug`.
    Debug,
    /// `info`.
    Info,
    /// `warn`.
    Warn,
    /// `error`.
    Error,
}

impl LogLevel {
    /// Every level, from the most verbose.
    pub const ALL: [LogLevel; 6] = [
        LogLevel::Stdout,
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ];

    /// The name used in YAML and in log entries.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Stdout => "stdout",
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    /// A level as loggers write it (`INFO`, `warning`, `ERR`, `critical`, ...), if it is one.
    pub fn parse_loose(word: &str) -> Option<LogLevel> {
        Some(match word.to_ascii_lowercase().as_str() {
            "trace" | "trc" => LogLevel::Trace,
            "debug" | "dbg" => LogLevel::Debug,
            "info" | "inf" => LogLevel::Info,
            "warn" | "warning" | "wrn" => LogLevel::Warn,
            "error" | "err" | "critical" | "fatal" => LogLevel::Error,
            _ => return None,
        })
    }
}

/// A size in bytes, written as a number of bytes or like `50MB`, `512KiB`, `1GB` (KB/MB/GB are
/// powers of 1000, KiB/MiB/GiB powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `50MB`, `512 KiB`, `1gb` or a bare number of bytes.
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number.parse().map_err(|_| {
            format!("invalid size `{text}`: expected a number and a unit like `50MB`")
        })?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" | "k" => 1_000,
            "mb" | "m" => 1_000_000,
            "gb" | "g" => 1_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            other => {
                return Err(format!(
                "invalid size unit `{other}` in `{text}`: expected B, KB, MB, GB, KiB, MiB or GiB"
            ))
            }
        };
        let bytes = number * factor as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(format!("size `{text}` is too large"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(b) => Ok(ByteSize(b)),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// A duration written like `500ms`, `5s` or `1m 30s`, or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size like `50MB` or `512KiB` (KB/MB/GB powers of 1000, KiB/MiB/GiB of 1024), or a number of bytes.",
            "anyOf": [{ "type": "string" }, { "type": "integer", "minimum": 0 }]
        })
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration like `500ms`, `5s` or `1m 30s`, or a number of seconds.",
            "anyOf": [{ "type": "string" }, { "type": "number", "minimum": 0 }]
        })
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) if s >= 0.0 && s.is_finite() => Duration::try_from_secs_f64(s)
                .map(HumanDuration)
                .map_err(|_| serde::de::Error::custom(format!("invalid duration {s}: too large"))),
            Raw::Secs(s) => Err(serde::de::Error::custom(format!(
                "invalid duration {s}: must be a non-negative number of seconds"
            ))),
            Raw::Text(t) => humantime::parse_duration(&t)
                .map(HumanDuration)
                .map_err(|e| serde::de::Error::custom(format!("invalid duration `{t}`: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_number_of_seconds_is_an_error_not_a_panic() {
        // As a start request carries it (JSON), not only as YAML the validator checks first.
        let err = serde_json::from_str::<HumanDuration>("1e300").expect_err("too large");
        assert!(err.to_string().contains("too large"), "{err}");
        let ok = serde_json::from_str::<HumanDuration>("1.5").expect("1.5 s");
        assert_eq!(ok.0, Duration::from_millis(1500));
    }
}
