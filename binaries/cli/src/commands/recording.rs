//! `adora recording info`: what an MCAP recording holds, and `adora recording export` ([`export`]):
//! one channel as plain files. The file layout is in [`format`]; the writer of `adora record` /
//! `adora run --record` in [`writer`].

pub mod export;
pub mod format;
pub mod writer;

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode};

use anyhow::Context;
use mcap::{read::Options, records::Record};

/// Inspect MCAP recordings.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Channels, message counts, time range and drops of a recording (also of one whose
    /// recorder was killed: read up to its last complete chunk).
    #[command(
        after_help = "Examples:\n  adora recording info run.mcap\n  adora recording info run.mcap --json"
    )]
    Info {
        /// The recording.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One channel as plain files: arrays of numbers, booleans or strings as CSV (one row per
    /// element: message,log_time_ns,index,value), anything else as one raw file per message
    /// (`<message>-<log_time_ns>.bin`, the payload bytes as sent).
    #[command(
        after_help = "Examples:\n  adora recording export run.mcap --channel sender/counter            # sender_counter.csv\n  adora recording export run.mcap --channel camera/image -o frames/     # frames/000000-<ns>.bin ...\n  adora recording export run.mcap --channel imu/accel --format csv -o accel.csv"
    )]
    Export {
        /// The recording.
        file: PathBuf,
        /// The channel (`node/output`).
        #[arg(long)]
        channel: String,
        /// The CSV file or the directory of raw files [default: named after the channel].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// What to write.
        #[arg(long, value_enum, default_value = "auto")]
        format: export::ExportFormat,
    },
}

/// One channel of a recording.
#[derive(Debug, Default, serde::Serialize)]
pub struct ChannelSummary {
    /// Messages.
    pub messages: u64,
    /// Payload bytes (without Adora's header).
    pub bytes: u64,
    /// First and last log time (ns since the Unix epoch).
    pub first_ns: u64,
    /// Last log time.
    pub last_ns: u64,
    /// The Arrow type (JSON), when recorded.
    pub arrow_type: Option<String>,
}

/// What a recording holds.
#[derive(Debug, Default, serde::Serialize)]
pub struct RecordingSummary {
    /// Per topic.
    pub channels: BTreeMap<String, ChannelSummary>,
    /// Drops of a lossy recording, per topic.
    pub dropped: BTreeMap<String, u64>,
    /// The file ends properly (its recorder finished); `false`: read up to the last chunk.
    pub complete: bool,
    /// The dataflow file it was recorded from, when the recorder knew it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataflow: Option<String>,
}

/// Reads a whole recording; a truncated one is read up to its last complete record.
pub fn summarize(bytes: &[u8]) -> anyhow::Result<RecordingSummary> {
    let mut summary = RecordingSummary::default();
    let mut topics: BTreeMap<u16, String> = BTreeMap::new();
    let records =
        mcap::read::ChunkFlattener::new_with_options(bytes, Options::IgnoreEndMagic.into())
            .context("not an MCAP file")?;
    for record in records {
        let record = match record {
            Ok(r) => r,
            Err(_) => return Ok(summary), // truncated: everything before is good
        };
        match record {
            Record::Channel(c) => {
                let arrow_type = c.metadata.get("arrow_type").cloned();
                summary
                    .channels
                    .entry(c.topic.clone())
                    .or_default()
                    .arrow_type = arrow_type;
                topics.insert(c.id, c.topic);
            }
            Record::Message { header, data } => {
                let Some(topic) = topics.get(&header.channel_id) else {
                    continue;
                };
                let channel = summary.channels.entry(topic.clone()).or_default();
                if channel.messages == 0 {
                    channel.first_ns = header.log_time;
                }
                channel.messages += 1;
                channel.last_ns = header.log_time;
                let payload = format::decode(&data).map(|(_, p)| p.len()).unwrap_or(0);
                channel.bytes += payload as u64;
            }
            Record::Metadata(m) if m.name == format::DROPS_METADATA => {
                for (topic, count) in m.metadata {
                    summary.dropped.insert(topic, count.parse().unwrap_or(0));
                }
            }
            Record::Metadata(m) if m.name == format::DATAFLOW_METADATA => {
                summary.dataflow = m.metadata.get("path").cloned();
            }
            Record::Footer(_) => summary.complete = true,
            _ => {}
        }
    }
    Ok(summary)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Export {
            file,
            channel,
            output,
            format,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let written = export::export(&bytes, &channel, format, output)
                .with_context(|| format!("{}", file.display()))?;
            eprintln!("exported {written}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Info { file, json } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let summary = summarize(&bytes).with_context(|| format!("{}", file.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print_summary(&summary);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_summary(summary: &RecordingSummary) {
    let mut table =
        crate::table::Table::new(["CHANNEL", "MESSAGES", "BYTES", "DURATION", "ARROW TYPE"]);
    for (topic, c) in &summary.channels {
        let span = std::time::Duration::from_nanos(c.last_ns.saturating_sub(c.first_ns));
        table.row([
            topic.clone(),
            c.messages.to_string(),
            c.bytes.to_string(),
            format!("{:.3}s", span.as_secs_f64()),
            c.arrow_type.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table.print();
    if !summary.complete {
        println!(
            "the file ends early (its recorder did not finish): read up to its last complete chunk"
        );
    }
    if summary.dropped.values().all(|d| *d == 0) {
        println!("dropped: none");
    } else {
        for (topic, count) in &summary.dropped {
            println!("dropped: {count} message(s) of {topic}");
        }
    }
}
