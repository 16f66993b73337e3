//! `adora recording export`: one channel of a recording as plain files. Arrays of numbers,
//! booleans or strings become CSV with one row per *element* (`message,log_time_ns,index,value`:
//! a message carrying one value is one row, an array of 640 floats is 640 rows sharing their
//! message number); anything else (images, structs, bytes: `UInt8` arrays unless `--format csv`)
//! becomes one raw file per message,
//! `<message>-<log_time_ns>.bin`, holding the payload exactly as the node sent it.

use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
};

use adora_node_api::Data;
use anyhow::{bail, Context};
use arrow_array::{cast::AsArray, types::*, Array, ArrayRef};
use arrow_schema::DataType;

use super::format;

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// CSV for arrays of numbers, booleans or strings, raw files otherwise (also for `UInt8`
    /// arrays: that is how plain bytes, such as images, travel).
    Auto,
    /// CSV, one row per array element (an error for other types).
    Csv,
    /// One file per message with its payload bytes.
    Raw,
}

/// The CSV header.
pub const CSV_HEADER: &str = "message,log_time_ns,index,value";

/// A recorded message of the exported channel.
struct Recorded {
    log_time: u64,
    data: Data,
}

/// Exports `topic` of the recording `bytes` to `out` (a CSV file or a directory of raw files;
/// default: named after the topic); returns what was written.
pub fn export(
    bytes: &[u8],
    topic: &str,
    format: ExportFormat,
    out: Option<PathBuf>,
) -> anyhow::Result<String> {
    let messages = read_channel(bytes, topic)?;
    let csv = match format {
        ExportFormat::Raw => false,
        ExportFormat::Csv => true,
        // Plain bytes travel as `UInt8` arrays: raw files unless CSV is asked for.
        ExportFormat::Auto => messages.first().is_some_and(|m| {
            is_csv(&m.data)
                && !m
                    .data
                    .to_arrow()
                    .is_ok_and(|a| a.data_type() == &DataType::UInt8)
        }),
    };
    let default = topic.replace('/', "_");
    if csv {
        let path = out.unwrap_or_else(|| PathBuf::from(format!("{default}.csv")));
        let rows = write_csv(&messages, &path, topic)?;
        Ok(format!(
            "{} message(s), {rows} row(s) of {topic} into {}",
            messages.len(),
            path.display()
        ))
    } else {
        let dir = out.unwrap_or_else(|| PathBuf::from(default));
        write_raw(&messages, &dir)?;
        Ok(format!(
            "{} message(s) of {topic} into {}/",
            messages.len(),
            dir.display()
        ))
    }
}

/// The messages of `topic`, in file order (a truncated recording is read up to its end).
fn read_channel(bytes: &[u8], topic: &str) -> anyhow::Result<Vec<Recorded>> {
    let mut messages = Vec::new();
    let mut topics = std::collections::BTreeSet::new();
    for message in mcap::MessageStream::new(bytes).context("not an MCAP file")? {
        let Ok(message) = message else {
            break; // truncated: everything before is good
        };
        if message.channel.topic != topic {
            topics.insert(message.channel.topic.clone());
            continue;
        }
        let (metadata, payload) = format::decode(&message.data)?;
        messages.push(Recorded {
            log_time: message.log_time,
            data: Data::from_bytes(payload.to_vec(), metadata.type_info),
        });
    }
    if messages.is_empty() {
        let topics: Vec<String> = topics.into_iter().collect();
        bail!(
            "the recording has no message on `{topic}` (its channels: {})",
            topics.join(", ")
        );
    }
    Ok(messages)
}

/// Whether a payload is an array CSV can hold.
fn is_csv(data: &Data) -> bool {
    data.to_arrow().is_ok_and(|a| csv_type(a.data_type()))
}

fn csv_type(t: &DataType) -> bool {
    t.is_integer()
        || t.is_floating()
        || matches!(t, DataType::Boolean | DataType::Utf8 | DataType::LargeUtf8)
}

fn write_csv(messages: &[Recorded], path: &Path, topic: &str) -> anyhow::Result<u64> {
    let mut text = format!("{CSV_HEADER}\n");
    let mut rows = 0;
    for (n, message) in messages.iter().enumerate() {
        let array = message
            .data
            .to_arrow()
            .with_context(|| format!("message {n} of {topic}"))?;
        if !csv_type(array.data_type()) {
            bail!(
                "message {n} of {topic} is {:?}: only arrays of numbers, booleans or strings export as CSV (use --format raw)",
                array.data_type()
            );
        }
        for i in 0..array.len() {
            let value = cell(&array, i);
            let _ = writeln!(text, "{n},{},{i},{value}", message.log_time);
            rows += 1;
        }
    }
    write_file(path, text.as_bytes())?;
    Ok(rows)
}

/// Element `i` as a CSV field (empty for null, strings quoted when needed).
fn cell(array: &ArrayRef, i: usize) -> String {
    if array.is_null(i) {
        return String::new();
    }
    macro_rules! prim {
        ($t:ty) => {
            array.as_primitive::<$t>().value(i).to_string()
        };
    }
    match array.data_type() {
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        DataType::Float16 => prim!(Float16Type),
        DataType::Float32 => prim!(Float32Type),
        DataType::Float64 => prim!(Float64Type),
        DataType::Boolean => array.as_boolean().value(i).to_string(),
        DataType::Utf8 => quote(array.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => quote(array.as_string::<i64>().value(i)),
        _ => String::new(),
    }
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn write_raw(messages: &[Recorded], dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (n, message) in messages.iter().enumerate() {
        let path = dir.join(format!("{n:06}-{}.bin", message.log_time));
        write_file(&path, &message.data)?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_csv_fields() {
        let strings: ArrayRef = std::sync::Arc::new(arrow_array::StringArray::from(vec![
            Some("plain"),
            Some("a,b"),
            Some("say \"hi\""),
            None,
        ]));
        let cells: Vec<String> = (0..4).map(|i| cell(&strings, i)).collect();
        assert_eq!(cells, ["plain", "\"a,b\"", "\"say \"\"hi\"\"\"", ""]);
        let floats: ArrayRef = std::sync::Arc::new(arrow_array::Float32Array::from(vec![1.5]));
        assert_eq!(cell(&floats, 0), "1.5");
        assert!(csv_type(&DataType::Boolean));
        assert!(!csv_type(&DataType::Binary));
    }
}
