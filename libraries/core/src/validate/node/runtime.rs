//! Checks of the node fields with runtime behaviour (dora 1.x compatibility): input timeouts,
//! health checks, CPU affinity and logs sent as data. The root fields `health_check_interval` and
//! `exit_when_nodes_finish` are checked by [`check_runtime_root`].

use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::{expected, parse_duration, present, NodeCtx};
use crate::{
    descriptor::{ByteSize, LogLevel},
    ids::is_valid_id,
    validate::{locate::Seg, Report},
};

/// The smallest `max_log_size` (1 KiB): smaller would rotate on nearly every line.
pub(crate) const MIN_LOG_SIZE: u64 = 1 << 10;
/// The largest `max_log_size` (1 TiB).
pub(crate) const MAX_LOG_SIZE: u64 = 1 << 40;
/// The most rotated log files a node may keep.
pub(crate) const MAX_ROTATED_FILES: u64 = 1000;

/// The largest CPU index `cpu_affinity` accepts (the size of Linux's default CPU set).
pub(crate) const MAX_CPU_INDEX: u64 = 1023;

/// The shortest `input_timeout`, `health_check_timeout` or `health_check_interval`: below this
/// the daemon's checks would cost more than the work they watch.
pub(crate) const MIN_RUNTIME_DURATION: Duration = Duration::from_millis(10);

/// The longest of those durations (30 days): far beyond any real use, small enough that adding it
/// to a clock never overflows.
pub(crate) const MAX_RUNTIME_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// A duration field checked against [`MIN_RUNTIME_DURATION`] and [`MAX_RUNTIME_DURATION`].
fn bounded_duration(value: &Value) -> Result<Duration, String> {
    let duration = parse_duration(value)?;
    if duration < MIN_RUNTIME_DURATION || duration > MAX_RUNTIME_DURATION {
        return Err(format!(
            "{} is out of range: expected between {} and {}",
            humantime::format_duration(duration),
            humantime::format_duration(MIN_RUNTIME_DURATION),
            humantime::format_duration(MAX_RUNTIME_DURATION),
        ));
    }
    Ok(duration)
}

/// Checks the root fields `health_check_interval` and `exit_when_nodes_finish`.
pub(crate) fn check_runtime_root(report: &mut Report<'_>, root: &Mapping) {
    let mut problem = |field: &'static str, message: String| {
        let line = report.line(&[Seg::Key(field)]);
        report.push(None, Some(field.into()), line, message);
    };
    if let Some(value) = present(root, "health_check_interval") {
        if let Err(message) = bounded_duration(value) {
            problem("health_check_interval", message);
        }
    }
    if let Some(value) = present(root, "exit_when_nodes_finish") {
        if !value.is_bool() {
            problem("exit_when_nodes_finish", expected("true or false", value));
        }
    }
}

impl NodeCtx<'_, '_, '_> {
    /// Checks `inputs.<id>.input_timeout`.
    pub(super) fn check_input_timeout(&mut self, id: &str, long: &Mapping) {
        if let Some(value) = present(long, "input_timeout") {
            if let Err(message) = bounded_duration(value) {
                let field = [Seg::Key("inputs"), Seg::Key(id), Seg::Key("input_timeout")];
                self.error(&field, message);
            }
        }
    }

    /// Checks the runtime fields of a node; `outputs` are its declared outputs when readable.
    pub(super) fn check_runtime(&mut self, map: &Mapping, outputs: Option<&[&str]>) {
        if let Some(value) = present(map, "health_check_timeout") {
            if let Err(message) = bounded_duration(value) {
                self.error(&[Seg::Key("health_check_timeout")], message);
            }
        }
        if let Some(value) = present(map, "cpu_affinity") {
            self.check_cpu_affinity(value);
        }
        for name in ["send_stdout_as", "send_logs_as"] {
            if let Some(value) = present(map, name) {
                self.check_log_output(name, value, outputs);
            }
        }
        self.check_log_files(map);
    }

    /// `min_log_level`, `max_log_size`, `max_rotated_files`.
    fn check_log_files(&mut self, map: &Mapping) {
        if let Some(value) = present(map, "min_log_level") {
            let names: Vec<&str> = LogLevel::ALL.iter().map(|l| l.as_str()).collect();
            let field = [Seg::Key("min_log_level")];
            match value.as_str() {
                Some(l) if names.contains(&l) => {}
                Some(l) => self.error(&field, super::not_one_of("log level", l, &names)),
                None => self.error(
                    &field,
                    expected(&format!("one of {}", names.join(", ")), value),
                ),
            }
        }
        if let Some(value) = present(map, "max_log_size") {
            let size = match value {
                Value::Number(n) => n
                    .as_u64()
                    .map(ByteSize)
                    .ok_or_else(|| expected("a size like `50MB` or a number of bytes", value)),
                Value::String(s) => ByteSize::parse(s),
                other => Err(expected("a size like `50MB` or a number of bytes", other)),
            };
            let checked = size.and_then(|size| {
                if (MIN_LOG_SIZE..=MAX_LOG_SIZE).contains(&size.0) {
                    Ok(())
                } else {
                    Err(format!(
                        "{} bytes is out of range: expected between {MIN_LOG_SIZE} bytes (1 KiB) \
                         and {MAX_LOG_SIZE} bytes (1 TiB)",
                        size.0
                    ))
                }
            });
            if let Err(message) = checked {
                self.error(&[Seg::Key("max_log_size")], message);
            }
        }
        if let Some(value) = present(map, "max_rotated_files") {
            if value.as_u64().is_none_or(|n| n > MAX_ROTATED_FILES) {
                let what = format!("an integer from 0 to {MAX_ROTATED_FILES}");
                self.error(&[Seg::Key("max_rotated_files")], expected(&what, value));
            }
        }
    }

    fn check_cpu_affinity(&mut self, value: &Value) {
        const F: Seg<'static> = Seg::Key("cpu_affinity");
        let Value::Sequence(cores) = value else {
            return self.error(
                &[F],
                expected("a list of CPU core numbers (e.g. `[0, 1]`)", value),
            );
        };
        if cores.is_empty() {
            return self.error(&[F], "must list at least one CPU core".into());
        }
        let mut seen = Vec::new();
        for (i, core) in cores.iter().enumerate() {
            let field = [F, Seg::Index(i)];
            match core.as_u64() {
                Some(n) if n > MAX_CPU_INDEX => self.error(
                    &field,
                    format!("CPU core {n} is out of range: expected 0 to {MAX_CPU_INDEX}"),
                ),
                Some(n) if seen.contains(&n) => {
                    self.error(&field, format!("CPU core {n} is listed twice"))
                }
                Some(n) => seen.push(n),
                None => self.error(&field, expected("a CPU core number (0, 1, ...)", core)),
            }
        }
    }

    /// `send_stdout_as`: an output id that the node declares.
    fn check_log_output(&mut self, name: &'static str, value: &Value, outputs: Option<&[&str]>) {
        let field = [Seg::Key(name)];
        let Some(output) = value.as_str() else {
            return self.error(&field, expected("an output id", value));
        };
        if !is_valid_id(output) {
            return self.error(&field, super::invalid_id("output id", output));
        }
        if let Some(outputs) = outputs {
            if !outputs.contains(&output) {
                self.error(
                    &field,
                    format!("`{output}` is not one of the node's outputs; add it to `outputs`"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
