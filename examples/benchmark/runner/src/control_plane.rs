//! `adora-bench control-plane`: how the control plane scales.
//!
//! 1. **Start time.** A real coordinator and real daemons on this machine (machine ids `a`, `b`,
//!    `c`, ...). For every dataflow size N and daemon count D the runner generates a dataflow of
//!    N trivial nodes (`adora-bench-idle`) spread round-robin over D daemons with
//!    `_unstable_deploy.machine`, runs `adora start --detach`, and waits until every node is
//!    running. "Running" is the node's own signal: `AdoraNode::init_from_env` returned (the node
//!    registered with its daemon and was released from the start barrier, which opens once every
//!    node of the dataflow connected); the node then writes the wall-clock time into a ready
//!    file. The figure is the latest of those times minus the moment the runner ran
//!    `adora start`. Then `adora stop` must end the dataflow (`finished` in `adora list`).
//! 2. **Idle fleet.** A fresh coordinator with S simulated daemons (see
//!    [`adora_test_support::simulator`]) registered and heartbeating, running one dataflow with
//!    K nodes on each; the coordinator's CPU (utime + stime from `/proc/<pid>/stat`) over a
//!    window, and its resident memory (`VmRSS`, `VmHWM`).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use adora_test_support::{
    run_with_timeout,
    services::Coordinator,
    simulator::{machine_ids, SimulatedFleet, HEARTBEAT_INTERVAL},
    wait_until, ChildGuard,
};
use anyhow::{bail, Context};

use crate::report::Machine;

/// Longest one `adora start` / `adora stop` / `adora list` may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest the nodes of a started dataflow may take to all be running.
const RUNNING_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the runner looks for ready files.
const READY_POLL: Duration = Duration::from_millis(2);
/// Variable naming the directory the idle node writes its ready file into.
const READY_DIR_ENV: &str = "ADORA_BENCH_READY_DIR";
/// Targets of the issue, reported (never asserted).
const TARGET_START: Duration = Duration::from_secs(2);
const TARGET_CPU_PERCENT: f64 = 5.0;
const TARGET_RSS_MIB: f64 = 100.0;

/// Measure start time of large dataflows and the coordinator's cost with many daemons.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Small sizes, one start each, 20 simulated daemons for a few seconds (CI: proves the
    /// benchmark works end to end).
    #[arg(long)]
    quick: bool,
    /// Also write the results as CSV to this file.
    #[arg(long, value_name = "PATH")]
    csv: Option<PathBuf>,
    /// The `adora` binary [default: `adora` next to this binary].
    #[arg(long, value_name = "PATH")]
    adora: Option<PathBuf>,
    /// Dataflow sizes in nodes, comma-separated [default: 10,100,1000; quick: 10,100].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    nodes: Option<Vec<usize>>,
    /// Daemon counts the nodes are spread over, comma-separated [default: 1,3].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    daemons: Option<Vec<usize>>,
    /// Starts per size and daemon count [default: 3; quick: 1].
    #[arg(long)]
    repeat: Option<usize>,
    /// Simulated daemons for the coordinator's CPU and memory; 0 skips it [default: 200;
    /// quick: 20].
    #[arg(long, value_name = "N")]
    simulated_daemons: Option<usize>,
    /// Nodes each simulated daemon runs (and reports in its heartbeats).
    #[arg(long, default_value_t = 5, value_name = "N")]
    nodes_per_simulated_daemon: usize,
    /// How long the coordinator's CPU is measured (e.g. `30s`) [default: 30s; quick: 6s].
    #[arg(long, value_parser = crate::humantime_ms)]
    window: Option<Duration>,
}

/// One start of one dataflow.
#[derive(Debug, Clone)]
struct StartRun {
    nodes: usize,
    daemons: usize,
    run: usize,
    /// `adora start --detach` returned (placed, and every daemon answered `Spawned`).
    spawned: Duration,
    /// The first node was running.
    first_running: Duration,
    /// Every node was running.
    running: Duration,
    /// `adora stop` returned (every node ended).
    stopped: Duration,
}

