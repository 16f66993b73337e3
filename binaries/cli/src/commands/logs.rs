//! `adora logs`: node logs of a dataflow (running or finished), a daemon's own log through the
//! coordinator (`--daemon MACHINE`), or the logs of the coordinator and daemon started by
//! `adora up`.

use std::{
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use adora_message::{
    cli_to_coordinator::{ControlRequest, DaemonLogsRequest, LogsRequest},
    coordinator_to_cli::ControlReply,
};
use anyhow::{bail, Context};

use super::client::{print_line, Client, ClientArgs};

/// How often `--follow` checks a service log file for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Show node logs of a dataflow, or the coordinator's / a daemon's own log.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora logs demo\n  adora logs demo sink --follow\n  adora logs demo --tail 20\n  \
adora logs --coordinator\n  adora logs --daemon\n  adora logs --daemon robot --tail 50\n  \
adora logs --daemon robot --follow\n\n\
`--daemon MACHINE` asks the coordinator, which asks that daemon for its own log: the journal \
of its systemd unit (`cluster install`), else the file its output goes to (`cluster up`: \
<state_dir>/daemon.log). When the coordinator cannot be reached, the local file \
daemon-<MACHINE>.log of `adora up` is read instead. `--coordinator` and `--daemon` without \
MACHINE read the files `adora up` writes in the state directory (coordinator.log, daemon.log)."
)]
pub struct Args {
    /// Name or uuid of the dataflow.
    #[arg(required_unless_present_any = ["coordinator", "daemon"])]
    dataflow: Option<String>,
    /// Only this node.
    node: Option<String>,
    /// Keep printing new lines (until the dataflow ends, or Ctrl-C for service logs).
    #[arg(long, short)]
    follow: bool,
    /// Only the last N lines (per node).
    #[arg(long)]
    tail: Option<usize>,
    /// The coordinator's own log.
    #[arg(long, conflicts_with_all = ["dataflow", "daemon"])]
    coordinator: bool,
    /// A daemon's own log, through the coordinator (the unnamed daemon of `adora up` without
    /// MACHINE).
    #[arg(long, num_args = 0..=1, value_name = "MACHINE", conflicts_with = "dataflow")]
    daemon: Option<Option<String>>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let state = super::common::state_dir();
    if args.coordinator {
        return service_log(&state.join("coordinator.log"), args.tail, args.follow).await;
    }
    if let Some(machine) = &args.daemon {
        let Some(machine) = machine else {
            return service_log(&state.join("daemon.log"), args.tail, args.follow).await;
        };
        let local = state.join(format!("daemon-{machine}.log"));
        let client = match Client::connect(&args.client).await {
            Ok(client) => client,
            Err(e) if local.is_file() => {
                eprintln!(
                    "cannot reach the coordinator ({e:#}): reading {}",
                    local.display()
                );
                return service_log(&local, args.tail, args.follow).await;
            }
            Err(e) => return Err(e.context(format!("cannot read the log of daemon `{machine}`"))),
        };
        return daemon_log(client, machine, args.tail, args.follow).await;
    }
    let Some(dataflow) = args.dataflow else {
        bail!("give a dataflow name or uuid, --coordinator or --daemon");
    };
    let mut client = Client::connect(&args.client).await?;
    client
        .send(ControlRequest::Logs(LogsRequest {
            dataflow,
            node: args.node.map(Into::into),
            tail: args.tail,
            follow: args.follow,
        }))
        .await?;
    let mut width = 0;
    loop {
        tokio::select! {
            reply = client.next() => match reply? {
                ControlReply::Log(line) => {
                    width = width.max(crate::output::display_width(line.node.as_str()));
                    print_line(line, width);
                }
                ControlReply::LogsEnd | ControlReply::Finished { .. } => return Ok(ExitCode::SUCCESS),
                ControlReply::Error(e) => return Err(e.into()),
                other => tracing::debug!("ignoring {other:?}"),
            },
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Prints a daemon's own log, read by that daemon and relayed by the coordinator.
async fn daemon_log(
    mut client: Client,
    machine: &str,
    tail: Option<usize>,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    client
        .send(ControlRequest::DaemonLogs(DaemonLogsRequest {
            machine: machine.to_owned(),
            tail,
            follow,
        }))
        .await?;
    loop {
        tokio::select! {
            reply = client.next() => match reply? {
                ControlReply::DaemonLog(line) => println!("{line}"),
                ControlReply::LogsEnd => return Ok(ExitCode::SUCCESS),
                ControlReply::Error(e) => return Err(e.into()),
                other => tracing::debug!("ignoring {other:?}"),
            },
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

async fn service_log(path: &Path, tail: Option<usize>, follow: bool) -> anyhow::Result<ExitCode> {
    let path: PathBuf = path.to_owned();
    let mut file = std::fs::File::open(&path).with_context(|| {
        format!(
            "cannot open {} (service logs exist for services started by `adora up`)",
            path.display()
        )
    })?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
    for line in &lines[skip..] {
        println!("{line}");
    }
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut pos = file.stream_position()?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < pos {
            pos = 0; // truncated
        }
        if len > pos {
            file.seek(SeekFrom::Start(pos))?;
            let mut more = String::new();
            file.read_to_string(&mut more)?;
            pos += more.len() as u64;
            print!("{more}");
        }
    }
}
