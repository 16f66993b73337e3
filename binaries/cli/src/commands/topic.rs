//! `adora topic list|echo|hz|bw`: look at a running dataflow's outputs through a tap, without
//! changing the dataflow (nothing is copied for an output nobody looks at).

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use adora_message::{cli_to_coordinator::TapRequest, tap::TappedMessage};

use super::{
    client::{Client, ClientArgs},
    recording::format,
    tap_stream::{TapEvent, TapStream},
};

/// Inspect the outputs of a running dataflow.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// The outputs of a dataflow (`node/output`).
    #[command(after_help = "Examples:\n  adora topic list demo")]
    List {
        /// Name or uuid of the running dataflow.
        dataflow: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the messages of one output as they are sent.
    #[command(
        after_help = "Examples:\n  adora topic echo demo sender/counter\n  adora topic echo demo sender/counter --count 5 --json"
    )]
    Echo {
        /// Name or uuid of the running dataflow.
        dataflow: String,
        /// The output, `node/output`.
        output: String,
        /// Stop after N messages.
        #[arg(long)]
        count: Option<u64>,
        /// One JSON object per line: topic, send time (ns since the Unix epoch), Arrow type,
        /// parameters, length and payload (base64).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The rate of one output: messages/s and the min/max/mean/std of the period between send
    /// timestamps, over each window.
    #[command(
        after_help = "Examples:\n  adora topic hz demo sender/counter\n  adora topic hz demo sender/counter --window 5s --count 1"
    )]
    Hz(RateArgs),
    /// The bandwidth of one output: payload bytes/s and messages/s over each window.
    #[command(after_help = "Examples:\n  adora topic bw demo camera/image")]
    Bw(RateArgs),
}

#[derive(Debug, clap::Args)]
struct RateArgs {
    /// Name or uuid of the running dataflow.
    dataflow: String,
    /// The output, `node/output`.
    output: String,
    /// Report every this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Stop after N reports.
    #[arg(long)]
    count: Option<u64>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::List { dataflow, client } => list(&dataflow, &client).await,
        Command::Echo {
            dataflow,
            output,
            count,
            json,
            client,
        } => echo(&dataflow, output, count, json, &client).await,
        Command::Hz(args) => rate(args, false).await,
        Command::Bw(args) => rate(args, true).await,
    }
}

async fn list(dataflow: &str, client: &ClientArgs) -> anyhow::Result<ExitCode> {
    let request = TapRequest {
        dataflow: dataflow.to_owned(),
        outputs: Vec::new(),
        lossy: false,
        dry_run: true,
        before_start: false,
    };
    let tap = TapStream::request(Client::connect(client).await?, request).await?;
    for output in &tap.outputs {
        println!("{output}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Calls `each` for every message of `output` until it returns false, the dataflow ends or
/// Ctrl-C.
async fn follow(
    dataflow: &str,
    output: String,
    client: &ClientArgs,
    mut each: impl FnMut(&TappedMessage) -> bool,
) -> anyhow::Result<ExitCode> {
    let client = Client::connect(client).await?;
    let mut tap = TapStream::open(client, dataflow, vec![output], true).await?;
    loop {
        let event = tokio::select! {
            event = tap.next() => event?,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        match event {
            TapEvent::Messages(messages) => {
                for message in &messages {
                    if !each(message) {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            }
            TapEvent::End(_) => return Ok(ExitCode::SUCCESS),
        }
    }
}

async fn echo(
    dataflow: &str,
    output: String,
    count: Option<u64>,
    json: bool,
    client: &ClientArgs,
) -> anyhow::Result<ExitCode> {
    let mut seen = 0;
    follow(dataflow, output, client, |message| {
        if json {
            println!("{}", echo_json(message));
        } else {
            println!("{}", echo_text(message));
        }
        seen += 1;
        count.is_none_or(|c| seen < c)
    })
    .await
}

/// One message as a JSON line.
fn echo_json(message: &TappedMessage) -> String {
    use base64::{engine::general_purpose::STANDARD, Engine};
    let value = serde_json::json!({
        "topic": message.topic(),
        "timestamp_ns": format::log_time(&message.metadata),
        "arrow_type": format::arrow_type(message).and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()),
        "parameters": message.metadata.parameters,
        "len": message.data.len(),
        "data_base64": STANDARD.encode(&message.data),
    });
    value.to_string()
}

/// One message for a human: topic, length, type and the first bytes in hex.
fn echo_text(message: &TappedMessage) -> String {
    let shown: Vec<String> = message
        .data
        .iter()
        .take(32)
        .map(|b| format!("{b:02x}"))
        .collect();
    let more = if message.data.len() > 32 { " ..." } else { "" };
    format!(
        "{}  {} bytes  {}  [{}{more}]",
        message.topic(),
        message.data.len(),
        format::arrow_type(message).unwrap_or_else(|| "?".into()),
        shown.join(" ")
    )
}

/// Rates over windows of send timestamps.
#[derive(Default)]
struct Window {
    times_ns: Vec<u64>,
    bytes: u64,
}

impl Window {
    /// `hz`: rate and period statistics; `bw`: bytes/s and messages/s.
    fn report(&self, elapsed: Duration, bandwidth: bool) -> String {
        let n = self.times_ns.len();
        if bandwidth {
            let secs = elapsed.as_secs_f64().max(1e-9);
            return format!(
                "{:.3} MiB/s  {:.1} msg/s  ({n} messages, {} bytes in {secs:.2}s)",
                self.bytes as f64 / 1048576.0 / secs,
                n as f64 / secs,
                self.bytes
            );
        }
        if n < 2 {
            return format!("{n} message(s): no rate yet");
        }
        let periods: Vec<f64> = self
            .times_ns
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]) as f64 / 1e9)
            .collect();
        let mean = periods.iter().sum::<f64>() / periods.len() as f64;
        let var = periods.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / periods.len() as f64;
        let min = periods.iter().copied().fold(f64::INFINITY, f64::min);
        let max = periods.iter().copied().fold(0.0, f64::max);
        format!(
            "rate: {:.3} Hz  period min {:.6}s max {:.6}s mean {mean:.6}s std {:.6}s  ({n} messages)",
            1.0 / mean.max(1e-12),
            min,
            max,
            var.sqrt()
        )
    }
}

async fn rate(args: RateArgs, bandwidth: bool) -> anyhow::Result<ExitCode> {
    let mut window = Window::default();
    let mut started = Instant::now();
    let mut reports = 0;
    follow(&args.dataflow, args.output, &args.client, |message| {
        window.times_ns.push(format::log_time(&message.metadata));
        window.bytes += message.data.len() as u64;
        if started.elapsed() < args.window {
            return true;
        }
        println!("{}", window.report(started.elapsed(), bandwidth));
        window = Window::default();
        started = Instant::now();
        reports += 1;
        args.count.is_none_or(|c| reports < c)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hz_reports_the_rate_and_period_spread() {
        let window = Window {
            times_ns: vec![0, 10_000_000, 20_000_000, 30_000_000],
            bytes: 0,
        };
        let text = window.report(Duration::from_secs(1), false);
        assert!(text.starts_with("rate: 100.000 Hz"), "{text}");
        assert!(text.contains("std 0.000000s"), "{text}");
        let bw = Window {
            times_ns: vec![0; 4],
            bytes: 2 * 1048576,
        };
        assert!(bw
            .report(Duration::from_secs(2), true)
            .starts_with("1.000 MiB/s  2.0 msg/s"));
    }
}
