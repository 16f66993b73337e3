//! Starting node processes: command line, environment, working directory, log capture, and the
//! guarantee that a node never outlives its daemon.

use std::{
    collections::{BTreeMap, VecDeque},
    path::{Path, PathBuf},
    process::Stdio,
    time::SystemTime,
};

use adora_core::{descriptor::NodeSpec, DataId, NodeId};
use adora_message::control::{LogStream, NodeLogLine};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    sync::mpsc,
};
use uuid::Uuid;

use adora_tasks::Tasks;

use crate::{
    dataflow::log_message,
    event::Event,
    node_env,
    node_logs::{self, LogFile, LogPolicy},
    tap::Taps,
};

/// Number of stderr lines kept per node to explain a failure.
pub const STDERR_TAIL_LINES: usize = 10;

/// The interpreter of `.py` nodes, looked up on the node's `PATH`.
const PYTHON: &str = "python3";

/// Where a node's executable is and how to start it, checked before anything is spawned.
#[derive(Debug, Clone)]
pub(crate) struct NodeCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub working_dir: PathBuf,
    /// `cpu_affinity`: the cores the node may run on.
    pub cpu_affinity: Option<Vec<usize>>,
}

/// Resolves `path` (relative to the dataflow directory), checks it exists and is executable,
/// and prefixes `.py` files with `python3`.
pub(crate) fn resolve_command(node: &NodeSpec, dataflow_dir: &Path) -> Result<NodeCommand, String> {
    let path = Path::new(&node.path);
    let resolved = if path.is_absolute() {
        path.to_owned()
    } else if node.path.contains('/') || dataflow_dir.join(path).exists() {
        dataflow_dir.join(path)
    } else {
        // A bare name not in the dataflow directory: look it up on PATH like a shell would.
        which(&node.path).ok_or_else(|| {
            format!(
                "executable `{}` not found (neither in {} nor on PATH)",
                node.path,
                dataflow_dir.display()
            )
        })?
    };
    let meta = std::fs::metadata(&resolved).map_err(|e| {
        let hint = if node.build.is_some() {
            " (run `adora build` or pass `--build`)"
        } else {
            ""
        };
        format!("path `{}` does not exist: {e}{hint}", resolved.display())
    })?;
    if !meta.is_file() {
        return Err(format!("path `{}` is not a file", resolved.display()));
    }
    let mut args = node.split_args()?;
    let working_dir = match node.deploy.as_ref().and_then(|d| d.working_dir.clone()) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => dataflow_dir.join(dir),
        None => dataflow_dir.to_owned(),
    };
    if resolved.extension().is_some_and(|e| e == "py") {
        args.insert(0, resolved.display().to_string());
        return Ok(NodeCommand {
            program: PYTHON.into(),
            args,
            working_dir,
            cpu_affinity: node.cpu_affinity.clone(),
        });
    }
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "path `{}` is not executable (chmod +x?)",
            resolved.display()
        ));
    }
    Ok(NodeCommand {
        program: resolved,
        args,
        working_dir,
        cpu_affinity: node.cpu_affinity.clone(),
    })
}

