//! Running a dataflow's `build` commands on this machine, for `adora build`, `adora run` and
//! the `scp`/`http` nodes of a distributed build. A leaf: it imports no other subcommand.

use std::{os::fd::AsFd, path::Path};

use adora_core::{Descriptor, NodeId};
use anyhow::Context;

/// The distinct build commands of a dataflow in file order, each with the nodes that share it.
pub fn build_plan(descriptor: &Descriptor) -> Vec<(String, Vec<NodeId>)> {
    let mut plan: Vec<(String, Vec<NodeId>)> = Vec::new();
    for node in &descriptor.nodes {
        let Some(cmd) = node
            .build
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
        else {
            continue;
        };
        match plan.iter_mut().find(|(c, _)| c == cmd) {
            Some((_, nodes)) => nodes.push(node.id.clone()),
            None => plan.push((cmd.to_owned(), vec![node.id.clone()])),
        }
    }
    plan
}

/// The environment of the build command of `node`: the allow-list, then the node's `env`.
fn build_env(
    descriptor: &Descriptor,
    node: &NodeId,
) -> std::collections::BTreeMap<std::ffi::OsString, std::ffi::OsString> {
    match descriptor.nodes.iter().find(|n| &n.id == node) {
        Some(spec) => adora_daemon::node_env::of_build(spec),
        None => adora_daemon::node_env::inherited(),
    }
}

/// Runs every build command with `sh -c` in `dir`. Everything (our progress lines and the
/// commands' own output) goes to stderr, as with cargo: stdout stays free for results such as
/// `adora build --json`. A build gets what a daemon's build gets: the allow-listed part of this
/// process's environment (`adora_daemon::node_env`) and the descriptor `env` of the first node
/// sharing the command.
pub async fn build_all(descriptor: &Descriptor, dir: &Path) -> anyhow::Result<()> {
    let plan = build_plan(descriptor);
    if plan.is_empty() {
        eprintln!("nothing to build: no node has a `build` command");
        return Ok(());
    }
    for (cmd, nodes) in plan {
        let names: Vec<&str> = nodes.iter().map(NodeId::as_str).collect();
        eprintln!("building {}: {cmd}", names.join(", "));
        let started = std::time::Instant::now();
        let stderr = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .context("cannot duplicate stderr")?;
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .stdout(std::process::Stdio::from(stderr))
            .current_dir(dir)
            .env_clear()
            .envs(build_env(descriptor, &nodes[0]))
            .status()
            .await
            .with_context(|| format!("cannot run `sh -c {cmd}`"))?;
        if !status.success() {
            anyhow::bail!(
                "build of node{} {} failed ({status}): `{cmd}` in {}",
                if nodes.len() == 1 { "" } else { "s" },
                names.join(", "),
                dir.display()
            );
        }
        eprintln!(
            "built {} in {:.1}s",
            names.join(", "),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
