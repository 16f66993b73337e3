//! The MCAP writer of `adora record` and `adora run --record`.

use std::{
    collections::BTreeMap,
    fs::File,
    io::BufWriter,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
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

/// Chunk compression of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordCompression {
    /// Zstandard (the default: smaller files).
    Zstd,
    /// LZ4 (faster, larger).
    Lz4,
    /// None.
    None,
}

/// A recording being written.
pub struct Recorder {
    writer: Writer<BufWriter<File>>,
    path: PathBuf,
    channels: BTreeMap<String, (u16, u32)>,
    last_flush: Instant,
    /// Messages and payload bytes written.
    pub messages: u64,
    /// Payload bytes written.
    pub bytes: u64,
}

impl Recorder {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path, compression: RecordCompression) -> anyhow::Result<Self> {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let compression = match compression {
            RecordCompression::Zstd => Some(Compression::Zstd),
            RecordCompression::Lz4 => Some(Compression::Lz4),
            RecordCompression::None => None,
        };
        let writer = WriteOptions::new()
            .profile("adora")
            .library(format!("adora {}", adora_message::ADORA_VERSION))
            .compression(compression)
            .chunk_size(Some(CHUNK_SIZE))
            .create(BufWriter::new(file))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self {
            writer,
            path: path.to_owned(),
            channels: BTreeMap::new(),
            last_flush: Instant::now(),
            messages: 0,
            bytes: 0,
        })
    }

    /// Appends one message (its channel is created with its first message).
    pub fn write(&mut self, message: &TappedMessage) -> anyhow::Result<()> {
        let topic = message.topic();
        let (channel_id, sequence) = match self.channels.get_mut(&topic) {
            Some(c) => c,
            None => {
                let mut metadata = BTreeMap::from([
                    ("node".to_owned(), message.node.to_string()),
                    ("output".to_owned(), message.output.to_string()),
                ]);
                if let Some(t) = format::arrow_type(message) {
                    metadata.insert("arrow_type".to_owned(), t);
                }
                let id = self
                    .writer
                    .add_channel(0, &topic, format::MESSAGE_ENCODING, &metadata)?;
                self.channels.entry(topic).or_insert((id, 0))
            }
        };
        *sequence += 1;
        let publish_time = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or_default();
        let header = MessageHeader {
            channel_id: *channel_id,
            sequence: *sequence,
            log_time: format::log_time(&message.metadata),
            publish_time,
        };
        self.writer
            .write_to_known_channel(&header, &format::encode(message)?)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.messages += 1;
        self.bytes += message.data.len() as u64;
        if self.last_flush.elapsed() >= FLUSH_INTERVAL {
            self.flush()?;
        }
        Ok(())
    }

    /// Ends the current chunk and writes it out.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.last_flush = Instant::now();
        self.writer
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Writes the drop counts and the summary, and closes the file.
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
