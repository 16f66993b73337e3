//! `adora-daemon`: owns the actual state of one machine. It spawns the nodes of a dataflow,
//! routes their messages (Unix socket + shared memory), captures their logs, supervises them and
//! stops them gracefully (Stop event, then SIGTERM, then SIGKILL).
//!
//! [`run_dataflow`] runs one dataflow to completion on this machine (what `adora run` uses);
//! [`run`] runs the daemon as a service connected to a coordinator (`adora daemon`).

mod actor;
#[doc(hidden)]
pub mod bench_hooks;
mod coordinator;
mod dataflow;
mod distribute;
mod fd_limit;
mod node_conn;
mod process_stats;
mod queue;
mod remote;
mod restart;
mod routing;
mod spawn;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::PathBuf,
    time::Duration,
};

use adora_core::{Descriptor, NodeId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use fd_limit::raise_fd_limit;
pub use routing::NodeCounters;

/// Default time a node has to exit after its Stop event before it gets SIGTERM.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);
/// Default time between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);
/// Default time every node has to connect to the daemon after it was spawned.
pub const DEFAULT_NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of a daemon.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Directory for the daemon's Unix socket (must be short: socket paths are limited to 107 bytes).
    pub run_dir: PathBuf,
    /// Stop event → SIGTERM.
    pub stop_grace: Duration,
    /// SIGTERM → SIGKILL.
    pub kill_grace: Duration,
    /// Spawn → node registered; a node that never connects fails the dataflow.
    pub node_connect_timeout: Duration,
}

impl DaemonConfig {
    /// Defaults with the given run directory.
    pub fn new(run_dir: PathBuf) -> Self {
        Self {
            run_dir,
            stop_grace: DEFAULT_STOP_GRACE,
            kill_grace: DEFAULT_KILL_GRACE,
            node_connect_timeout: DEFAULT_NODE_CONNECT_TIMEOUT,
        }
    }
}

/// A dataflow to run on this daemon.
#[derive(Debug, Clone)]
pub struct DataflowSpec {
    /// Unique id of this run.
    pub id: Uuid,
    /// The validated descriptor.
    pub descriptor: Descriptor,
    /// Directory relative paths in the descriptor are resolved against.
    pub working_dir: PathBuf,
    /// Extra environment for every node (`--env`), applied after the descriptor's `env`.
    pub env: BTreeMap<String, String>,
    /// Directory for the per-node log files (`<node>.txt`).
    pub log_dir: PathBuf,
    /// The nodes to spawn on this daemon; `None` spawns every node (`adora run`).
    pub local_nodes: Option<BTreeSet<NodeId>>,
}

impl DataflowSpec {
    /// True when `node` runs on this daemon.
    pub fn is_local(&self, node: &NodeId) -> bool {
        self.local_nodes
            .as_ref()
            .is_none_or(|set| set.contains(node))
    }
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line a node printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The node.
    pub node: NodeId,
    /// stdout or stderr.
    pub stream: LogStream,
    /// The line, without its newline.
    pub line: String,
}

/// How a node ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeOutcome {
    /// Exited with status 0.
    Finished,
    /// Did not exit after Stop within the grace period and was terminated by the runtime.
    Terminated {
        /// The signal used.
        signal: String,
    },
    /// Exited with a non-zero status, was killed by a signal, or could not run.
    Failed {
        /// What happened (`exit status 3`, `killed by SIGSEGV`, `did not connect within 30s`, ...).
        reason: String,
        /// The last lines of its stderr.
        stderr_tail: Vec<String>,
    },
}

impl NodeOutcome {
    /// True for [`NodeOutcome::Failed`].
    pub fn is_failure(&self) -> bool {
        matches!(self, NodeOutcome::Failed { .. })
    }
}

/// The result of a dataflow run.
#[derive(Debug, Clone, Default)]
pub struct DataflowResult {
    /// Outcome of every node.
    pub nodes: BTreeMap<NodeId, NodeOutcome>,
    /// Message counters of every node.
    pub counters: BTreeMap<NodeId, NodeCounters>,
    /// How often each node was restarted by its restart policy.
    pub restarts: BTreeMap<NodeId, u32>,
}

impl DataflowResult {
    /// Nodes that failed, with their outcome.
    pub fn failures(&self) -> impl Iterator<Item = (&NodeId, &NodeOutcome)> {
        self.nodes.iter().filter(|(_, o)| o.is_failure())
    }

    /// True when no node failed.
    pub fn is_success(&self) -> bool {
        self.failures().next().is_none()
    }
}

