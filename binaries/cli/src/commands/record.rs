//! `adora record`: record a running dataflow's outputs into an MCAP file (see
//! `recording::format`), through a tap of the daemons that run their senders.

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode, time::Instant};

use anyhow::Context;

use super::{
    client::{Client, ClientArgs},
    recording::writer::{RecordCompression, Recorder},
    tap_stream::{TapEvent, TapStream},
};

/// Record a running dataflow's outputs into an MCAP file until it ends (or Ctrl-C).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora record demo -o run.mcap\n  adora record demo --outputs camera/image,lidar/points --compression lz4\n  adora record demo --lossy\n  adora record demo -o run.mcap --split-size 1GiB   # run-001.mcap, run-002.mcap, ...\n\n\
Lossless by default: when the recorder cannot keep up, the tapped nodes are slowed down (their \
`send` waits) rather than a message lost. With --lossy, messages are dropped instead, counted, \
written into the file (metadata `adora.drops`) and printed at the end."
)]
pub struct Args {
    /// Name or uuid of the running dataflow.
    dataflow: String,
    /// Only these outputs (`node/output`, comma-separated); all by default.
    #[arg(long, value_delimiter = ',')]
    outputs: Vec<String>,
    /// The file to write.
    #[arg(short, long, default_value = "recording.mcap")]
    output: PathBuf,
    /// Chunk compression.
    #[arg(long, value_enum, default_value = "zstd")]
    compression: RecordCompression,
    /// Split into FILE-001.mcap, FILE-002.mcap, ... of about this size each (e.g. `1GiB`;
    /// counted before compression), each a complete MCAP file.
    #[arg(long, value_name = "SIZE", value_parser = parse_split_size)]
    split_size: Option<adora_core::descriptor::ByteSize>,
    /// Drop (and count) messages the recorder cannot keep up with instead of slowing the
    /// tapped nodes down.
    #[arg(long)]
    lossy: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::connect(&args.client).await?;
    let tap = TapStream::open(client, &args.dataflow, args.outputs, args.lossy).await?;
    let split = args.split_size.map(|s| s.0);
    let recorder = Recorder::create(&args.output, args.compression, split)?;
    eprintln!(
        "recording {} output(s) of dataflow {} into {} (Ctrl-C to stop)",
        tap.outputs.len(),
        tap.dataflow,
        args.output.display()
    );
    let started = Instant::now();
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let (recorder, dropped) = write_tap(tap, recorder, stop).await?;
    finish(recorder, &dropped, started, &args.output)
}

/// Writes what `tap` delivers into `recorder` until the tap ends (with the dataflow) or `stop`
/// completes; returns the recorder and the drops of a lossy tap.
pub async fn write_tap(
    mut tap: TapStream,
    mut recorder: Recorder,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<(Recorder, BTreeMap<String, u64>)> {
    tokio::pin!(stop);
    let dropped = loop {
        let event = tokio::select! {
            event = tap.next() => event?,
            _ = &mut stop => break None,
        };
        match event {
            TapEvent::Messages(messages) => {
                for message in &messages {
                    recorder.write(message)?;
                }
            }
            TapEvent::End(dropped) => break Some(dropped),
        }
    };
    Ok((recorder, dropped.unwrap_or_default()))
}

/// Smallest `--split-size`: parts smaller than this would be mostly MCAP overhead.
pub const MIN_SPLIT_SIZE: u64 = 1024;

/// Parses `--split-size` (`1GiB`, `512MB`, bytes), at least [`MIN_SPLIT_SIZE`].
pub fn parse_split_size(text: &str) -> Result<adora_core::descriptor::ByteSize, String> {
    let size = adora_core::descriptor::ByteSize::parse(text)?;
    if size.0 < MIN_SPLIT_SIZE {
        return Err(format!(
            "a split size must be at least {MIN_SPLIT_SIZE} bytes"
        ));
    }
    Ok(size)
}

/// A recording made by the process that runs the dataflow (`adora run --record`).
pub struct LocalRecording {
    /// The file (or with `split_size`, the base name of its parts).
    pub file: PathBuf,
    /// Chunk compression.
    pub compression: RecordCompression,
    /// Bytes per part, if split.
    pub split_size: Option<u64>,
    /// The dataflow file, noted in the recording (`adora replay` uses it when given none).
    pub dataflow: Option<PathBuf>,
    /// Drop (and count) messages instead of slowing the senders down.
    pub lossy: bool,
}

/// Writes the copies of `adora run --record`'s tap on a blocking thread; the task returns the
/// recorder once the tap ends (with the dataflow).
pub fn record_local(
    record: &LocalRecording,
    mut rx: tokio::sync::mpsc::Receiver<adora_daemon::tap::Tapped>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<Recorder>>> {
    let mut recorder = Recorder::create(&record.file, record.compression, record.split_size)?;
    if let Some(dataflow) = &record.dataflow {
        note_dataflow(&mut recorder, dataflow)?;
    }
    Ok(tokio::task::spawn_blocking(move || {
        while let Some((message, _budget)) = next_copy(&mut rx) {
            recorder.write(&message)?;
        }
        Ok(recorder)
    }))
}

/// The next copy of a local tap, `None` once it ended. Waiting on the channel would make every
/// copy that finds the writer asleep wake it (a system call in the daemon per message): when
/// the channel is empty, a short nap lets copies gather first, and only a quiet tap puts the
/// writer to sleep.
fn next_copy(
    rx: &mut tokio::sync::mpsc::Receiver<adora_daemon::tap::Tapped>,
) -> Option<adora_daemon::tap::Tapped> {
    use tokio::sync::mpsc::error::TryRecvError;
    match rx.try_recv() {
        Ok(tapped) => return Some(tapped),
        Err(TryRecvError::Disconnected) => return None,
        Err(TryRecvError::Empty) => std::thread::sleep(WRITER_NAP),
    }
    match rx.try_recv() {
        Ok(tapped) => Some(tapped),
        Err(TryRecvError::Disconnected) => None,
        Err(TryRecvError::Empty) => rx.blocking_recv(),
    }
}

/// How long the writer of `adora run --record` waits for copies to gather before it sleeps
/// until the next one.
const WRITER_NAP: std::time::Duration = std::time::Duration::from_millis(1);

/// Notes the dataflow file a recording was made from (metadata `adora.dataflow`, key `path`).
pub fn note_dataflow(recorder: &mut Recorder, dataflow: &std::path::Path) -> anyhow::Result<()> {
    let values = BTreeMap::from([("path".to_owned(), dataflow.display().to_string())]);
    recorder.note(super::recording::format::DATAFLOW_METADATA, values)
}

/// Closes the recording and prints what it holds.
pub fn finish(
    recorder: Recorder,
    dropped: &BTreeMap<String, u64>,
    started: Instant,
    path: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let (messages, bytes) = (recorder.messages, recorder.bytes);
    let files = recorder.files.clone();
    recorder
        .finish(dropped)
        .context("cannot finish the recording")?;
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    let into = match files.as_slice() {
        [one] => one.display().to_string(),
        _ => format!("{} files ({} ...)", files.len(), path.display()),
    };
    eprintln!(
        "recorded {messages} message(s), {:.1} MiB in {secs:.1}s ({:.1} MiB/s) into {into}",
        bytes as f64 / 1048576.0,
        bytes as f64 / 1048576.0 / secs,
    );
    let total: u64 = dropped.values().sum();
    if total == 0 {
        eprintln!("dropped: none");
    } else {
        for (topic, count) in dropped {
            eprintln!("dropped: {count} message(s) of {topic} (--lossy)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