/// The coordinator with a fleet of simulated daemons.
#[derive(Debug, Clone)]
struct FleetRun {
    daemons: usize,
    nodes: usize,
    window: Duration,
    cpu_percent: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
    heartbeats: u64,
    nodes_reported: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let quick = args.quick;
    let adora = match &args.adora {
        Some(p) => p.clone(),
        None => crate::sibling("adora")?,
    };
    let idle = crate::sibling("adora-bench-idle")?;
    for bin in [&adora, &idle] {
        if !bin.exists() {
            bail!("{} is missing (build it first)", bin.display());
        }
    }
    let sizes = args.nodes.clone().unwrap_or_else(|| {
        if quick {
            vec![10, 100]
        } else {
            vec![10, 100, 1000]
        }
    });
    let daemon_counts = args.daemons.clone().unwrap_or_else(|| vec![1, 3]);
    let repeat = args.repeat.unwrap_or(if quick { 1 } else { 3 }).max(1);
    let simulated = args
        .simulated_daemons
        .unwrap_or(if quick { 20 } else { 200 });
    let window = args.window.unwrap_or(if quick {
        Duration::from_secs(6)
    } else {
        Duration::from_secs(30)
    });

    let machine = Machine::detect();
    let mut starts = Vec::new();
    if !sizes.is_empty() && !daemon_counts.is_empty() {
        let max_daemons = daemon_counts.iter().copied().max().unwrap_or(1);
        let cluster = Cluster::start(&adora, max_daemons)?;
        for &daemons in &daemon_counts {
            for &nodes in &sizes {
                for run in 1..=repeat {
                    eprintln!("starting {nodes} nodes on {daemons} daemon(s), run {run}...");
                    starts.push(cluster.start_run(&idle, nodes, daemons, run)?);
                }
            }
        }
    }
    let fleet = if simulated > 0 {
        eprintln!("registering {simulated} simulated daemons, measuring for {window:?}...");
        Some(fleet_run(
            &adora,
            &idle,
            simulated,
            args.nodes_per_simulated_daemon,
            window,
        )?)
    } else {
        None
    };

