//! The placements that need a coordinator: sender and sink on two daemons of this machine, or on
//! two test hosts (network namespaces with their own addresses) talking over Zenoh. Each also
//! runs its two network baselines between the same two places, in the same run
//! (`adora-bench-net`): plain Zenoh configured like the daemons, and plain TCP.

use std::{
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use adora_test_support::{hosts::TestHosts, services::Coordinator};
use anyhow::{bail, Context};
use benchmark_common::{Plan, Report};

/// The reports of one cross-machine placement: Adora's and its two baselines'.
pub struct Measured {
    /// Sender node → sink node through two daemons.
    pub adora: Vec<Report>,
    /// Plain Zenoh between the same two places (empty with `--no-baseline`).
    pub zenoh: Vec<Report>,
    /// Plain TCP between the same two places (empty with `--no-baseline`).
    pub tcp: Vec<Report>,
}

/// Where the two ends of a baseline run: a command for the receiver's side and one for the
/// sender's, and the receiver's address.
struct Ends<'a> {
    receiver: &'a dyn Fn(&Path) -> Command,
    sender: &'a dyn Fn(&Path) -> Command,
    receiver_ip: Ipv4Addr,
    sender_ip: Ipv4Addr,
}

/// A port free on this machine now (the receivers bind it right after).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs `adora-bench-net` between `ends`: plain TCP, then plain Zenoh.
fn baselines(ends: &Ends<'_>, plan: &Plan) -> anyhow::Result<(Vec<Report>, Vec<Report>)> {
    let net = super::sibling("adora-bench-net")?;
    let run = |mode: &str, receiver_addr: String, sender_args: Vec<String>| {
        eprintln!("running the plain {mode} baseline...");
        let mut receiver = (ends.receiver)(&net);
        receiver.arg(format!("{mode}-receiver")).arg(&receiver_addr);
        let mut sender = (ends.sender)(&net);
        sender
            .arg(format!("{mode}-sender"))
            .args(&sender_args)
            .envs(plan.to_env());
        super::run_pair(receiver, sender)
            .with_context(|| format!("the plain {mode} baseline ({})", net.display()))
    };
    let port = free_port()?;
    let tcp = run(
        "tcp",
        format!("{}:{port}", ends.receiver_ip),
        vec![format!("{}:{port}", ends.receiver_ip)],
    )?;
    let port = free_port()?;
    let zenoh = run(
        "zenoh",
        format!("tcp/{}:{port}", ends.receiver_ip),
        vec![
            format!("tcp/{}:{port}", ends.receiver_ip),
            format!("tcp/{}:0", ends.sender_ip),
        ],
    )?;
    Ok((zenoh, tcp))
}

/// The benchmark dataflow with the sender on machine `a`, the sink on `b`, and the plan inlined
/// (`adora start` takes no `--env`). The sink acknowledges every phase (`ack`): `data` and
/// `control` are two streams across machines.
fn dataflow(bin_dir: &Path, plan: &Plan, spin: bool) -> String {
    let env: Vec<String> = plan
        .to_env()
        .into_iter()
        .chain([(benchmark_common::env::ACK, "1".to_owned())])
        .map(|(k, v)| format!("{k}: \"{v}\""))
        .collect();
    let env = env.join(", ");
    let queue = data_queue_size(plan);
    let poll = if spin { ", poll: spin" } else { "" };
    format!(
        r#"nodes:
  - id: sender
    path: {sender}
    env: {{ {env} }}
    outputs: [data, control]
    inputs:
      ack: sink/ack
    deploy: {{ machine: a }}
  - id: sink
    path: {sink}
    env: {{ {env} }}
    outputs: [ack]
    inputs:
      data: {{ source: sender/data, queue_size: {queue}{poll} }}
      control: {{ source: sender/control, queue_size: 100{poll} }}
    deploy: {{ machine: b }}
"#,
        sender = bin_dir.join("adora-bench-sender").display(),
        sink = bin_dir.join("adora-bench-sink").display(),
    )
}

/// Bytes the sink's data queue may hold on the receiving machine.
const DATA_QUEUE_BYTES: usize = 512 << 20;

