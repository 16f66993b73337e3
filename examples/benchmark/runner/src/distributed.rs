//! The placements that need a coordinator: sender and sink on two daemons of this machine, or on
//! two test hosts (network namespaces with their own addresses) talking over Zenoh.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use adora_test_support::{hosts::TestHosts, services::Coordinator};
use anyhow::{bail, Context};
use benchmark_common::{Plan, Report};

/// The benchmark dataflow with the sender on machine `a`, the sink on `b`, and the plan inlined
/// (`adora start` takes no `--env`). The data queue keeps the default size: on the receiving
/// machine every queued message is a copy in shared memory (10 × 40 MiB at most), whereas on one
/// machine the sender waits for its sample to come back before sending the next. The sink
/// acknowledges every phase (`ack`): `data` and `control` are two streams across machines.
fn dataflow(bin_dir: &Path, plan: &Plan) -> String {
    let env: Vec<String> = plan
        .to_env()
        .into_iter()
        .chain([(benchmark_common::env::ACK, "1".to_owned())])
        .map(|(k, v)| format!("{k}: \"{v}\""))
        .collect();
    let env = env.join(", ");
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
      data: {{ source: sender/data, queue_size: 10 }}
      control: {{ source: sender/control, queue_size: 100 }}
    deploy: {{ machine: b }}
"#,
        sender = bin_dir.join("adora-bench-sender").display(),
        sink = bin_dir.join("adora-bench-sink").display(),
    )
}

/// Sender and sink on two daemons of this machine, started with `daemon_args` (e.g.
/// `--insecure-zenoh`).
pub fn two_daemons(adora: &Path, plan: &Plan, daemon_args: &[&str]) -> anyhow::Result<Vec<Report>> {
    let state = tempdir()?;
    let coordinator = Coordinator::start_with(adora, state.path(), "127.0.0.1");
    let _a = coordinator.daemon_local("a", daemon_args);
    let _b = coordinator.daemon_local("b", daemon_args);
    coordinator.wait_for_daemons(2);
    start_attached(&coordinator, state.path(), plan)
}

/// Sender and sink on two test hosts, daemons started with `daemon_args`: needs root (network
/// namespaces).
pub fn hosts(adora: &Path, plan: &Plan, daemon_args: &[&str]) -> anyhow::Result<Vec<Report>> {
    let hosts = TestHosts::create("adora_bench_zenoh", 2)
        .map_err(|skip| anyhow::anyhow!("cannot create test hosts: {skip}"))?;
    let state = tempdir()?;
    let coordinator = Coordinator::start_with(adora, state.path(), &hosts.gateway_ip().to_string());
    let _a = coordinator.daemon_on(hosts.host(0), "a", daemon_args);
    let _b = coordinator.daemon_on(hosts.host(1), "b", daemon_args);
    coordinator.wait_for_daemons(2);
    start_attached(&coordinator, state.path(), plan)
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
) -> anyhow::Result<Vec<Report>> {
    let bin_dir: PathBuf = std::env::current_exe()?
        .parent()
        .context("the runner has a directory")?
        .to_owned();
    let file = state.join("benchmark.yml");
    std::fs::write(&file, dataflow(&bin_dir, plan))?;
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