    let report = Report {
        machine,
        repeat,
        starts,
        fleet,
    };
    print!("{}", report.table());
    if let Some(path) = &args.csv {
        std::fs::write(path, report.csv())
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// A coordinator and `daemons` real daemons with machine ids `a`, `b`, ... on this machine.
struct Cluster {
    state: tempfile::TempDir,
    coordinator: Coordinator,
    _daemons: Vec<ChildGuard>,
}

/// Machine id of the `i`-th local daemon.
fn daemon_id(i: usize) -> String {
    char::from(b'a' + (i % 26) as u8).to_string()
}

impl Cluster {
    fn start(adora: &Path, daemons: usize) -> anyhow::Result<Self> {
        let state = crate::distributed::tempdir()?;
        let coordinator = Coordinator::start_with(adora, state.path(), "127.0.0.1");
        let guards = (0..daemons)
            .map(|i| coordinator.daemon_local(&daemon_id(i), &[]))
            .collect();
        coordinator.wait_for_daemons(daemons);
        Ok(Cluster {
            state,
            coordinator,
            _daemons: guards,
        })
    }

    fn cli(&self, args: &[&str]) -> anyhow::Result<adora_test_support::Output> {
        let mut cmd = self.coordinator.cli();
        cmd.args(args);
        let out = run_with_timeout(cmd, CLI_TIMEOUT);
        if !out.status.success() {
            bail!("`adora {}` failed:\n{out}", args.join(" "));
        }
        Ok(out)
    }

    fn start_run(
        &self,
        idle: &Path,
        nodes: usize,
        daemons: usize,
        run: usize,
    ) -> anyhow::Result<StartRun> {
        let name = format!("cp-{nodes}-{daemons}-{run}");
        let ready = self.state.path().join(format!("ready-{name}"));
        std::fs::create_dir_all(&ready)?;
        let file = self.state.path().join(format!("{name}.yml"));
        std::fs::write(
            &file,
            idle_dataflow(idle, &ready, nodes, |i| daemon_id(i % daemons)),
        )?;
        let file = file.display().to_string();

        let t0 = SystemTime::now();
        let started = Instant::now();
        self.cli(&["start", &file, "--detach", "--name", &name])?;
        let spawned = started.elapsed();
        let times = wait_ready(&ready, nodes)?;
        let since = |ns: u128| {
            let t0 = t0.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
            Duration::from_nanos(u64::try_from(ns.saturating_sub(t0)).unwrap_or(u64::MAX))
        };
        let first_running = since(times.iter().copied().min().unwrap_or_default());
        let running = since(times.iter().copied().max().unwrap_or_default());

        let stopping = Instant::now();
        self.cli(&["stop", &name])?;
        let stopped = stopping.elapsed();
        let status = self.dataflow_status(&name)?;
        if status != "finished" {
            bail!("dataflow `{name}` ended `{status}` after `adora stop`, not `finished`");
        }
        Ok(StartRun {
            nodes,
            daemons,
            run,
            spawned,
            first_running,
            running,
            stopped,
        })
    }

    /// The status of the dataflow called `name` in `adora list --json`.
    fn dataflow_status(&self, name: &str) -> anyhow::Result<String> {
        let out = self.cli(&["list", "--json"])?;
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&out.stdout).context("`adora list --json` is a JSON array")?;
        list.iter()
            .find(|d| d["name"] == name)
            .and_then(|d| d["status"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("`adora list` does not show `{name}`"))
    }
}

/// A dataflow of `nodes` idle nodes `n0000`, `n0001`, ..., node `i` on machine `machine(i)`.
fn idle_dataflow(
    idle: &Path,
    ready: &Path,
    nodes: usize,
    machine: impl Fn(usize) -> String,
) -> String {
    let mut yaml = String::from("nodes:\n");
    for i in 0..nodes {
        let _ = write!(
            yaml,
            "  - id: n{i:04}\n    path: {}\n    env: {{ {READY_DIR_ENV}: \"{}\" }}\n    _unstable_deploy: {{ machine: {} }}\n",
            idle.display(),
            ready.display(),
            machine(i)
        );
    }
    yaml
}

/// Waits until `nodes` ready files are in `dir`; returns their times (ns since the epoch).
fn wait_ready(dir: &Path, nodes: usize) -> anyhow::Result<Vec<u128>> {
    let count = || {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
    };
    let started = Instant::now();
    while count() < nodes {
        if started.elapsed() > RUNNING_TIMEOUT {
            bail!(
                "only {} of {nodes} nodes were running after {RUNNING_TIMEOUT:?}",
                count()
            );
        }
        std::thread::sleep(READY_POLL);
    }
    let mut times = Vec::with_capacity(nodes);
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())?;
        times.push(
            text.trim()
                .parse()
                .with_context(|| format!("bad ready file {}", entry.path().display()))?,
        );
    }
    Ok(times)
}

