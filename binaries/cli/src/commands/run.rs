//! `adora run`: run a dataflow on this machine without a coordinator, printing node output.

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode, time::Duration};

use adora_daemon::{DaemonConfig, DataflowSpec};
use adora_message::control::NodeResult;
use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Run a dataflow on this machine until its nodes finish, Ctrl-C, or `--stop-after`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora run examples/rust-dataflow/dataflow.yml --build\n  adora run dataflow.yml --stop-after 5s --env LOG_LEVEL=debug\n  adora run dataflow.yml --record run.mcap --lossy"
)]
pub struct Args {
    /// The dataflow file.
    dataflow: PathBuf,
    /// Run every node's `build` command first (not done by default: builds are often no-ops).
    #[arg(long)]
    build: bool,
    /// Stop the dataflow gracefully after this long (e.g. `5s`, `1m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    stop_after: Option<Duration>,
    /// Extra environment variable for every node (repeatable), e.g. `--env RUST_LOG=debug`.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Time a node has to exit after its Stop event before it gets SIGTERM.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// Time every node has to connect to the runtime after it was started.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    #[command(flatten)]
    finish: super::common::ExitWhenNodesFinish,
    /// Record every output into this MCAP file from the first message on (lossless: a
    /// recorder that cannot keep up slows the senders down; see `--lossy`).
    #[arg(long, value_name = "FILE.mcap")]
    record: Option<PathBuf>,
    /// Chunk compression of `--record`.
    #[arg(long, value_enum, default_value = "zstd", requires = "record")]
    compression: super::recording::writer::RecordCompression,
    /// Split `--record` into FILE-001.mcap, FILE-002.mcap, ... of about this size each (e.g.
    /// `1GiB`; counted before compression).
    #[arg(long, value_name = "SIZE", requires = "record", value_parser = super::record::parse_split_size)]
    split_size: Option<adora_core::descriptor::ByteSize>,
    /// Let `--record` drop messages instead of slowing the senders down when it cannot keep up:
    /// every drop is counted, printed at the end and written into the file.
    #[arg(long, requires = "record")]
    lossy: bool,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("`{s}` has an empty variable name"));
    }
    if adora_core::RESERVED_ENV_VARS.contains(&k) {
        return Err(format!(
            "`{k}` is set by the runtime and cannot be overridden"
        ));
    }
    Ok((k.to_owned(), v.to_owned()))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut descriptor = match super::common::load_descriptor(&args.dataflow) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    if let Some(exit) = args.finish.exit_when_nodes_finish {
        descriptor.exit_when_nodes_finish = Some(exit);
    }
    let dir = super::common::dataflow_dir(&args.dataflow)?;
    if args.build {
        super::local_build::build_all(&mut descriptor, &dir).await?;
    } else {
        let fetch = adora_daemon::git_source::Fetch::No;
        super::local_build::check_out_git_nodes(&mut descriptor, fetch).await?;
    }
    let record = args.record.map(|file| super::record::LocalRecording {
        file,
        compression: args.compression,
        split_size: args.split_size.map(|s| s.0),
        dataflow: std::fs::canonicalize(&args.dataflow).ok(),
        lossy: args.lossy,
    });
    let plan = RunPlan {
        descriptor,
        dir,
        env: args.env.into_iter().collect(),
        grace: args.grace,
        connect_timeout: args.connect_timeout,
        stop_after: args.stop_after,
        record,
    };
    run_plan(plan).await
}

/// A loaded dataflow and how to run it on this machine (`adora run`, `adora replay`).
pub struct RunPlan {
    /// The validated (and built) dataflow.
    pub descriptor: adora_core::Descriptor,
    /// The directory its relative paths are resolved against.
    pub dir: PathBuf,
    /// Extra environment of every node.
    pub env: BTreeMap<String, String>,
    /// Time a node has to exit after Stop.
    pub grace: Duration,
    /// Time every node has to connect.
    pub connect_timeout: Duration,
    /// Stop after this long.
    pub stop_after: Option<Duration>,
    /// Record every output.
    pub record: Option<super::record::LocalRecording>,
}

