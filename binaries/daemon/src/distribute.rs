//! Getting a dataflow's binaries onto this machine before anything is spawned
//! (`_unstable_deploy.distribute`):
//!
//! - `local`: with `build` requested, the daemon runs the node's `build` here, in the node's
//!   `working_dir` when set (created if missing), else in the dataflow's directory; the output
//!   goes to the attached CLI as `[build]` log lines. A `git` node is first cloned (or fetched)
//!   into `<artifact dir>/git` and checked out (`crate::git_source`); it is built in its
//!   checkout and its `path` is relative to it;
//! - `scp`: the CLI copied the binary here; the daemon checks the copy's SHA-256 against the one
//!   the CLI computed (carried in the artifact) and runs that copy;
//! - `http`: the daemon downloads the binary from the coordinator's artifact store, checks its
//!   SHA-256, stores it under `<artifact dir>/<dataflow>/<node>/` with mode 0755 and runs it.
//!
//! Every node is prepared before any is spawned: the coordinator asks every daemon to `Prepare`
//! and sends `Spawn` only when all are ready, else `Discard` (all or nothing, like placement);
//! any failure fails the whole start with an error naming node, machine and strategy.

use std::{
    collections::{BTreeMap, HashSet},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
};

use adora_core::{descriptor::Distribute, NodeId, NodeSpec};
use adora_message::{
    control::{LogStream, NodeLogLine},
    coordinator_to_daemon::{has_build, BuildNodes, SpawnDataflow},
    daemon_to_coordinator::DaemonMessage,
    distribute::{is_safe_path_segment, sha256_hex_of_reader, NodeArtifact},
    envelope::Envelope,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

use adora_tasks::Tasks;

use crate::{
    event::Reports,
    git_source::{self, Fetch},
};

/// Prefix of the log lines of a build.
pub const BUILD_LOG_PREFIX: &str = "[build] ";

/// What the daemon needs to fetch and build binaries.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    /// `host:port` of the coordinator (artifact store).
    pub coordinator_addr: String,
    /// How to authenticate to it.
    pub auth: adora_client::Auth,
    /// This daemon's name in errors (machine id or `default`).
    pub machine: String,
    /// Downloads go to `<artifact_dir>/<dataflow>/<node>/`.
    pub artifact_dir: PathBuf,
    /// The cache of `git` nodes' repositories and checkouts (`crate::git_source`).
    pub git_cache: PathBuf,
}

/// Where build output goes: to the coordinator while the dataflow's logs are watched.
pub(crate) struct BuildLogs {
    pub dataflow: Uuid,
    pub reports: Reports,
    pub watched: Arc<Mutex<HashSet<Uuid>>>,
    /// The daemon's tasks (the readers of a build's output run there).
    pub tasks: Tasks,
}

impl BuildLogs {
    fn send(&self, node: &NodeId, stream: LogStream, line: String) {
        let on = self
            .watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&self.dataflow);
        if on {
            let line = NodeLogLine {
                dataflow: self.dataflow,
                node: node.clone(),
                stream,
                line: format!("{BUILD_LOG_PREFIX}{line}"),
            };
            let _ = self
                .reports
                .send(Envelope::new(0, DaemonMessage::Log(line)));
        } else {
            tracing::info!("build of `{node}`: {line}");
        }
    }
}

/// Prepares every node of `spawn` placed here; returns the executable path to use instead of
/// the descriptor's `path` per distributed node, or every problem found (one line per node,
/// naming node, machine and strategy).
pub(crate) async fn prepare(
    ctx: &Context,
    spawn: &SpawnDataflow,
    logs: &BuildLogs,
) -> Result<BTreeMap<NodeId, PathBuf>, String> {
    let mut paths = BTreeMap::new();
    let mut problems = Vec::new();
    let mut built: Vec<(String, PathBuf)> = Vec::new();
    for node in spawn.local_nodes() {
        let strategy = node.deploy().distribute;
        let fail = |what: String| {
            format!(
                "node `{}` on machine `{}` (distribute: {}): {what}",
                node.id,
                ctx.machine,
                strategy_name(strategy)
            )
        };
        let result = match (strategy, spawn.artifacts.get(&node.id)) {
            (Distribute::Local, None) => {
                let checkout = match git_checkout(ctx, node, spawn.build).await {
                    Ok(checkout) => checkout,
                    Err(e) => {
                        problems.push(fail(e));
                        continue;
                    }
                };
                if let Some(dir) = &checkout {
                    paths.insert(node.id.clone(), dir.join(&node.path));
                }
                if spawn.build && has_build(node) {
                    let dir = checkout.unwrap_or_else(|| build_dir(node, &spawn.working_dir));
                    let cmd = node.build.as_deref().unwrap_or_default().trim().to_owned();
                    if built.contains(&(cmd.clone(), dir.clone())) {
                        continue; // identical build already ran for another node
                    }
                    built.push((cmd.clone(), dir.clone()));
                    run_build(node, &cmd, &dir, logs).await.map(|()| None)
                } else {
                    Ok(None)
                }
            }
            (_, Some(NodeArtifact::Copied { path, sha256 })) => {
                verify_copy(path, sha256.as_deref()).await.map(Some)
            }
            (_, Some(NodeArtifact::Uploaded { build_id, sha256 })) => {
                fetch(ctx, spawn.id, node, *build_id, sha256).await.map(Some)
            }
            (Distribute::Scp | Distribute::Http, None) => Err(
                "no binary was distributed for it (start the dataflow with `adora start`, which copies or uploads it)"
                    .into(),
            ),
        };
        match result {
            Ok(Some(path)) => {
                paths.insert(node.id.clone(), path);
            }
            Ok(None) => {}
            Err(e) => problems.push(fail(e)),
        }
    }
    if problems.is_empty() {
        Ok(paths)
    } else {
        Err(problems.join("\n"))
    }
}