/// The coordinator with `daemons` simulated daemons running `per_daemon` nodes each.
fn fleet_run(
    adora: &Path,
    idle: &Path,
    daemons: usize,
    per_daemon: usize,
    window: Duration,
) -> anyhow::Result<FleetRun> {
    let state = crate::distributed::tempdir()?;
    let coordinator = Coordinator::start_with(adora, state.path(), "127.0.0.1");
    let token = std::fs::read_to_string(state.path().join("token"))
        .context("the coordinator wrote no token")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let ids = machine_ids("sim", daemons);
    let fleet = runtime
        .block_on(SimulatedFleet::start(
            &coordinator.addr,
            Some(token.trim()),
            ids.clone(),
        ))
        .context("simulated daemons cannot connect")?;
    coordinator.wait_for_daemons(daemons);

    // One dataflow with `per_daemon` nodes on every simulated daemon.
    let nodes = daemons * per_daemon;
    let file = state.path().join("fleet.yml");
    let ready = state.path().join("unused");
    std::fs::write(
        &file,
        idle_dataflow(idle, &ready, nodes, |i| ids[i / per_daemon.max(1)].clone()),
    )?;
    let cli = |args: &[&str]| -> anyhow::Result<String> {
        let mut cmd = coordinator.cli();
        cmd.args(args);
        let out = run_with_timeout(cmd, CLI_TIMEOUT);
        if !out.status.success() {
            bail!("`adora {}` failed:\n{out}", args.join(" "));
        }
        Ok(out.stdout)
    };
    cli(&[
        "start",
        &file.display().to_string(),
        "--detach",
        "--name",
        "fleet",
    ])?;

    // Warm up until every node was reported running by a heartbeat.
    let reported = || -> usize {
        cli(&["node", "list", "fleet", "--json"])
            .ok()
            .and_then(|out| serde_json::from_str::<Vec<serde_json::Value>>(&out).ok())
            .map(|nodes| nodes.iter().filter(|n| n["status"] == "running").count())
            .unwrap_or(0)
    };
    if !wait_until(HEARTBEAT_INTERVAL * 3, || reported() == nodes) {
        bail!("the coordinator did not report all {nodes} simulated nodes running");
    }

    let pid = coordinator.process.pid();
    let before = (cpu_ticks(pid)?, Instant::now(), fleet.activity());
    std::thread::sleep(window);
    let after = (cpu_ticks(pid)?, Instant::now(), fleet.activity());
    let ticks_per_s = clock_ticks_per_second();
    let cpu_s = after.0.saturating_sub(before.0) as f64 / ticks_per_s;
    let cpu_percent = 100.0 * cpu_s / (after.1 - before.1).as_secs_f64();
    let (rss_mib, peak_rss_mib) = memory_mib(pid)?;
    let nodes_reported = reported();

    cli(&["stop", "fleet"])?;
    runtime
        .block_on(fleet.shutdown())
        .map_err(|e| anyhow::anyhow!("simulated daemons failed: {e}"))?;
    Ok(FleetRun {
        daemons,
        nodes,
        window,
        cpu_percent,
        rss_mib,
        peak_rss_mib,
        heartbeats: after.2.heartbeats - before.2.heartbeats,
        nodes_reported,
    })
}

/// utime + stime of a process, in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("/proc/{pid}/stat has no field {n}"))
    };
    Ok(field(14)? + field(15)?)
}

fn clock_ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as f64,
        _ => 100.0,
    }
}

/// `VmRSS` and `VmHWM` (peak) of a process in MiB.
fn memory_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let kib = |key: &str| -> anyhow::Result<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .with_context(|| format!("/proc/{pid}/status has no {key}"))
    };
    Ok((kib("VmRSS:")? / 1024.0, kib("VmHWM:")? / 1024.0))
}

/// Everything one run measured.
struct Report {
    machine: Machine,
    repeat: usize,
    starts: Vec<StartRun>,
    fleet: Option<FleetRun>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median of a non-empty list of durations.
fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

impl Report {
    fn header(&self, comment: &str) -> String {
        format!(
            "{comment}adora-bench control-plane: CPU {} ({} cores, /proc/cpuinfo)\n{comment}plan: {} start(s) per size; a node is running once AdoraNode::init_from_env returned (connected, past the start barrier)\n",
            self.machine.cpu, self.machine.cores, self.repeat
        )
    }

    /// The (nodes, daemons) groups in measurement order.
    fn groups(&self) -> Vec<(usize, usize)> {
        let mut groups: Vec<(usize, usize)> = Vec::new();
        for s in &self.starts {
            if !groups.contains(&(s.nodes, s.daemons)) {
                groups.push((s.nodes, s.daemons));
            }
        }
        groups
    }

