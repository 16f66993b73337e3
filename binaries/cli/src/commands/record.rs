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
    after_help = "Examples:\n  adora record demo -o run.mcap\n  adora record demo --outputs camera/image,lidar/points --compression lz4\n  adora record demo --lossy\n\n\
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
    /// Drop (and count) messages the recorder cannot keep up with instead of slowing the
    /// tapped nodes down.
    #[arg(long)]
    lossy: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = Client::connect(&args.client).await?;
    let mut tap = TapStream::open(client, &args.dataflow, args.outputs, args.lossy).await?;
    let mut recorder = Recorder::create(&args.output, args.compression)?;
    eprintln!(
        "recording {} output(s) of dataflow {} into {} (Ctrl-C to stop)",
        tap.outputs.len(),
        tap.dataflow,
        args.output.display()
    );
    let started = Instant::now();
    let dropped = loop {
        let event = tokio::select! {
            event = tap.next() => event?,
            _ = tokio::signal::ctrl_c() => break None,
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
    let dropped = dropped.unwrap_or_default();
    finish(recorder, &dropped, started, &args.output)
}

/// Writes the copies of `adora run --record`'s tap into `path` on a blocking thread; the task
/// returns the recorder once the tap ends (with the dataflow).
pub fn record_local(
    path: &std::path::Path,
    compression: RecordCompression,
    mut rx: tokio::sync::mpsc::Receiver<adora_daemon::tap::Tapped>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<Recorder>>> {
    let mut recorder = Recorder::create(path, compression)?;
    Ok(tokio::task::spawn_blocking(move || {
        while let Some((message, _budget)) = rx.blocking_recv() {
            recorder.write(&message)?;
        }
        Ok(recorder)
    }))
}

/// Closes the recording and prints what it holds.
pub fn finish(
    recorder: Recorder,
    dropped: &BTreeMap<String, u64>,
    started: Instant,
    path: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let (messages, bytes) = (recorder.messages, recorder.bytes);
    recorder
        .finish(dropped)
        .context("cannot finish the recording")?;
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    eprintln!(
        "recorded {messages} message(s), {:.1} MiB in {secs:.1}s ({:.1} MiB/s) into {}",
        bytes as f64 / 1048576.0,
        bytes as f64 / 1048576.0 / secs,
        path.display()
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
