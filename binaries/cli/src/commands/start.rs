//! `adora start`: place and spawn a dataflow through the coordinator, optionally attached.

use std::{path::PathBuf, process::ExitCode};

use adora_message::{
    cli_to_coordinator::{ControlRequest, StartDataflow},
    control::{DataflowOutcome, NodeResult},
    coordinator_to_cli::ControlReply,
};
use anyhow::{bail, Context};

use super::recording::writer::Recorder;
use std::collections::BTreeMap;

use super::client::{print_line, Client, ClientArgs};

/// Start a dataflow on the connected daemons (placement first: all nodes or none).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora start dataflow.yml --name demo\n  adora start dataflow.yml --detach\n  \
adora start dataflow.yml --build --cluster cluster.yml\n  \
adora start dataflow.yml --build-id 5d1c0b6e-...   (after `adora build`)\n  \
adora start dataflow.yml --record run.mcap   (record every output while attached)\n\n\
Attached (the default), node output is printed prefixed with the node id until the dataflow ends; \
the exit code is the dataflow's result. Ctrl-C stops the dataflow."
)]
pub struct Args {
    /// The dataflow file.
    dataflow: PathBuf,
    /// Unique name among running dataflows [default: generated].
    #[arg(long)]
    name: Option<String>,
    /// Stream node logs until the dataflow ends (default).
    #[arg(long, conflicts_with = "detach")]
    attach: bool,
    /// Return as soon as every node is spawned.
    #[arg(long)]
    detach: bool,
    /// Build first: `distribute: local` nodes on their daemon's machine, `scp`/`http` nodes here
    /// (their binaries are copied/uploaded with or without this flag).
    #[arg(long)]
    build: bool,
    /// Run the binaries of this `adora build` (its id): nothing is built, copied or uploaded
    /// again.
    #[arg(long, value_name = "UUID", conflicts_with = "build")]
    build_id: Option<uuid::Uuid>,
    #[command(flatten)]
    distribute: super::distribute::DistributeArgs,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    finish: super::common::ExitWhenNodesFinish,
    /// Record every output into this MCAP file from the first message while attached
    /// (lossless unless `--lossy`; without --name the dataflow is named `recording-<8 hex
    /// digits>`).
    #[arg(long, value_name = "FILE.mcap", conflicts_with = "detach")]
    record: Option<PathBuf>,
    /// Chunk compression of `--record`.
    #[arg(long, value_enum, default_value = "zstd", requires = "record")]
    compression: super::recording::writer::RecordCompression,
    /// Split `--record` into FILE-001.mcap, FILE-002.mcap, ... of about this size each.
    #[arg(long, value_name = "SIZE", requires = "record", value_parser = super::record::parse_split_size)]
    split_size: Option<adora_core::descriptor::ByteSize>,
    /// Let `--record` drop messages instead of slowing the senders down when it cannot keep up:
    /// every drop is counted, printed at the end and written into the file.
    #[arg(long, requires = "record")]
    lossy: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut descriptor = match super::common::load_descriptor(&args.dataflow) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    if let Some(exit) = args.finish.exit_when_nodes_finish {
        descriptor.exit_when_nodes_finish = Some(exit);
    }
    let width = crate::output::id_width(&descriptor);
    let attach = !args.detach;
    let working_dir = super::common::dataflow_dir(&args.dataflow)?;
    let artifacts = match args.build_id {
        Some(_) => Default::default(),
        None => {
            super::distribute::distribute(
                &descriptor,
                &working_dir,
                &args.distribute,
                &args.client,
                args.build,
                uuid::Uuid::new_v4(),
            )
            .await?
        }
    };
    // The recorder's tap is asked for first, by the dataflow's name: the coordinator sends it to
    // each daemon just before that daemon's `Spawn`, so that no message is missed.
    let mut name = args.name.clone();
    let early_tap = match &args.record {
        Some(_) => {
            let name = name.get_or_insert_with(|| {
                format!(
                    "recording-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                )
            });
            let client = Client::connect(&args.client).await?;
            Some(super::tap_stream::TapStream::before_start(client, name, args.lossy).await?)
        }
        None => None,
    };
    let start = StartDataflow {
        descriptor,
        name,
        working_dir,
        attach,
        artifacts,
        build: args.build,
        build_id: args.build_id,
    };
    let (mut client, id, name) = place_and_spawn(&args.client, start, width).await?;
    let recording = match (&args.record, early_tap) {
        (Some(file), Some(tap)) => Some(start_recording(&args, file, tap).await?),
        _ => None,
    };
    for line in client.take_early_logs() {
        print_line(line, width);
    }
    if !attach {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let code = follow(&mut client, &name, id, width).await?;
    if let (Some((task, started)), Some(file)) = (recording, &args.record) {
        let (recorder, dropped) = task.await.context("the recorder failed")??;
        super::record::finish(recorder, &dropped, started, file)?;
    }
    Ok(code)
}

/// The recorder of `--record`: `tap` (asked for before the start, on its own connection),
/// written until the dataflow ends.
#[allow(clippy::type_complexity)]
async fn start_recording(
    args: &Args,
    file: &std::path::Path,
    mut tap: super::tap_stream::TapStream,
) -> anyhow::Result<(
    tokio::task::JoinHandle<anyhow::Result<(Recorder, BTreeMap<String, u64>)>>,
    std::time::Instant,
)> {
    tap.wait_started().await?;
    let split = args.split_size.map(|s| s.0);
    let mut recorder = Recorder::create(file, args.compression, split)?;
    if let Ok(dataflow) = std::fs::canonicalize(&args.dataflow) {
        super::record::note_dataflow(&mut recorder, &dataflow)?;
    }
    eprintln!(
        "recording {} output(s) into {}",
        tap.outputs.len(),
        file.display()
    );
    let never = std::future::pending::<()>();
    let task = tokio::spawn(super::record::write_tap(tap, recorder, never));
    Ok((task, std::time::Instant::now()))
}

/// Asks the coordinator to start the dataflow (printing the daemons' build output meanwhile);
/// returns the connection, the dataflow's id and its name.
async fn place_and_spawn(
    args: &ClientArgs,
    start: StartDataflow,
    width: usize,
) -> anyhow::Result<(Client, uuid::Uuid, String)> {
    let progress = crate::output::Progress::start("placing and spawning the dataflow");
    let mut client = Client::connect(args).await?;
    // Build output of the daemons (`--build`) is printed as it comes.
    let mut print = |line| print_line(line, width);
    let started = client
        .call_idempotent_streaming(ControlRequest::Start(start), Some(&mut print))
        .await;
    progress.finish(started.is_ok());
    match started? {
        ControlReply::Started {
            id,
            name,
            placement,
        } => {
            let mut machines: Vec<&String> = placement.values().collect();
            machines.sort();
            machines.dedup();
            eprintln!(
                "dataflow `{name}` ({id}) started: {} node(s) on {}",
                placement.len(),
                machines
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok((client, id, name))
        }
        other => bail!("unexpected reply {other:?}"),
    }
}

/// Attached: prints the node logs until the dataflow ends; the first Ctrl-C stops it, the second
/// detaches.
async fn follow(
    client: &mut Client,
    name: &str,
    id: uuid::Uuid,
    width: usize,
) -> anyhow::Result<ExitCode> {
    let mut ctrl_c = 0;
    loop {
        tokio::select! {
            reply = client.next() => match reply? {
                ControlReply::Log(line) => print_line(line, width),
                ControlReply::Finished { outcome, .. } => return Ok(report(name, id, &outcome)),
                ControlReply::Stopped { .. } => {}
                ControlReply::Error(e) => eprintln!("error: {e}"),
                other => tracing::debug!("ignoring {other:?}"),
            },
            _ = tokio::signal::ctrl_c() => {
                ctrl_c += 1;
                if ctrl_c > 1 {
                    eprintln!("detached; the dataflow is still stopping (see `adora list`)");
                    return Ok(ExitCode::from(130));
                }
                eprintln!("stopping dataflow `{name}` (press Ctrl-C again to detach)...");
                client.send(ControlRequest::Stop { dataflow: id.to_string(), grace: None }).await?;
            }
        }
    }
}

/// Prints the outcome of a dataflow and turns it into an exit code.
pub fn report(name: &str, id: uuid::Uuid, outcome: &DataflowOutcome) -> ExitCode {
    for (node, result) in &outcome.nodes {
        match result {
            NodeResult::Failed {
                reason,
                stderr_tail,
            } => {
                eprintln!("node `{node}` failed: {reason}");
                for line in stderr_tail {
                    eprintln!("    {line}");
                }
            }
            NodeResult::Terminated { signal } => {
                eprintln!("warning: node `{node}` did not exit after Stop in time and was terminated with {signal}")
            }
            _ => {}
        }
    }
    if outcome.is_success() {
        eprintln!("dataflow `{name}` ({id}) finished successfully");
        ExitCode::SUCCESS
    } else {
        eprintln!("dataflow `{name}` ({id}) failed");
        ExitCode::from(1)
    }
}