/// `adora build`: runs the `build` of every `local` node of `build` (identical commands in the
/// same directory once), streaming the output; returns every failure, one line per node.
pub(crate) async fn build(
    ctx: &Context,
    build: &BuildNodes,
    logs: &BuildLogs,
) -> Result<(), String> {
    let mut built: Vec<(String, PathBuf)> = Vec::new();
    let mut problems = Vec::new();
    let nodes = build
        .descriptor
        .nodes
        .iter()
        .filter(|n| build.nodes.contains(&n.id) && n.deploy().distribute == Distribute::Local);
    for node in nodes.filter(|n| has_build(n) || n.git.is_some()) {
        let fail = |e: String| {
            format!(
                "node `{}` on machine `{}` (distribute: local): {e}",
                node.id, ctx.machine
            )
        };
        let dir = match git_checkout(ctx, node, true).await {
            Ok(Some(checkout)) => checkout,
            Ok(None) => build_dir(node, &build.working_dir),
            Err(e) => {
                problems.push(fail(e));
                continue;
            }
        };
        let cmd = node.build.as_deref().unwrap_or_default().trim().to_owned();
        if cmd.is_empty() || built.contains(&(cmd.clone(), dir.clone())) {
            continue;
        }
        built.push((cmd.clone(), dir.clone()));
        if let Err(e) = run_build(node, &cmd, &dir, logs).await {
            problems.push(fail(e));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Removes what preparing `dataflow` downloaded here (its start failed or was abandoned).
pub(crate) fn discard_downloads(ctx: &Context, dataflow: Uuid, tasks: &Tasks) {
    let dir = ctx.artifact_dir.join(dataflow.to_string());
    let what = format!("removing the downloads of dataflow {dataflow}");
    tasks.spawn_blocking(what, move || match std::fs::remove_dir_all(&dir) {
        Ok(()) => tracing::info!("removed the downloads of discarded dataflow {dataflow}"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}", dir.display()),
    });
}

fn strategy_name(d: Distribute) -> &'static str {
    match d {
        Distribute::Local => "local",
        Distribute::Scp => "scp",
        Distribute::Http => "http",
    }
}

/// The checkout of a `git` node (cloning or fetching first when `fetch`), `None` for others.
async fn git_checkout(
    ctx: &Context,
    node: &NodeSpec,
    fetch: bool,
) -> Result<Option<PathBuf>, String> {
    let Some(source) = node.git_source() else {
        return Ok(None);
    };
    let fetch = if fetch { Fetch::Yes } else { Fetch::No };
    git_source::checkout(&ctx.git_cache, &source, fetch)
        .await
        .map(Some)
        .map_err(|e| format!("git {}: {e}", source.url))
}

/// Where a `local` node is built: its `working_dir` (relative to the dataflow's directory),
/// else the dataflow's directory.
fn build_dir(node: &NodeSpec, dataflow_dir: &Path) -> PathBuf {
    match node.deploy().working_dir {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => dataflow_dir.join(dir),
        None => dataflow_dir.to_owned(),
    }
}

/// Runs `sh -c <cmd>` in `dir` (created if missing), streaming its output as build log lines.
/// A build runs user code: like the node, it gets the allow-listed part of the daemon's
/// environment and the node's descriptor `env`, never the daemon's secrets.
async fn run_build(spec: &NodeSpec, cmd: &str, dir: &Path, logs: &BuildLogs) -> Result<(), String> {
    let node = &spec.id;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| format!("cannot create the build directory {}: {e}", dir.display()))?;
    logs.send(
        node,
        LogStream::Stdout,
        format!("running `{cmd}` in {}", dir.display()),
    );
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .env_clear()
        .envs(crate::node_env::of_build(spec))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `sh -c {cmd}`: {e}"))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (pipe, stream) in [
        (
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            LogStream::Stdout,
        ),
        (
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            LogStream::Stderr,
        ),
    ] {
        let Some(pipe) = pipe else { continue };
        let tx = tx.clone();
        let what = format!("the build output of node `{node}`");
        logs.tasks.spawn_until_cancelled(what, async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send((stream, line)).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut tail = Vec::new();
    while let Some((stream, line)) = rx.recv().await {
        tail.push(line.clone());
        if tail.len() > 5 {
            tail.remove(0);
        }
        logs.send(node, stream, line);
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for the build: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "build `{cmd}` failed ({status}) in {}{}",
            dir.display(),
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {}", tail.join(" / "))
            }
        ))
    }
}

