//! The MCAP writer of `adora record` and `adora run --record`.

use std::{
    collections::BTreeMap,
    fs::File,
    io::BufWriter,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use adora_message::tap::TappedMessage;
use anyhow::Context;
use mcap::{records::MessageHeader, Compression, WriteOptions, Writer};

use super::format;

/// How often the current chunk is ended and written out: a recorder killed with `kill -9`
/// loses at most this much.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Chunks are ended at this size (or at [`FLUSH_INTERVAL`]).
const CHUNK_SIZE: u64 = 4 * 1024 * 1024;

/// The compression level: zstd's fastest (for lz4, 1 is its default fast mode). A recorder
/// shares the machine with the nodes it records; against zstd's default (3), level 1 let the
/// recording benchmark's 8-byte sender run 10–20% faster for files 13–19% larger.
const COMPRESSION_LEVEL: u32 = 1;

/// Chunk compression of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordCompression {
    /// Zstandard at its fastest level (the default: smaller files).
    Zstd,
    /// LZ4 (faster, larger).
    Lz4,
    /// None.
    None,
}

/// A recording being written: one MCAP file, or with a split size numbered parts
/// (`run-001.mcap`, `run-002.mcap`, ...), each a complete MCAP file.
pub struct Recorder {
    writer: Writer<BufWriter<File>>,
    /// The file asked for (with a split size, the parts are named after it).
    base: PathBuf,
    path: PathBuf,
    compression: RecordCompression,
    /// Start a new part once this many bytes were recorded into the current one.
    split_size: Option<u64>,
    /// Every file written so far (the current one last).
    pub files: Vec<PathBuf>,
    part_bytes: u64,
    /// Metadata records written into every part.
    notes: Vec<mcap::records::Metadata>,
    channels: BTreeMap<String, Channel>,
    /// The topic and the data of the message being written (kept to reuse their memory).
    topic: String,
    data: Vec<u8>,
    last_flush: SystemTime,
    /// Messages and payload bytes written.
    pub messages: u64,
    /// Payload bytes written.
    pub bytes: u64,
}

/// A channel of the current part: its id, the sequence of its last message and the JSON
/// writer of its messages' metadata.
struct Channel {
    id: u16,
    sequence: u32,
    json: format::MetadataJson,
}

/// Bytes written to the file at once (a chunk is up to [`CHUNK_SIZE`] bytes).
const FILE_BUFFER: usize = 1 << 20;

/// The name of part `n` (from 1) of a split recording `base`: `run.mcap` → `run-001.mcap`.
pub fn part_path(base: &Path, n: usize) -> PathBuf {
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "recording".into());
    let ext = base
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mcap".into());
    base.with_file_name(format!("{stem}-{n:03}.{ext}"))
}

fn open_writer(
    path: &Path,
    compression: RecordCompression,
) -> anyhow::Result<Writer<BufWriter<File>>> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let compression = match compression {
        RecordCompression::Zstd => Some(Compression::Zstd),
        RecordCompression::Lz4 => Some(Compression::Lz4),
        RecordCompression::None => None,
    };
    WriteOptions::new()
        .profile("adora")
        .library(format!("adora {}", adora_message::ADORA_VERSION))
        .compression(compression)
        .chunk_size(Some(CHUNK_SIZE))
        // Compress in the writer's own thread: by default zstd starts a worker per CPU, and a
        // recorder taking every core slows down the nodes it records.
        .compression_threads(0)
        .compression_level(COMPRESSION_LEVEL)
        .create(BufWriter::with_capacity(FILE_BUFFER, file))
        .with_context(|| format!("cannot write {}", path.display()))
}

