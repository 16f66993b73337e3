//! `adora-daemon`: owns the actual state of one machine. It spawns the nodes of a dataflow,
//! routes their messages (Unix socket + shared memory), captures their logs, supervises them and
//! stops them gracefully (Stop event, then SIGTERM, then SIGKILL).
//!
//! [`run_dataflow`] runs one dataflow to completion on this machine (what `adora run` uses);
//! [`run`] runs the daemon as a service connected to a coordinator (`adora daemon`).

mod actor;
mod affinity;
#[doc(hidden)]
pub mod bench_hooks;
mod config;
mod coordinator;
mod dataflow;
mod distribute;
mod error;
mod event;
mod fd_limit;
pub mod git_source;
mod locks;
mod node_conn;
pub mod node_env;
mod node_logs;
mod process_stats;
mod queue;
mod remote;
mod restart;
mod result;
mod router;
mod routing;
mod service_log;
mod spawn;
pub mod tap;
mod telemetry;

use adora_message::control::NodeLogLine;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long the daemon waits for its tasks on shutdown before naming the stragglers.
pub use adora_tasks::SHUTDOWN_GRACE as TASK_SHUTDOWN_GRACE;
pub use config::{
    DaemonConfig, DataflowSpec, SecureTransport, ServiceConfig, ZenohTls, DEFAULT_KILL_GRACE,
    DEFAULT_NODE_CONNECT_TIMEOUT, DEFAULT_STOP_GRACE,
};
pub use error::DaemonError;
pub use fd_limit::raise_fd_limit;
pub use result::DataflowResult;
pub use router::{router_endpoints, run_router, RouterConfig};
pub use routing::NodeCounters;

/// The Zenoh configuration and publication options of the cross-machine data plane, public so
/// that a baseline (`adora-bench-net`) uses exactly what the daemons use.
pub mod zenoh_setup {
    pub use crate::remote::session_config::{session_config, CONGESTION, EXPRESS, RELIABILITY};
    pub use crate::remote::RemoteError;
}

/// Runs one dataflow on this machine until every node has exited, or until `shutdown` is
/// cancelled (then the nodes are stopped gracefully). Node logs go to `logs` as they are printed.
/// Returns once every task of the daemon finished (or [`TASK_SHUTDOWN_GRACE`] passed, reporting
/// the stragglers).
pub async fn run_dataflow(
    config: DaemonConfig,
    spec: DataflowSpec,
    logs: mpsc::UnboundedSender<NodeLogLine>,
    shutdown: CancellationToken,
) -> Result<DataflowResult, DaemonError> {
    run_dataflow_tapped(config, spec, logs, shutdown, None).await
}

/// [`run_dataflow`] with a tap copying outputs from the first message on (`adora run
/// --record`); the tap's receiver ends when the dataflow does.
pub async fn run_dataflow_tapped(
    config: DaemonConfig,
    spec: DataflowSpec,
    logs: mpsc::UnboundedSender<NodeLogLine>,
    shutdown: CancellationToken,
    tap: Option<tap::Tap>,
) -> Result<DataflowResult, DaemonError> {
    fd_limit::raise_fd_limit();
    dataflow::remove_orphaned_segments();
    let daemon = actor::Daemon::bind(config).await?;
    if let Some(tap) = tap {
        daemon.taps.add(tap);
    }
    daemon.run_single(spec, logs, shutdown).await
}

/// Checks a Zenoh listen endpoint (`tcp/<ip>:<port>`, or `tls/` with the same meaning; port 0 lets Zenoh pick a free port when
/// the session opens, and the daemon reports the one it bound).
pub fn validate_zenoh_listen(listen: &str) -> Result<(), String> {
    remote::parse_listen(listen)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Capacity of the channel from the coordinator link to the actor.
const LINK_CHANNEL_CAPACITY: usize = 1024;

/// Runs the daemon as a service until `shutdown` is cancelled: it registers with the coordinator,
/// runs what it is told, and keeps its nodes running when the coordinator goes away (it
/// reconnects forever). On shutdown it leaves the coordinator, then every dataflow is stopped
/// gracefully; returns once every task of the daemon finished (or [`TASK_SHUTDOWN_GRACE`]
/// passed, reporting the stragglers). Fails with [`DaemonError::Refused`] when the coordinator
/// refuses it (another daemon with its machine id is connected).
pub async fn run(config: ServiceConfig, shutdown: CancellationToken) -> Result<(), DaemonError> {
    fd_limit::raise_fd_limit();
    dataflow::remove_orphaned_segments();
    let mut daemon = actor::Daemon::bind(config.daemon.clone()).await?;
    let tasks = daemon.tasks().clone();
    let (commands_tx, commands_rx) = mpsc::channel(LINK_CHANNEL_CAPACITY);
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    daemon.enable_remote(
        config.zenoh_listen.clone(),
        config.zenoh_tls.clone(),
        reports_tx.clone(),
    );
    daemon.zenoh_routers = config.zenoh_routers.clone();
    daemon.site = config.site.clone();
    daemon.locks = locks::Locks::with_coordinator(reports_tx.clone());
    let mut service =
        actor::service::Service::new(reports_tx, config.log_root.clone(), tasks.clone());
    let distribution = distribute::Context {
        coordinator_addr: config.coordinator_addr.clone(),
        auth: config.auth.clone(),
        machine: config
            .machine_id
            .clone()
            .unwrap_or_else(|| "default".into()),
        artifact_dir: config.artifact_dir.clone(),
        git_cache: config.artifact_dir.join("git"),
    };
    service.distribution = Some((distribution, commands_tx.clone()));
    let link_shutdown = tasks.cancel_token().child_token();
    // The actor's own stop: a signal, the coordinator's `Shutdown`, or a refused registration.
    let stop = CancellationToken::new();
    // A daemon stopped by a signal (`systemctl stop`, a reboot) leaves the coordinator first,
    // like a crashed one: its nodes stop here, but their dataflows stay running and get them
    // back when it returns (auto-recovery), instead of ending as finished.
    let (detach, stop_on_signal) = (link_shutdown.clone(), stop.clone());
    tasks.spawn_until_cancelled("leaving the coordinator on a signal", async move {
        shutdown.cancelled().await;
        detach.cancel();
        stop_on_signal.cancel();
    });
    let link = coordinator::run_link(config, commands_tx, reports_rx, link_shutdown);
    // A refused registration stops the whole daemon: never two daemons for one machine.
    let stop_on_refusal = stop.clone();
    let link = tasks.spawn("the link to the coordinator", async move {
        let refused = link.await;
        if refused.is_some() {
            stop_on_refusal.cancel();
        }
        refused
    });
    // On a runtime worker, not the thread blocked in `block_on`: a message then costs no
    // cross-thread wake-up between the connection tasks and the actor.
    let actor = daemon.run_service(commands_rx, service, stop);
    if let Err(e) = tasks.spawn("the daemon actor", actor).await {
        tracing::error!("the daemon actor failed: {e}");
    }
    tasks.shutdown(TASK_SHUTDOWN_GRACE).await;
    match link.await {
        Ok(Some(refused)) => Err(refused.into()),
        _ => Ok(()),
    }
}
