//! Running a dataflow's `build` commands on this machine, for `adora build`, `adora run` and
//! the `scp`/`http` nodes of a distributed build. A leaf: it imports no other subcommand.

use std::{
    collections::BTreeMap,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use adora_core::{Descriptor, NodeId};
use adora_daemon::git_source::{self, Fetch};
use anyhow::Context;

/// The distinct build commands of a dataflow in file order, each with the directory it runs in
/// (`dir`, or a `git` node's checkout from `checkouts`) and the nodes that share it.
pub fn build_plan(
    descriptor: &Descriptor,
    dir: &Path,
    checkouts: &BTreeMap<NodeId, PathBuf>,
) -> Vec<(String, PathBuf, Vec<NodeId>)> {
    let mut plan: Vec<(String, PathBuf, Vec<NodeId>)> = Vec::new();
    for node in &descriptor.nodes {
        let Some(cmd) = node
            .build
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
        else {
            continue;
        };
        let dir = checkouts.get(&node.id).map_or(dir, PathBuf::as_path);
        match plan.iter_mut().find(|(c, d, _)| c == cmd && d == dir) {
            Some((_, _, nodes)) => nodes.push(node.id.clone()),
            None => plan.push((cmd.to_owned(), dir.to_owned(), vec![node.id.clone()])),
        }
    }
    plan
}

/// Checks out the `git` nodes of `descriptor` into `<state dir>/git` (cloning or fetching first
/// with [`Fetch::Yes`]) and makes their `path` absolute in the checkout; returns the checkouts.
pub async fn check_out_git_nodes(
    descriptor: &mut Descriptor,
    fetch: Fetch,
) -> anyhow::Result<BTreeMap<NodeId, PathBuf>> {
    if descriptor.nodes.iter().all(|n| n.git.is_none()) {
        return Ok(BTreeMap::new());
    }
    let root = super::common::state_dir().join("git");
    if fetch == Fetch::Yes {
        eprintln!("fetching git nodes into {}", root.display());
    }
    git_source::check_out_nodes(&root, descriptor, |_| true, fetch)
        .await
        .map_err(|problems| anyhow::anyhow!("cannot check out the git nodes:\n{problems}"))
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
///
/// `git` nodes are cloned or fetched and checked out first (see [`check_out_git_nodes`]); their
/// build runs in their checkout, and their `path` in `descriptor` becomes absolute.
pub async fn build_all(descriptor: &mut Descriptor, dir: &Path) -> anyhow::Result<()> {
    let checkouts = check_out_git_nodes(descriptor, Fetch::Yes).await?;
    let plan = build_plan(descriptor, dir, &checkouts);
    if plan.is_empty() {
        eprintln!("nothing to build: no node has a `build` command");
        return Ok(());
    }
    for (cmd, dir, nodes) in plan {
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
            .current_dir(&dir)
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