impl Recorder {
    /// Creates (truncates) `path`, or with `split_size` its first part.
    pub fn create(
        path: &Path,
        compression: RecordCompression,
        split_size: Option<u64>,
    ) -> anyhow::Result<Self> {
        let first = match split_size {
            Some(_) => part_path(path, 1),
            None => path.to_owned(),
        };
        Ok(Self {
            writer: open_writer(&first, compression)?,
            base: path.to_owned(),
            path: first.clone(),
            compression,
            split_size: split_size.map(|s| s.max(1)),
            files: vec![first],
            part_bytes: 0,
            notes: Vec::new(),
            channels: BTreeMap::new(),
            topic: String::new(),
            data: Vec::new(),
            last_flush: SystemTime::now(),
            messages: 0,
            bytes: 0,
        })
    }

    /// Writes a metadata record into the current part and every later one.
    pub fn note(&mut self, name: &str, values: BTreeMap<String, String>) -> anyhow::Result<()> {
        let metadata = mcap::records::Metadata {
            name: name.to_owned(),
            metadata: values,
        };
        self.writer.write_metadata(&metadata)?;
        self.notes.push(metadata);
        Ok(())
    }

    /// Appends one message (its channel is created with its first message in each part).
    pub fn write(&mut self, message: &TappedMessage) -> anyhow::Result<()> {
        if self.split_size.is_some_and(|s| self.part_bytes >= s) {
            self.next_part()?;
        }
        message.write_topic(&mut self.topic);
        let channel = match self.channels.get_mut(self.topic.as_str()) {
            Some(c) => c,
            None => {
                let mut metadata = BTreeMap::from([
                    ("node".to_owned(), message.node.to_string()),
                    ("output".to_owned(), message.output.to_string()),
                ]);
                if let Some(t) = format::arrow_type(message) {
                    metadata.insert("arrow_type".to_owned(), t);
                }
                let id = (self.writer).add_channel(
                    0,
                    &self.topic,
                    format::MESSAGE_ENCODING,
                    &metadata,
                )?;
                let channel = Channel {
                    id,
                    sequence: 0,
                    json: format::MetadataJson::default(),
                };
                self.channels.entry(self.topic.clone()).or_insert(channel)
            }
        };
        channel.sequence += 1;
        let now = SystemTime::now();
        let publish_time = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or_default();
        let header = MessageHeader {
            channel_id: channel.id,
            sequence: channel.sequence,
            log_time: format::log_time(&message.metadata),
            publish_time,
        };
        format::encode_into(message, &mut channel.json, &mut self.data)?;
        self.writer
            .write_to_known_channel(&header, &self.data)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.messages += 1;
        self.bytes += message.data.len() as u64;
        self.part_bytes += self.data.len() as u64;
        // A clock set back flushes at once.
        if now
            .duration_since(self.last_flush)
            .map_or(true, |d| d >= FLUSH_INTERVAL)
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Finishes the current part (a complete file) and opens the next.
    fn next_part(&mut self) -> anyhow::Result<()> {
        let path = part_path(&self.base, self.files.len() + 1);
        let mut writer = open_writer(&path, self.compression)?;
        for note in &self.notes {
            writer.write_metadata(note)?;
        }
        let mut done = std::mem::replace(&mut self.writer, writer);
        done.finish()
            .with_context(|| format!("cannot finish {}", self.path.display()))?;
        self.path = path.clone();
        self.files.push(path);
        self.channels.clear();
        self.part_bytes = 0;
        Ok(())
    }

    /// Ends the current chunk and writes it out.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.last_flush = SystemTime::now();
        self.writer
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Writes the drop counts (into the last part) and the summary, and closes the file.
    pub fn finish(mut self, dropped: &BTreeMap<String, u64>) -> anyhow::Result<()> {
        let metadata = mcap::records::Metadata {
            name: format::DROPS_METADATA.to_owned(),
            metadata: dropped
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        };
        self.writer.write_metadata(&metadata)?;
        self.writer
            .finish()
            .with_context(|| format!("cannot finish {}", self.path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_numbered_after_the_file() {
        let base = Path::new("/data/run.mcap");
        assert_eq!(part_path(base, 1), Path::new("/data/run-001.mcap"));
        assert_eq!(part_path(base, 12), Path::new("/data/run-012.mcap"));
        assert_eq!(part_path(Path::new("bag"), 2), Path::new("bag-002.mcap"));
    }
}
