//! `adora-bench`: measures Adora's local data plane against the raw baseline on this machine.
//!
//! It runs the raw baseline (`adora-bench-raw`: two plain processes, Unix socket + shared memory),
//! then `adora run examples/benchmark/dataflow.yml` (sender → sink on one daemon) with the same plan,
//! collects the report lines both receivers print, and prints a table (optionally CSV) with Adora's
//! figures as ratios to the baseline.
//!
//! `--placement python` runs the Python nodes of `examples/benchmark/python/` (see [`python`]).
//!
//! `adora-bench control-plane` measures the control plane instead (see [`control_plane`]).

mod control_plane;
mod distributed;
mod local;
mod python;
mod recording;
mod report;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::Duration,
};

use anyhow::{bail, Context};
use benchmark_common::{parse_sizes, Plan, Report};
use clap::{Parser, Subcommand, ValueEnum};

/// Measure latency and throughput of Adora's data plane against the raw baseline (or, with
/// `control-plane`, the start time of large dataflows and the coordinator's cost).
#[derive(Debug, Parser)]
#[command(
    name = "adora-bench",
    args_conflicts_with_subcommands = true,
    after_help = "Build first (from the repository root):\n  cargo build --release -p adora-cli -p benchmark-sender -p benchmark-sink -p benchmark-raw -p benchmark-idle -p benchmark-net -p adora-benchmark\nthen:\n  target/release/adora-bench --csv bench.csv\n  target/release/adora-bench --quick\n  target/release/adora-bench control-plane --csv control.csv\n`--placement python` also needs the adora Python package: pip install ./apis/python/node numpy"
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    data_plane: Args,
}

/// What to measure instead of the data plane.
#[derive(Debug, Subcommand)]
enum Mode {
    /// Time from `adora start` to every node running (10…1000 nodes, 1 or 3 daemons), and the
    /// coordinator's CPU and memory with many simulated daemons heartbeating.
    ControlPlane(control_plane::Args),
}

/// Options of both benchmarks.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// Quick mode for CI: few samples, small sizes (proves the benchmark works end to end).
    #[arg(long)]
    pub quick: bool,
    /// Also write the results as CSV to this file.
    #[arg(long, value_name = "PATH")]
    pub csv: Option<PathBuf>,
    /// The `adora` binary [default: `adora` next to this binary].
    #[arg(long, value_name = "PATH")]
    adora: Option<PathBuf>,
}

impl Common {
    /// The `adora` binary to benchmark.
    pub fn adora(&self) -> anyhow::Result<PathBuf> {
        match &self.adora {
            Some(p) => Ok(p.clone()),
            None => sibling("adora"),
        }
    }
}

/// Options of the data-plane benchmark.
#[derive(Debug, clap::Args)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// The same-daemon dataflow [default: examples/benchmark/dataflow.yml, with the sender and
    /// sink next to this binary].
    #[arg(long, value_name = "PATH")]
    dataflow: Option<PathBuf>,
    /// The raw baseline binary [default: adora-bench-raw next to this binary].
    #[arg(long, value_name = "PATH")]
    raw: Option<PathBuf>,
    /// Where sender and sink run (repeatable).
    #[arg(long, value_enum, default_values_t = [Placement::SameDaemon])]
    placement: Vec<Placement>,
    /// Payload sizes, comma-separated (e.g. `0,8,4K,4MiB`) [default: 0 B … 40 MiB].
    #[arg(long, value_name = "LIST")]
    sizes: Option<String>,
    /// Timed latency samples per size.
    #[arg(long)]
    samples: Option<usize>,
    /// Minimum gap between latency samples (e.g. `2ms`).
    #[arg(long, value_parser = humantime_ms)]
    pace: Option<Duration>,
    /// Duration of the back-to-back throughput phase per size (e.g. `1s`).
    #[arg(long, value_parser = humantime_ms)]
    throughput_time: Option<Duration>,
    /// Skip the raw baseline (no ratios).
    #[arg(long)]
    no_baseline: bool,
    /// Measure everything this many times, alternating (baseline, placements, baseline, ...),
    /// and report each figure's median over the rounds: on a noisy machine one run's ratios move
    /// with whatever else the machine did meanwhile. (With `--record`, the recorder's own line
    /// is the last round's.)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=100))]
    rounds: u16,
    /// Also run the same-daemon dataflow with a recorder attached (`adora run --record`,
    /// lossless, zstd) and compare: p50 and msgs/s with and without, and the recorder's MiB/s.
    #[arg(long)]
    record: bool,
    /// With `--record`: a lossy recorder (`adora run --record --lossy`), which drops and counts
    /// what it cannot keep up with instead of slowing the sender down.
    #[arg(long, requires = "record")]
    record_lossy: bool,
    /// Run the daemons of `two-daemons` and `zenoh` with their default mutual TLS (over QUIC,
    /// or `--zenoh-transport tls`). Without it they run with `--insecure-zenoh` (plain TCP), like
    /// the plain-Zenoh and TCP baselines, so that the ratios compare the same transport; with it
    /// the difference is what encryption costs.
    #[arg(long)]
    zenoh_tls: bool,
    /// With `two-daemons` and `zenoh`: `poll: spin` on the sink's inputs (it busy-polls the lanes
    /// its daemon's Zenoh callback writes into, a core for latency). The rows are labelled
    /// `… spin`.
    #[arg(long)]
    sink_spin: bool,
    /// Sinks of the `fan-out` placement (its rows are labelled `fan-out xN`). With as many sinks
    /// as cores, each gets a core of its own.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    fan_out_sinks: u16,
    /// With `--zenoh-tls`: the encrypted transport the daemons connect with, `quic` or `tls`.
    #[arg(
        long,
        value_name = "quic|tls",
        default_value = "quic",
        requires = "zenoh_tls"
    )]
    zenoh_transport: String,
}