    fn table(&self) -> String {
        let mut out = self.header("");
        if !self.starts.is_empty() {
            let _ = writeln!(
                out,
                "\n{:>7}  {:>7}  {:>11}  {:>15}  {:>14}  {:>14}  {:>10}",
                "nodes",
                "daemons",
                "spawned ms",
                "first running",
                "all running ms",
                "(max of runs)",
                "stop ms"
            );
        }
        for (nodes, daemons) in self.groups() {
            let runs: Vec<&StartRun> = self
                .starts
                .iter()
                .filter(|s| s.nodes == nodes && s.daemons == daemons)
                .collect();
            let pick = |f: fn(&StartRun) -> Duration| median(runs.iter().map(|r| f(r)).collect());
            let max_running = runs.iter().map(|r| r.running).max().unwrap_or_default();
            let _ = writeln!(
                out,
                "{nodes:>7}  {daemons:>7}  {:>11.1}  {:>15.1}  {:>14.1}  {:>14.1}  {:>10.1}",
                ms(pick(|r| r.spawned)),
                ms(pick(|r| r.first_running)),
                ms(pick(|r| r.running)),
                ms(max_running),
                ms(pick(|r| r.stopped)),
            );
        }
        if let Some(f) = &self.fleet {
            let _ = writeln!(
                out,
                "\ncoordinator with {} simulated daemons ({} nodes, heartbeat every {:?}), over {:?}:\n  CPU {:.2}% of one core, RSS {:.1} MiB (peak {:.1} MiB), {} heartbeats received, {} nodes reported running",
                f.daemons,
                f.nodes,
                HEARTBEAT_INTERVAL,
                f.window,
                f.cpu_percent,
                f.rss_mib,
                f.peak_rss_mib,
                f.heartbeats,
                f.nodes_reported
            );
        }
        out.push_str(&self.targets());
        out
    }

    fn targets(&self) -> String {
        let mut out = String::from("\ntargets:\n");
        let thousand: Vec<&StartRun> = self.starts.iter().filter(|s| s.nodes == 1000).collect();
        if let Some(worst) = thousand.iter().map(|s| s.running).max() {
            let _ = writeln!(
                out,
                "  1000 nodes running < {TARGET_START:?} after `adora start`: worst {:.0} ms -> {}",
                ms(worst),
                met(worst < TARGET_START)
            );
        }
        if let Some(f) = &self.fleet {
            let _ = writeln!(
                out,
                "  coordinator < {TARGET_CPU_PERCENT}% of one core and < {TARGET_RSS_MIB} MiB with {} daemons: {:.2}%, {:.1} MiB -> {}",
                f.daemons,
                f.cpu_percent,
                f.rss_mib,
                met(f.cpu_percent < TARGET_CPU_PERCENT && f.rss_mib < TARGET_RSS_MIB)
            );
        }
        out
    }

    fn csv(&self) -> String {
        let mut out = self.header("# ");
        out.push_str("measurement,nodes,daemons,run,spawned_ms,first_running_ms,running_ms,stop_ms,window_s,cpu_percent,rss_mib,peak_rss_mib,heartbeats\n");
        for s in &self.starts {
            let _ = writeln!(
                out,
                "start,{},{},{},{:.3},{:.3},{:.3},{:.3},,,,,",
                s.nodes,
                s.daemons,
                s.run,
                ms(s.spawned),
                ms(s.first_running),
                ms(s.running),
                ms(s.stopped)
            );
        }
        if let Some(f) = &self.fleet {
            let _ = writeln!(
                out,
                "simulated-daemons,{},{},1,,,,,{:.1},{:.3},{:.2},{:.2},{}",
                f.nodes,
                f.daemons,
                f.window.as_secs_f64(),
                f.cpu_percent,
                f.rss_mib,
                f.peak_rss_mib,
                f.heartbeats
            );
        }
        out
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "missed"
    }
}