/// The hint for a Python node that failed because the interpreter it ran with lacks the `adora`
/// package (its last stderr lines end with Python's `No module named 'adora'`).
pub(crate) fn missing_python_package(stderr_tail: &[String]) -> Option<String> {
    let missing = stderr_tail
        .iter()
        .any(|l| l.contains("No module named 'adora'") || l.contains("No module named \"adora\""));
    if !missing {
        return None;
    }
    let interpreter = which(PYTHON).map_or_else(|| PYTHON.to_owned(), |p| p.display().to_string());
    Some(format!(
        ": the `adora` Python package is not installed for {interpreter}: \
         pip install <adora repository>/apis/python/node (see the guide's Python chapter)"
    ))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Where a node's output goes: its log file and the dataflow's live log lines.
pub(crate) struct LogSink {
    /// The node's dataflow.
    pub dataflow: Uuid,
    /// `<log dir>/<node>.txt`, created with the first line.
    pub file: PathBuf,
    /// Every line as it is printed.
    pub lines: mpsc::UnboundedSender<NodeLogLine>,
    /// The node's log fields.
    pub policy: LogPolicy,
    /// The actor, when lines are also sent as messages (`send_stdout_as`, `send_logs_as`).
    pub messages: Option<mpsc::Sender<Event>>,
    /// The daemon's taps: a tapped log output gets its copy here, before the actor routes it.
    pub taps: Taps,
    /// Stamps the messages (one clock per node instance: in order per output).
    pub clock: uhlc::HLC,
}

impl LogSink {
    /// Sends `text` on the node's `output`: a copy to the taps that want it (a full lossless tap
    /// makes the node's log reader, and so the node's printing, wait), then to the actor.
    async fn send_message(&self, node: &NodeId, output: &DataId, text: String) {
        if let Some(events) = &self.messages {
            let (metadata, data) = log_message(&text, self.clock.new_timestamp());
            self.taps
                .copy(self.dataflow, node, output, &metadata, &data, &mut None)
                .await;
            let event = Event::LogLine {
                dataflow: self.dataflow,
                node: node.clone(),
                output: output.clone(),
                message: (metadata, data),
            };
            let _ = events.send(event).await;
        }
    }
}

/// A spawned node process with its log readers running.
pub(crate) struct SpawnedNode {
    pub child: Child,
    pub pid: u32,
    /// Finishes when stdout and stderr are closed; yields the last stderr lines.
    pub logs_done: tokio::task::JoinHandle<Vec<String>>,
}

/// Spawns a node in its own process group (so a terminal's Ctrl-C reaches the runtime, which then
/// stops nodes gracefully). Nothing runs between fork and exec, so the standard library spawns
/// with `posix_spawn` (vfork): the daemon's page tables are not copied, which made spawning cost
/// O(daemon memory) per node. The node API sets the node's parent-death signal itself
/// (`NodeConfig::daemon_pid`), so a SIGKILLed daemon still takes its nodes with it.
///
/// The environment is built, not inherited: the allow-listed part of the daemon's
/// ([`crate::node_env`]), then `env` (the descriptor's, `--env`, the runtime's variables).
pub(crate) fn spawn_node(
    node: &NodeId,
    command: &NodeCommand,
    env: &BTreeMap<String, String>,
    logs: LogSink,
    tasks: &Tasks,
) -> Result<SpawnedNode, String> {
    if let Err(e) = std::fs::create_dir_all(&command.working_dir) {
        return Err(format!(
            "cannot create working directory {}: {e}",
            command.working_dir.display()
        ));
    }
    let mut inherited = node_env::inherited();
    if command.program.as_os_str() == PYTHON {
        // Log lines as they are printed (Python buffers a pipe), unless the dataflow says otherwise.
        inherited.insert("PYTHONUNBUFFERED".into(), "1".into());
    }
    let mut cmd = Command::new(&command.program);
    cmd.args(&command.args)
        .current_dir(&command.working_dir)
        .env_clear()
        .envs(node_env::build(inherited, env))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(cores) = &command.cpu_affinity {
        if let Some(set) = crate::affinity::cpu_set(node, cores) {
            crate::affinity::apply(&mut cmd, set);
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", command.program.display()))?;
    let pid = child
        .id()
        .ok_or("process exited before its pid could be read")?;
    let (line_tx, line_rx) = mpsc::unbounded_channel();
    for (pipe, stream) in [
        (child.stdout.take().map(boxed), LogStream::Stdout),
        (child.stderr.take().map(boxed), LogStream::Stderr),
    ] {
        if let Some(pipe) = pipe {
            let what = format!("the {stream:?} of node `{node}` ({})", logs.dataflow);
            tasks.spawn_until_cancelled(what, read_lines(pipe, stream, line_tx.clone()));
        }
    }
    drop(line_tx);
    let what = format!("the log of node `{node}` ({})", logs.dataflow);
    let logs_done = tasks.spawn(what, write_logs(node.clone(), line_rx, logs));
    Ok(SpawnedNode {
        child,
        pid,
        logs_done,
    })
}

type Pipe = Box<dyn AsyncRead + Send + Unpin>;

fn boxed(pipe: impl AsyncRead + Send + Unpin + 'static) -> Pipe {
    Box::new(pipe)
}

/// Writes a node's lines to its log file and the live log, and hands them to the actor for the
/// node's log outputs (see [`crate::node_logs`]); returns the last stderr lines (all of them,
/// whatever `min_log_level`) once both pipes closed.
async fn write_logs(
    node: NodeId,
    mut lines: mpsc::UnboundedReceiver<(LogStream, String)>,
    logs: LogSink,
) -> Vec<String> {
    let mut file = LogFile::new(logs.file.clone(), &logs.policy);
    let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
    while let Some((stream, line)) = lines.recv().await {
        if stream == LogStream::Stderr {
            if tail.len() == STDERR_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.clone());
        }
        if let Some(output) = &logs.policy.stdout_as {
            logs.send_message(&node, output, line.clone()).await;
        }
        if logs.policy.needs_levels() {
            let entry = node_logs::classify(&line);
            if entry.level < logs.policy.min_level {
                continue;
            }
            if let Some(output) = &logs.policy.logs_as {
                let json = node_logs::entry_json(&entry, node.as_str(), SystemTime::now());
                logs.send_message(&node, output, json).await;
            }
        }
        file.write_line(&line).await;
        let _ = logs.lines.send(NodeLogLine {
            dataflow: logs.dataflow,
            node: node.clone(),
            stream,
            line,
        });
    }
    file.flush().await;
    tail.into_iter().collect()
}

async fn read_lines(
    reader: impl AsyncRead + Unpin,
    stream: LogStream,
    tx: mpsc::UnboundedSender<(LogStream, String)>,
) {
    let mut lines = BufReader::new(reader).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                if tx.send((stream, line)).is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                // Non-UTF-8 output: keep going with a marker rather than losing the rest.
                let _ = tx.send((stream, format!("<unreadable output: {e}>")));
                return;
            }
        }
    }
}

/// Sends `signal` to the node's whole process group (the node and anything it started).
pub(crate) fn signal_group(pid: u32, signal: nix::sys::signal::Signal) {
    let pgid = nix::unistd::Pid::from_raw(pid as i32);
    if let Err(e) = nix::sys::signal::killpg(pgid, signal) {
        if e != nix::errno::Errno::ESRCH {
            tracing::warn!("cannot send {signal} to process group {pid}: {e}");
        }
    }
}