/// The sink's `queue_size` for `data`: as deep as the local benchmark's (1000) where the largest
/// size of the plan allows it, at most [`DATA_QUEUE_BYTES`] of the largest size, at least 10.
/// On the receiving machine every queued message is the daemon's copy in shared memory (1000 of
/// 40 MiB would be 40 GiB), whereas on one machine the sender waits for its sample to come back.
/// A shallow queue drops most of a back-to-back burst of small messages (measured: 8 B with
/// `queue_size: 10` delivered 3% of plain Zenoh's messages/s, with 1000 27–31%).
fn data_queue_size(plan: &Plan) -> usize {
    let largest = plan.sizes.iter().copied().max().unwrap_or(0).max(1);
    (DATA_QUEUE_BYTES / largest).clamp(10, 1000)
}

/// How a cross-machine placement runs.
pub struct How<'a> {
    /// Arguments of the daemons (e.g. `--insecure-zenoh`).
    pub daemon_args: &'a [&'a str],
    /// Plain Zenoh and plain TCP between the same two places too.
    pub baseline: bool,
    /// `poll: spin` on the sink's inputs.
    pub spin: bool,
}

/// Sender and sink on two daemons of this machine (loopback); with a baseline, plain Zenoh and
/// plain TCP on loopback too.
pub fn two_daemons(adora: &Path, plan: &Plan, how: &How<'_>) -> anyhow::Result<Measured> {
    let daemon_args = how.daemon_args;
    let (zenoh, tcp) = if how.baseline {
        let local = |net: &Path| Command::new(net);
        let ends = Ends {
            receiver: &local,
            sender: &local,
            receiver_ip: Ipv4Addr::LOCALHOST,
            sender_ip: Ipv4Addr::LOCALHOST,
        };
        baselines(&ends, plan)?
    } else {
        Default::default()
    };
    let state = tempdir()?;
    let coordinator = Coordinator::start_with(adora, state.path(), "127.0.0.1");
    let _a = coordinator.daemon_local("a", daemon_args);
    let _b = coordinator.daemon_local("b", daemon_args);
    coordinator.wait_for_daemons(2);
    let adora = start_attached(&coordinator, state.path(), plan, how.spin)?;
    Ok(Measured { adora, zenoh, tcp })
}

/// Sender and sink on two test hosts; with a baseline, plain Zenoh and plain TCP between the
/// same two hosts too. Needs root (network namespaces).
pub fn hosts(adora: &Path, plan: &Plan, how: &How<'_>) -> anyhow::Result<Measured> {
    let daemon_args = how.daemon_args;
    let hosts = TestHosts::create("adora_bench_zenoh", 2)
        .map_err(|skip| anyhow::anyhow!("cannot create test hosts: {skip}"))?;
    let (zenoh, tcp) = if how.baseline {
        let receiver = |net: &Path| hosts.host(1).command(net);
        let sender = |net: &Path| hosts.host(0).command(net);
        let ends = Ends {
            receiver: &receiver,
            sender: &sender,
            receiver_ip: hosts.host(1).ip(),
            sender_ip: hosts.host(0).ip(),
        };
        baselines(&ends, plan)?
    } else {
        Default::default()
    };
    let state = tempdir()?;
    let coordinator = Coordinator::start_with(adora, state.path(), &hosts.gateway_ip().to_string());
    let _a = coordinator.daemon_on(hosts.host(0), "a", daemon_args);
    let _b = coordinator.daemon_on(hosts.host(1), "b", daemon_args);
    coordinator.wait_for_daemons(2);
    let adora = start_attached(&coordinator, state.path(), plan, how.spin)?;
    Ok(Measured { adora, zenoh, tcp })
}

pub(crate) fn tempdir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("adora-bench-")
        .tempdir()
        .context("cannot create a temporary directory")
}

fn start_attached(
    coordinator: &Coordinator,
    state: &Path,
    plan: &Plan,
    spin: bool,
) -> anyhow::Result<Vec<Report>> {
    let bin_dir: PathBuf = std::env::current_exe()?
        .parent()
        .context("the runner has a directory")?
        .to_owned();
    let file = state.join("benchmark.yml");
    std::fs::write(&file, dataflow(&bin_dir, plan, spin))?;
    let mut child = coordinator
        .cli()
        .arg("start")
        .arg(&file)
        .arg("--attach")
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run `adora start`")?;
    let stdout = child.stdout.take().context("stdout is piped")?;
    let reports = super::collect_reports(stdout)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("`adora start` failed ({status})");
    }
    Ok(reports)
}
