//! `adora-bench control-plane`: how the control plane scales.
//!
//! 1. **Start time.** A real coordinator and real daemons on this machine (machine ids `a`, `b`,
//!    `c`, ...). For every dataflow size N and daemon count D the runner generates a dataflow of
//!    N trivial nodes (`adora-bench-idle`) spread round-robin over D daemons with
//!    `deploy.machine`, runs `adora start --detach`, and waits until every node is
//!    running. "Running" is the node's own signal: `AdoraNode::init_from_env` returned (the node
//!    registered with its daemon and was released from the start barrier, which opens once every
//!    node of the dataflow connected); the node then sends the wall-clock time in a datagram to
//!    the runner. The figure is the latest of those times minus the moment the runner ran
//!    `adora start`. Then `adora stop` must end the dataflow (`finished` in `adora list`).
//! 2. **Idle fleet.** A fresh coordinator with S simulated daemons (see
//!    [`adora_test_support::simulator`]) registered and heartbeating, running one dataflow with
//!    K nodes on each; the coordinator's CPU (utime + stime from `/proc/<pid>/stat`) over a
//!    window, and its resident memory (`VmRSS`, `VmHWM`).

use std::{
    fmt::Write as _,
    path::Path,
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

mod report;
use report::Report;

/// Longest one `adora start` / `adora stop` / `adora list` may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest the nodes of a started dataflow may take to all be running.
const RUNNING_TIMEOUT: Duration = Duration::from_secs(120);
/// Variable naming the Unix datagram socket the idle node reports to once it is running.
const READY_SOCKET_ENV: &str = "ADORA_BENCH_READY_SOCKET";
/// Targets of the issue, reported (never asserted).
const TARGET_START: Duration = Duration::from_secs(2);
const TARGET_CPU_PERCENT: f64 = 5.0;
const TARGET_RSS_MIB: f64 = 100.0;

/// Measure start time of large dataflows and the coordinator's cost with many daemons.
#[derive(Debug, clap::Args)]
pub struct Args {
    // --quick: 10 and 100 nodes, one start each, 20 simulated daemons for 6 s.
    #[command(flatten)]
    common: crate::Common,
    /// Dataflow sizes in nodes, comma-separated; 0 skips the start measurement [default:
    /// 10,100,1000; quick: 10,100].
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
    /// After every daemon registered, before the dataflow started.
    registered_rss_mib: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
    heartbeats: u64,
    nodes_reported: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let quick = args.common.quick;
    let adora = args.common.adora()?;
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
    let sizes: Vec<usize> = sizes.into_iter().filter(|&n| n > 0).collect();
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
    if let Some(path) = &args.common.csv {
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
        let ready = self.state.path().join(format!("ready-{name}.sock"));
        let socket = std::os::unix::net::UnixDatagram::bind(&ready)
            .with_context(|| format!("cannot bind {}", ready.display()))?;
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
        let times = wait_ready(&socket, nodes)?;
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
            "  - id: n{i:04}\n    path: {}\n    env: {{ {READY_SOCKET_ENV}: \"{}\" }}\n    deploy: {{ machine: {} }}\n",
            idle.display(),
            ready.display(),
            machine(i)
        );
    }
    yaml
}

/// Receives the datagrams of `nodes` distinct nodes; returns their times (ns since the epoch).
fn wait_ready(
    socket: &std::os::unix::net::UnixDatagram,
    nodes: usize,
) -> anyhow::Result<Vec<u128>> {
    let mut times = std::collections::BTreeMap::new();
    let deadline = Instant::now() + RUNNING_TIMEOUT;
    let mut buf = [0u8; 256];
    while times.len() < nodes {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "only {} of {nodes} nodes were running after {RUNNING_TIMEOUT:?}",
                times.len()
            );
        }
        socket.set_read_timeout(Some(left))?;
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) => return Err(e).context("cannot receive from the nodes"),
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let (node, ns) = text
            .split_once(' ')
            .and_then(|(node, ns)| Some((node.to_owned(), ns.parse::<u128>().ok()?)))
            .with_context(|| format!("bad ready message `{text}`"))?;
        times.insert(node, ns);
    }
    Ok(times.into_values().collect())
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let ids = machine_ids("sim", daemons);
    let fleet = runtime
        .block_on(SimulatedFleet::start(
            &coordinator.addr,
            &coordinator.auth(),
            ids.clone(),
        ))
        .context("simulated daemons cannot connect")?;
    coordinator.wait_for_daemons(daemons);
    let pid = coordinator.process.pid();
    let (registered_rss_mib, _) = memory_mib(pid)?;

    // One dataflow with `per_daemon` nodes on every simulated daemon.
    let nodes = daemons * per_daemon;
    let file = state.path().join("fleet.yml");
    let ready = state.path().join("unused.sock");
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

    let (cpu_percent, heartbeats) = observe(pid, &fleet, window)?;
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
        registered_rss_mib,
        rss_mib,
        peak_rss_mib,
        heartbeats,
        nodes_reported,
    })
}

/// The coordinator's CPU use (percent of one core) and the heartbeats the simulated daemons
/// sent while `window` passes.
fn observe(pid: u32, fleet: &SimulatedFleet, window: Duration) -> anyhow::Result<(f64, u64)> {
    let before = (cpu_ticks(pid)?, Instant::now(), fleet.activity());
    std::thread::sleep(window);
    let after = (cpu_ticks(pid)?, Instant::now(), fleet.activity());
    let cpu_s = after.0.saturating_sub(before.0) as f64 / clock_ticks_per_second();
    let cpu_percent = 100.0 * cpu_s / (after.1 - before.1).as_secs_f64();
    Ok((cpu_percent, after.2.heartbeats - before.2.heartbeats))
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
