//! What the daemon does with the lines a node prints, besides showing them: the node's log fields
//! (`min_log_level`, `send_stdout_as`, `send_logs_as`, `max_log_size`, `max_rotated_files`).
//!
//! A line's level is read from the line itself: a JSON object's `level` field (tracing's and
//! most structured loggers' JSON output), or a level word (`INFO`, `[warn]`, `WARNING:root:...`)
//! among its first three words (env_logger, tracing's text output, Python's `logging`). A line
//! without one is plain output, level `stdout`, the most verbose.

use std::{path::PathBuf, time::SystemTime};

use adora_core::{
    descriptor::{LogLevel, NodeSpec, DEFAULT_MAX_ROTATED_FILES},
    DataId,
};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

/// How many leading words of a plain-text line may hold its level.
const LEVEL_WORDS: usize = 3;

/// The log fields of one node.
#[derive(Debug, Clone)]
pub(crate) struct LogPolicy {
    /// Lines below this level are not written, shown or sent as entries.
    pub min_level: LogLevel,
    /// `send_stdout_as`: every line, as a string message.
    pub stdout_as: Option<DataId>,
    /// `send_logs_as`: every entry at or above `min_level`, as a JSON string message.
    pub logs_as: Option<DataId>,
    /// `max_log_size` in bytes.
    pub max_size: Option<u64>,
    /// `max_rotated_files`.
    pub max_rotated: u32,
}

impl LogPolicy {
    /// The policy a node's descriptor asks for.
    pub fn of(node: &NodeSpec) -> Self {
        Self {
            min_level: node.min_log_level.unwrap_or(LogLevel::Stdout),
            stdout_as: node.send_stdout_as.clone(),
            logs_as: node.send_logs_as.clone(),
            max_size: node.max_log_size.map(|s| s.0),
            max_rotated: node.max_rotated_files.unwrap_or(DEFAULT_MAX_ROTATED_FILES),
        }
    }

    /// Whether lines must be classified (filtered by level or sent as entries).
    pub fn needs_levels(&self) -> bool {
        self.min_level > LogLevel::Stdout || self.logs_as.is_some()
    }

    /// Whether any line goes to the actor as a message.
    pub fn sends_messages(&self) -> bool {
        self.stdout_as.is_some() || self.logs_as.is_some()
    }
}

/// One line as a log entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogEntry {
    pub level: LogLevel,
    pub message: String,
    pub target: Option<String>,
    pub fields: Map<String, Value>,
}

/// Reads the level (and, for JSON lines, the message, target and fields) of a line.
pub(crate) fn classify(line: &str) -> LogEntry {
    if line.trim_start().starts_with('{') {
        if let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) {
            if let Some(entry) = json_entry(object) {
                return entry;
            }
        }
    }
    let level = line
        .split_whitespace()
        .take(LEVEL_WORDS)
        .filter_map(|word| {
            let word = word.trim_matches(|c: char| "[]():".contains(c));
            LogLevel::parse_loose(word.split(':').next().unwrap_or(word))
        })
        .next()
        .unwrap_or(LogLevel::Stdout);
    LogEntry {
        level,
        message: line.to_owned(),
        target: None,
        fields: Map::new(),
    }
}

/// A JSON object with a `level` as an entry: its message (`message`, `msg`, `event` or
/// `fields.message`), its target (`target`, `logger` or `name`), the rest as fields.
fn json_entry(mut object: Map<String, Value>) -> Option<LogEntry> {
    let level = object
        .get("level")
        .and_then(Value::as_str)
        .and_then(LogLevel::parse_loose)?;
    object.remove("level");
    object.remove("timestamp");
    let take_str = |object: &mut Map<String, Value>, keys: &[&str]| {
        keys.iter().find_map(|k| match object.remove(*k) {
            Some(Value::String(s)) => Some(s),
            Some(other) => Some(other.to_string()),
            None => None,
        })
    };
    let mut message = take_str(&mut object, &["message", "msg", "event"]);
    let target = take_str(&mut object, &["target", "logger", "name"]);
    let mut fields = match object.remove("fields") {
        Some(Value::Object(fields)) => fields,
        _ => Map::new(),
    };
    if message.is_none() {
        message = take_str(&mut fields, &["message"]);
    }
    fields.extend(object);
    Some(LogEntry {
        level,
        message: message.unwrap_or_default(),
        target,
        fields,
    })
}

/// An entry as `send_logs_as` sends it.
#[derive(Serialize)]
struct EntryJson<'a> {
    timestamp: String,
    level: &'static str,
    node_id: &'a str,
    message: &'a str,
    target: Option<&'a str>,
    fields: &'a Map<String, Value>,
}

/// The JSON string of `entry` for `send_logs_as`, stamped with `at` (when the daemon read it).
pub(crate) fn entry_json(entry: &LogEntry, node: &str, at: SystemTime) -> String {
    let json = EntryJson {
        timestamp: humantime::format_rfc3339_millis(at).to_string(),
        level: entry.level.as_str(),
        node_id: node,
        message: &entry.message,
        target: entry.target.as_deref(),
        fields: &entry.fields,
    };
    serde_json::to_string(&json).expect("a log entry serializes: strings and JSON values")
}

/// A node's log file (`<log dir>/<node>.txt`), created with the node's first line (a silent node
/// costs no file) and, with `max_log_size`, rotated to `<node>.txt.1`, `.2`, ... (the oldest
/// beyond `max_rotated_files` removed).
pub(crate) struct LogFile {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    size: u64,
    failed: bool,
    max_size: Option<u64>,
    max_rotated: u32,
}

impl LogFile {
    /// The log file at `path`, rotated as `policy` says.
    pub fn new(path: PathBuf, policy: &LogPolicy) -> Self {
        Self {
            path,
            file: None,
            size: 0,
            failed: false,
            max_size: policy.max_size,
            max_rotated: policy.max_rotated,
        }
    }

    /// Appends one line (errors are logged once; the node's output is still shown).
    pub async fn write_line(&mut self, line: &str) {
        let len = line.len() as u64 + 1;
        if self
            .max_size
            .is_some_and(|max| self.size > 0 && self.size + len > max)
        {
            self.rotate().await;
        }
        let Some(file) = self.open().await else {
            return;
        };
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        if file.write_all(&bytes).await.is_ok() {
            self.size += len;
        }
    }

    /// Flushes what was written.
    pub async fn flush(&mut self) {
        if let Some(f) = &mut self.file {
            let _ = f.flush().await;
        }
    }

    async fn open(&mut self) -> Option<&mut tokio::fs::File> {
        if self.file.is_none() && !self.failed {
            let opened = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await;
            match opened {
                Ok(f) => {
                    // A restarted node appends to its previous instance's file.
                    self.size = f.metadata().await.map_or(0, |m| m.len());
                    self.file = Some(f);
                }
                Err(e) => {
                    tracing::warn!("cannot open log file {}: {e}", self.path.display());
                    self.failed = true;
                }
            }
        }
        self.file.as_mut()
    }

    /// `<node>.txt` becomes `<node>.txt.1`, `.1` becomes `.2`, ...; the next line starts a new file.
    async fn rotate(&mut self) {
        self.flush().await;
        self.file = None;
        self.size = 0;
        let numbered = |n: u32| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        let result = if self.max_rotated == 0 {
            tokio::fs::remove_file(&self.path).await
        } else {
            for n in (1..self.max_rotated).rev() {
                let _ = tokio::fs::rename(numbered(n), numbered(n + 1)).await;
            }
            tokio::fs::rename(&self.path, numbered(1)).await
        };
        if let Err(e) = result {
            tracing::warn!("cannot rotate log file {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests;