impl fmt::Display for DataflowResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (node, outcome) in self.failures() {
            if let NodeOutcome::Failed {
                reason,
                stderr_tail,
            } = outcome
            {
                writeln!(f, "node `{node}` failed: {reason}")?;
                if !stderr_tail.is_empty() {
                    writeln!(f, "  last lines of its stderr:")?;
                    for line in stderr_tail {
                        writeln!(f, "    {line}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Errors that prevent a dataflow from running at all (nothing was spawned, or everything
/// spawned was stopped again).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// Some nodes cannot be started (missing executable, bad args, ...).
    #[error("cannot start the dataflow:\n{}", .0.join("\n"))]
    InvalidNodes(Vec<String>),
    /// A reserved environment variable was given.
    #[error("environment variable `{0}` is set by the runtime and cannot be overridden")]
    ReservedEnv(String),
    /// I/O on the daemon's own files failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Runs one dataflow on this machine until every node has exited, or until `shutdown` is
/// cancelled (then the nodes are stopped gracefully). Node logs go to `logs` as they are printed.
pub async fn run_dataflow(
    config: DaemonConfig,
    spec: DataflowSpec,
    logs: mpsc::UnboundedSender<LogLine>,
    shutdown: CancellationToken,
) -> Result<DataflowResult, DaemonError> {
    fd_limit::raise_fd_limit();
    let daemon = actor::Daemon::bind(config).await?;
    daemon.run_single(spec, logs, shutdown).await
}

/// Settings of a daemon service connected to a coordinator.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Node supervision settings.
    pub daemon: DaemonConfig,
    /// `host:port` of the coordinator.
    pub coordinator_addr: String,
    /// The token sent as `Authorization: Bearer` (never taken from a command line).
    pub token: Option<String>,
    /// Machine id (`--machine-id`).
    pub machine_id: Option<String>,
    /// Labels (`--labels`).
    pub labels: BTreeMap<String, String>,
    /// Node logs go to `<log_root>/<dataflow uuid>/<node>.txt`.
    pub log_root: PathBuf,
    /// The Zenoh endpoint to listen on for other daemons, with a concrete port
    /// (see [`resolve_zenoh_listen`]).
    pub zenoh_listen: String,
    /// Binaries downloaded for `distribute: http` go to `<artifact_dir>/<dataflow>/<node>/`.
    pub artifact_dir: PathBuf,
}

/// Turns `tcp/<ip>:0` into `tcp/<ip>:<free port>` (other endpoints are returned unchanged), so
/// the daemon can advertise where it listens before its Zenoh session opens.
pub fn resolve_zenoh_listen(listen: &str) -> Result<String, String> {
    remote::resolve_listen(listen).map_err(|e| e.to_string())
}

/// Capacity of the channel from the coordinator link to the actor.
const LINK_CHANNEL_CAPACITY: usize = 1024;

/// Runs the daemon as a service until `shutdown` is cancelled: it registers with the coordinator,
/// runs what it is told, and keeps its nodes running when the coordinator goes away (it
/// reconnects forever). On shutdown every dataflow is stopped gracefully.
pub async fn run(config: ServiceConfig, shutdown: CancellationToken) -> Result<(), DaemonError> {
    fd_limit::raise_fd_limit();
    let mut daemon = actor::Daemon::bind(config.daemon.clone()).await?;
    daemon.enable_remote(config.zenoh_listen.clone());
    let (commands_tx, commands_rx) = mpsc::channel(LINK_CHANNEL_CAPACITY);
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    let mut service = actor::service::Service::new(reports_tx, config.log_root.clone());
    let distribution = distribute::Context {
        coordinator_addr: config.coordinator_addr.clone(),
        token: config.token.clone(),
        machine: config
            .machine_id
            .clone()
            .unwrap_or_else(|| "default".into()),
        artifact_dir: config.artifact_dir.clone(),
    };
    service.distribution = Some((distribution, commands_tx.clone()));
    let link_shutdown = CancellationToken::new();
    let link = tokio::spawn(coordinator::run_link(
        config,
        commands_tx,
        reports_rx,
        link_shutdown.clone(),
    ));
    // On a runtime worker, not the thread blocked in `block_on`: a message then costs no
    // cross-thread wake-up between the connection tasks and the actor.
    let actor = tokio::spawn(daemon.run_service(commands_rx, service, shutdown));
    if let Err(e) = actor.await {
        tracing::error!("the daemon actor failed: {e}");
    }
    link_shutdown.cancel();
    let _ = link.await;
    Ok(())
}