/// Checks an `scp` node's copy: present, and (when the CLI sent one) with the SHA-256 of the
/// bytes the CLI copied; returns its path. Hashing runs on a blocking thread.
async fn verify_copy(path: &Path, expected: Option<&str>) -> Result<PathBuf, String> {
    if !path.is_file() {
        return Err(format!(
            "the copied binary {} is missing on this machine (was it copied to another one?)",
            path.display()
        ));
    }
    let Some(expected) = expected else {
        return Ok(path.to_owned());
    };
    let file = path.to_owned();
    let actual = tokio::task::spawn_blocking(move || {
        std::fs::File::open(&file).and_then(sha256_hex_of_reader)
    })
    .await
    .map_err(|e| format!("hashing the copied binary: {e}"))?
    .map_err(|e| format!("cannot read the copied binary {}: {e}", path.display()))?;
    if actual == expected {
        Ok(path.to_owned())
    } else {
        Err(format!(
            "checksum mismatch: the copied binary {} has sha256 {actual}, the CLI copied {expected} \
             (changed or corrupted after the copy; start the dataflow again to copy it anew)",
            path.display()
        ))
    }
}

/// Downloads, verifies and installs an `http` node's binary; returns where it is.
async fn fetch(
    ctx: &Context,
    dataflow: Uuid,
    node: &NodeSpec,
    build_id: Uuid,
    sha256: &str,
) -> Result<PathBuf, String> {
    if !is_safe_path_segment(node.id.as_str()) {
        return Err("the node id cannot name a file".into());
    }
    let bytes = adora_client::artifacts::download(
        &ctx.coordinator_addr,
        &ctx.auth,
        build_id,
        node.id.as_str(),
        sha256,
    )
    .await
    .map_err(|e| format!("artifact of build {build_id}: {e}"))?;
    let file_name = Path::new(&node.path)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| is_safe_path_segment(n))
        .unwrap_or(node.id.as_str())
        .to_owned();
    let dir = ctx
        .artifact_dir
        .join(dataflow.to_string())
        .join(node.id.as_str());
    let path = dir.join(file_name);
    let target = path.clone();
    tokio::task::spawn_blocking(move || install(&dir, &target, &bytes))
        .await
        .map_err(|e| format!("installing the artifact: {e}"))?
        .map_err(|e| format!("cannot install the artifact at {}: {e}", path.display()))?;
    Ok(path)
}

/// Writes an executable through a temporary file and a rename. Blocking.
fn install(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}", Uuid::new_v4().simple()));
    std::fs::write(&tmp, bytes)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, path)
}

/// The descriptor of `spawn` with each distributed node's `path` replaced by its local copy.
pub(crate) fn apply(spawn: &mut SpawnDataflow, paths: &BTreeMap<NodeId, PathBuf>) {
    for node in &mut std::sync::Arc::make_mut(&mut spawn.descriptor).nodes {
        if let Some(path) = paths.get(&node.id) {
            node.path = path.display().to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adora_message::distribute::sha256_hex;

    /// Upper bound of hashing a small file in a test.
    const TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

    #[tokio::test]
    async fn a_copy_is_checked_against_the_sha256_the_cli_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node");
        std::fs::write(&path, b"the binary").expect("write");
        let good = sha256_hex(b"the binary");
        let verify = |sha: Option<String>| {
            let path = path.clone();
            async move {
                tokio::time::timeout(TEST_TIMEOUT, verify_copy(&path, sha.as_deref()))
                    .await
                    .expect("in time")
            }
        };
        assert_eq!(verify(Some(good.clone())).await, Ok(path.clone()));
        // From a CLI that sent no checksum: only present.
        assert_eq!(verify(None).await, Ok(path.clone()));
        std::fs::write(&path, b"the binarY").expect("corrupt");
        let e = verify(Some(good.clone())).await.expect_err("corrupted");
        assert!(e.starts_with("checksum mismatch"), "{e}");
        assert!(e.contains(&good), "{e}");
        std::fs::remove_file(&path).expect("remove");
        let e = verify(Some(good)).await.expect_err("missing");
        assert!(e.contains("is missing on this machine"), "{e}");
    }
}