/// Where the sender and the sink run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Placement {
    /// Both on one daemon (`adora run`).
    SameDaemon,
    /// Two daemons on this machine (needs the coordinator).
    TwoDaemons,
    /// Two test hosts connected through Zenoh.
    Zenoh,
    /// Python sender → Python sink and Rust sender → Python sink, on one daemon (needs the
    /// `adora` Python package).
    Python,
    /// One sender, eight sinks on one daemon (`--fan-out-sinks`; each row: the slowest sink).
    FanOut,
    /// Same daemon with `ADORA_LOCAL_LANES=0`: every message through the daemon.
    DaemonPath,
    /// Same daemon with `poll: spin` on the sink's inputs (it busy-polls its lanes).
    Spin,
}

impl Placement {
    fn label(self) -> &'static str {
        match self {
            Placement::SameDaemon => "same-daemon",
            Placement::TwoDaemons => "two-daemons",
            Placement::Zenoh => "zenoh",
            Placement::Python => "python",
            Placement::FanOut => "fan-out",
            Placement::DaemonPath => "daemon-path",
            Placement::Spin => "spin",
        }
    }
}

/// Accepts `2ms`, `500us`, `1s` (a small subset of humantime, to keep the runner lean).
fn humantime_ms(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` needs a unit (us, ms, s)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("`{s}` is not a duration"))?;
    match unit {
        "us" | "µs" => Ok(Duration::from_micros(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        _ => Err(format!("`{s}`: unknown unit `{unit}` (us, ms, s)")),
    }
}

/// A binary next to this one (release runner → release binaries, debug → debug).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name(name))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.mode {
        Some(Mode::ControlPlane(args)) => control_plane::run(args),
        None => run(cli.data_plane),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut plan = if args.common.quick {
        Plan::quick()
    } else {
        Plan::default()
    };
    if let Some(sizes) = &args.sizes {
        plan.sizes = parse_sizes(sizes).map_err(anyhow::Error::msg)?;
    }
    if let Some(n) = args.samples {
        plan.samples = n;
    }
    if let Some(p) = args.pace {
        plan.pace = p;
    }
    if let Some(t) = args.throughput_time {
        plan.throughput_time = t;
    }
    let machine = report::Machine::detect();
    let mut results = report::Results::new(machine, plan.clone(), args.rounds);
    let adora = args.common.adora()?;
    // Keeps the generated same-daemon dataflow until the end of the run.
    let generated = distributed::tempdir()?;
    let mut recorder = None;
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            eprintln!("round {round} of {}", args.rounds);
        }
        recorder = run_round((&args, &adora, generated.path()), &plan, &mut results)?;
    }

    print!("{}", results.table());
    if let Some(recorder) = &recorder {
        print!("{}", recording::compare(&results, &plan, recorder));
    }
    if let Some(path) = &args.common.csv {
        std::fs::write(path, results.csv())
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    results.check_complete()
}

/// The baseline and every placement once, into `results`; returns what a recorder wrote (with
/// `--record`).
fn run_round(
    (args, adora, generated): (&Args, &Path, &Path),
    plan: &Plan,
    results: &mut report::Results,
) -> anyhow::Result<Option<recording::Recorder>> {
    let mut recorder = None;
    if !args.no_baseline {
        let raw = match &args.raw {
            Some(p) => p.clone(),
            None => sibling("adora-bench-raw")?,
        };
        eprintln!("running the raw baseline ({})...", raw.display());
        results.add("raw", run_raw(&raw, plan)?);
    }
    let mut placements = args.placement.clone();
    placements.dedup();
    for placement in placements {
        match placement {
            Placement::SameDaemon => {
                let dataflow = match &args.dataflow {
                    Some(p) => p.clone(),
                    None => same_daemon_dataflow(generated)?,
                };
                let record = args.record.then_some((generated, args.record_lossy));
                recorder = same_daemon(adora, &dataflow, plan, record, results)?;
            }
            Placement::TwoDaemons | Placement::Zenoh => {
                run_network(placement, (adora, plan, args), results)
            }
            Placement::Python => run_python(adora, generated, plan, results),
            Placement::FanOut | Placement::DaemonPath | Placement::Spin => {
                let label = match placement {
                    Placement::FanOut => format!("fan-out x{}", args.fan_out_sinks),
                    _ => placement.label().to_owned(),
                };
                eprintln!("running adora with placement `{label}`...");
                let (dataflow, lanes) = match placement {
                    Placement::FanOut => {
                        let sinks = usize::from(args.fan_out_sinks);
                        (local::fan_out_dataflow(generated, sinks)?, true)
                    }
                    Placement::Spin => (local::spin_dataflow(generated)?, true),
                    _ => (same_daemon_dataflow(generated)?, false),
                };
                results.add(&label, local::run(adora, &dataflow, plan, lanes)?);
            }
        }
    }
    Ok(recorder)
}

/// The same-daemon placement, and with `record` again with a recorder attached (its file in that
/// directory; lossy or not); returns what the recorder wrote.
fn same_daemon(
    adora: &Path,
    dataflow: &Path,
    plan: &Plan,
    record: Option<(&Path, bool)>,
    results: &mut report::Results,
) -> anyhow::Result<Option<recording::Recorder>> {
    eprintln!(
        "running adora ({} run {})...",
        adora.display(),
        dataflow.display()
    );
    let label = Placement::SameDaemon.label();
    results.add(label, run_adora(adora, dataflow, plan)?);
    let Some((dir, lossy)) = record else {
        return Ok(None);
    };
    eprintln!("running adora with a recorder attached...");
    let recorded = recording::run(adora, dataflow, plan, &dir.join("bench.mcap"), lossy)?;
    results.add(recording::LABEL, recorded.reports);
    Ok(Some(recorded.recorder))
}

/// A cross-machine placement (`two-daemons`, `zenoh`) with its baselines, or a line saying why
/// it was skipped.
fn run_network(
    placement: Placement,
    (adora, plan, args): (&Path, &Plan, &Args),
    results: &mut report::Results,
) {
    eprintln!("running adora with placement `{}`...", placement.label());
    let daemon_args: &[&str] = if args.zenoh_tls {
        &["--zenoh-transport", &args.zenoh_transport]
    } else {
        &["--insecure-zenoh"]
    };
    let how = distributed::How {
        daemon_args,
        baseline: !args.no_baseline,
        spin: args.sink_spin,
    };
    let measured = if placement == Placement::TwoDaemons {
        distributed::two_daemons(adora, plan, &how)
    } else {
        distributed::hosts(adora, plan, &how)
    };
    let label = match args.sink_spin {
        true => format!("{} spin", placement.label()),
        false => placement.label().to_owned(),
    };
    match measured {
        Ok(m) => results.add_network(&label, m),
        Err(e) => eprintln!("placement `{}` skipped: {e:#}", placement.label()),
    }
}

/// The `python` placement: both pairings, or a line saying why it was skipped.
fn run_python(adora: &Path, dir: &Path, plan: &Plan, results: &mut report::Results) {
    if let Err(e) = python::check_installed() {
        eprintln!("placement `python` skipped: {e:#}");
        return;
    }
    for sender in [python::Sender::Python, python::Sender::Rust] {
        eprintln!("running adora with placement `{}`...", sender.label());
        match python::run(adora, dir, sender, plan) {
            Ok(reports) => results.add(sender.label(), reports),
            Err(e) => eprintln!("placement `{}` skipped: {e:#}", sender.label()),
        }
    }
}

/// `examples/benchmark/dataflow.yml` with its sender and sink replaced by the ones next to this
/// binary (so a debug runner runs debug nodes), written into `dir`.
fn same_daemon_dataflow(dir: &Path) -> anyhow::Result<PathBuf> {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dataflow.yml");
    let yaml = std::fs::read_to_string(&template)
        .with_context(|| format!("cannot read {}", template.display()))?;
    let bin_dir = sibling("adora")?
        .parent()
        .context("this binary has a directory")?
        .display()
        .to_string();
    let yaml = yaml.replace("../../target/release", &bin_dir);
    let path = dir.join("dataflow.yml");
    std::fs::write(&path, yaml)?;
    Ok(path)
}

/// Runs a receiver and a sender process (the receiver first) and collects the receiver's reports.
fn run_pair(mut receiver: Command, mut sender: Command) -> anyhow::Result<Vec<Report>> {
    let mut receiver = receiver
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the receiver (build it first)")?;
    let stdout = receiver
        .stdout
        .take()
        .context("the receiver's stdout is piped")?;
    let sender_status = match sender.spawn() {
        Ok(mut sender) => sender.wait(),
        Err(e) => Err(e),
    };
    // A receiver whose sender failed would wait for it forever. (Its few report lines fit in the
    // pipe until they are read below.)
    if !matches!(&sender_status, Ok(s) if s.success()) {
        let _ = receiver.kill();
        let _ = receiver.wait();
        bail!("the sender failed: {sender_status:?}");
    }
    let reports = collect_reports(stdout)?;
    let receiver_status = receiver.wait()?;
    if !receiver_status.success() {
        bail!("the receiver failed: {receiver_status}");
    }
    Ok(reports)
}

/// Reads report lines from a child's stdout; other lines are passed through to stderr.
pub(crate) fn collect_reports(stdout: impl std::io::Read) -> anyhow::Result<Vec<Report>> {
    let mut reports = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        match Report::from_line(&line) {
            Some(report) => reports.push(report.with_context(|| format!("bad report: {line}"))?),
            None => eprintln!("{line}"),
        }
    }
    Ok(reports)
}

fn run_raw(raw: &Path, plan: &Plan) -> anyhow::Result<Vec<Report>> {
    let socket = std::env::temp_dir().join(format!("adora-bench-raw-{}.sock", std::process::id()));
    let mut receiver = Command::new(raw);
    receiver.arg("receiver").arg(&socket);
    let mut sender = Command::new(raw);
    sender.arg("sender").arg(&socket).envs(plan.to_env());
    run_pair(receiver, sender).with_context(|| format!("raw baseline ({})", raw.display()))
}

/// The `adora run` of the same-daemon benchmark (the caller adds `--record` and pipes stderr).
pub(crate) fn adora_run_command(adora: &Path, dataflow: &Path, plan: &Plan) -> Command {
    let mut command = Command::new(adora);
    command.arg("run").arg(dataflow);
    for (key, value) in plan.to_env() {
        command.arg("--env").arg(format!("{key}={value}"));
    }
    command.env("NO_COLOR", "1").stdout(Stdio::piped());
    command
}

fn run_adora(adora: &Path, dataflow: &Path, plan: &Plan) -> anyhow::Result<Vec<Report>> {
    run_command(adora, adora_run_command(adora, dataflow, plan))
}

/// Runs an `adora run` command (see [`adora_run_command`]) and collects the sinks' reports.
pub(crate) fn run_command(adora: &Path, mut command: Command) -> anyhow::Result<Vec<Report>> {
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {} (build it first)", adora.display()))?;
    let stdout = child.stdout.take().context("adora's stdout is piped")?;
    let reports = collect_reports(stdout)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("`adora run` failed ({status})");
    }
    Ok(reports)
}