/// Runs `plan` until its nodes finish (or a stop), printing node output; the exit code says
/// whether every node succeeded.
pub async fn run_plan(plan: RunPlan) -> anyhow::Result<ExitCode> {
    let descriptor = plan.descriptor;
    let id = uuid::Uuid::new_v4();
    let log_dir = super::common::state_dir().join("runs").join(id.to_string());
    let run_dir =
        std::env::temp_dir().join(format!("adora-run-{}", &id.simple().to_string()[..12]));
    let mut config = DaemonConfig::new(run_dir.clone());
    config.stop_grace = plan.grace;
    config.node_connect_timeout = plan.connect_timeout;
    let spec = DataflowSpec {
        id,
        descriptor: descriptor.clone(),
        working_dir: plan.dir,
        env: plan.env,
        log_dir: log_dir.clone(),
        local_nodes: None,
    };
    eprintln!(
        "dataflow {id}: {} nodes, logs in {}",
        descriptor.nodes.len(),
        log_dir.display()
    );

    let started = std::time::Instant::now();
    let shutdown = CancellationToken::new();
    spawn_stop_triggers(shutdown.clone(), plan.stop_after);
    let (log_tx, mut log_rx) = mpsc::unbounded_channel();
    let width = crate::output::id_width(&descriptor);
    let printer = tokio::spawn(async move {
        while let Some(line) = log_rx.recv().await {
            crate::output::print_log_line(&line, width);
        }
    });
    let (tap, recording) = match &plan.record {
        Some(record) => {
            let (tap, rx) = adora_daemon::tap::Tap::new(id, None, record.lossy);
            let recording = super::record::record_local(record, rx)?;
            let dropped = tap.drop_counts();
            (Some(tap), Some((recording, dropped)))
        }
        None => (None, None),
    };
    let result = adora_daemon::run_dataflow_tapped(config, spec, log_tx, shutdown, tap).await;
    let _ = printer.await;
    if let (Some((recording, dropped)), Some(record)) = (recording, &plan.record) {
        let recorded = recording.await.context("the recorder failed")?;
        let dropped = adora_daemon::tap::read_drops(&dropped);
        super::record::finish(recorded?, &dropped, started, &record.file)?;
    }
    let _ = std::fs::remove_dir_all(&run_dir);
    let result = result.context("the dataflow could not run")?;

    print_notes(&result, plan.grace);
    if result.is_success() {
        eprintln!("dataflow {id} finished successfully");
        Ok(ExitCode::SUCCESS)
    } else {
        let n = result.failures().count();
        anyhow::bail!(
            "dataflow {id} failed: {n} node{} failed\n{}",
            if n == 1 { "" } else { "s" },
            result.to_string().trim_end()
        )
    }
}

/// What the user should know about a finished run besides success: terminated nodes, restarts,
/// drops.
fn print_notes(result: &adora_daemon::DataflowResult, grace: Duration) {
    for (node, outcome) in &result.outcome.nodes {
        if let NodeResult::Terminated { signal } = outcome {
            eprintln!("warning: node `{node}` did not exit after Stop within {} and was terminated with {signal}", humantime::format_duration(grace));
        }
    }
    for (node, restarts) in result.restarts.iter().filter(|(_, n)| **n > 0) {
        eprintln!("note: node `{node}` was restarted {restarts} time(s) by its restart policy");
    }
    for (node, counters) in &result.counters {
        for (input, dropped) in &counters.dropped {
            eprintln!("note: input `{node}/{input}` dropped {dropped} message(s) because its queue was full");
        }
    }
}

/// Cancels `shutdown` on SIGINT/SIGTERM or after `stop_after`; a second signal exits at once
/// (nodes then die with us through their parent-death signal).
fn spawn_stop_triggers(shutdown: CancellationToken, stop_after: Option<Duration>) {
    if let Some(after) = stop_after {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            shutdown.cancel();
        });
    }
    tokio::spawn(async move {
        let Ok(mut signals) = super::common::StopSignals::install() else {
            tracing::warn!("cannot install signal handlers; Ctrl-C will kill nodes abruptly");
            return;
        };
        signals.recv().await;
        eprintln!("stopping dataflow (press Ctrl-C again to kill it)...");
        shutdown.cancel();
        signals.recv().await;
        eprintln!("killed");
        std::process::exit(130);
    });
}
