//! The daemon actor: one task owns every dataflow's state and drains one event channel.
//! Connection tasks, process watchers and timers only send events here.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use adora_message::control::NodeLogLine;
use tokio::{
    net::UnixListener,
    sync::{mpsc, oneshot},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod handlers;
mod remote_session;
pub(crate) mod service;

use crate::{
    config::{DaemonConfig, DataflowSpec},
    dataflow::{Dataflow, Launch},
    error::DaemonError,
    event::Event,
    node_conn,
    remote::RemoteDataPlane,
    result::DataflowResult,
    tap::Taps,
};
use adora_tasks::{Tasks, SHUTDOWN_GRACE as TASK_SHUTDOWN_GRACE};

/// Capacity of the actor's event channel; connection tasks wait when it is full (backpressure on
/// fast senders instead of unbounded memory).
pub const EVENT_CHANNEL_CAPACITY: usize = 4096;

/// A handler slower than this is logged: it delays every message of every dataflow.
const SLOW_HANDLER: Duration = Duration::from_millis(100);

pub(crate) struct Daemon {
    config: DaemonConfig,
    socket: PathBuf,
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    dataflows: HashMap<Uuid, Dataflow>,
    hlc: uhlc::HLC,
    /// Owns every task of this daemon (connections, watchers, timers, links).
    tasks: Tasks,
    /// The cross-machine data plane, once the coordinator told this daemon its peers.
    pub(crate) remote: RemoteState,
    /// Where `ZenohListening` reports go (a service daemon's link to the coordinator).
    pub(crate) remote_reports: Option<crate::event::Reports>,
    /// The address this machine uses to reach the coordinator: an unspecified listen IP becomes
    /// this one, so the session listens where the daemon tells its peers to connect.
    pub(crate) link_ip: Option<std::net::IpAddr>,
    /// Zenoh over mutual TLS with these files; `None`: plain TCP.
    pub(crate) zenoh_tls: Option<crate::config::ZenohTls>,
    /// The site's router endpoints the session connects to (none without a site).
    pub(crate) zenoh_routers: Vec<String>,
    /// The site of this machine, if any.
    pub(crate) site: Option<String>,
    /// The data links the coordinator asked for before the session was open.
    pub(crate) pending_links: Option<Vec<adora_message::data_links::DataPeer>>,
    /// The update locks of this daemon's nodes.
    pub(crate) locks: crate::locks::Locks,
    /// Copies of tapped outputs (`adora record`, `adora topic`).
    pub(crate) taps: Taps,
}

/// The daemon's Zenoh session, opened on the first `Peers` command.
#[derive(Default)]
pub(crate) enum RemoteState {
    /// `adora run`, or no listen endpoint: everything is local.
    #[default]
    Disabled,
    /// Will listen here once the peers are known.
    Waiting(String),
    /// Opening the session.
    Opening,
    /// Open.
    Open(std::sync::Arc<RemoteDataPlane>),
}

impl Daemon {
    /// Creates the run directory and binds the node socket.
    pub async fn bind(config: DaemonConfig) -> Result<Self, DaemonError> {
        let socket = config.run_dir.join("daemon.sock");
        let listener = bind_socket(&config, &socket)?;
        let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let tasks = Tasks::default();
        let taps = Taps::default();
        tasks.spawn(
            "the node socket",
            node_conn::accept_loop(listener, events_tx.clone(), taps.clone(), tasks.clone()),
        );
        Ok(Self {
            config,
            socket,
            events_tx,
            events_rx,
            dataflows: HashMap::new(),
            hlc: uhlc::HLC::default(),
            tasks,
            remote: RemoteState::Disabled,
            remote_reports: None,
            link_ip: None,
            zenoh_tls: None,
            zenoh_routers: Vec::new(),
            site: None,
            pending_links: None,
            locks: Default::default(),
            taps,
        })
    }

    /// The owner of this daemon's tasks.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// What a dataflow needs from this daemon to start its nodes.
    fn launch(&self) -> Launch<'_> {
        Launch {
            config: &self.config,
            socket: &self.socket,
            events: &self.events_tx,
            tasks: &self.tasks,
            taps: &self.taps,
        }
    }

    /// Runs one dataflow to completion; cancelling `shutdown` stops it gracefully. Returns once
    /// every task of the daemon finished (or [`TASK_SHUTDOWN_GRACE`] passed).
    pub async fn run_single(
        mut self,
        spec: DataflowSpec,
        logs: mpsc::UnboundedSender<NodeLogLine>,
        shutdown: CancellationToken,
    ) -> Result<DataflowResult, DaemonError> {
        let id = spec.id;
        let (done_tx, done_rx) = oneshot::channel();
        let tasks = self.tasks.clone();
        let dataflow = match Dataflow::start(self.launch(), spec, logs, done_tx) {
            Ok(dataflow) => dataflow,
            Err(e) => {
                // Nothing was spawned: only the socket's accept loop runs.
                tasks.shutdown(TASK_SHUTDOWN_GRACE).await;
                let _ = std::fs::remove_file(&self.socket);
                return Err(e);
            }
        };
        self.dataflows.insert(id, dataflow);
        // The loop runs as a runtime task rather than on the caller's thread (often the
        // `block_on` thread): a connection task that wakes it, and the reply task it wakes in
        // turn, then run on the same worker thread (tokio's LIFO slot) instead of each message
        // waking another thread through a futex.
        let actor = tasks.spawn(
            format!("the daemon actor (dataflow {id})"),
            self.single_loop(id, done_rx, shutdown),
        );
        let result = actor.await;
        tasks.shutdown(TASK_SHUTDOWN_GRACE).await;
        match result {
            Ok(result) => Ok(result),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only when the runtime itself shuts down.
            Err(_) => Ok(DataflowResult::default()),
        }
    }

    async fn single_loop(
        mut self,
        id: Uuid,
        mut done_rx: oneshot::Receiver<DataflowResult>,
        shutdown: CancellationToken,
    ) -> DataflowResult {
        let mut stop_requested = false;
        let result = loop {
            tokio::select! {
                result = &mut done_rx => break result.unwrap_or_default(),
                _ = shutdown.cancelled(), if !stop_requested => {
                    stop_requested = true;
                    self.stop_dataflow(id);
                }
                Some(event) = self.events_rx.recv() => self.handle(event),
            }
        };
        self.tasks.cancel_token().cancel();
        let _ = std::fs::remove_file(&self.socket);
        result
    }

    fn stop_dataflow(&mut self, id: Uuid) {
        if let Some(df) = self.dataflows.get_mut(&id) {
            df.stop(&self.events_tx, &self.config);
        }
    }

    fn handle(&mut self, event: Event) {
        let started = Instant::now();
        let kind = event.kind();
        self.dispatch(event);
        let elapsed = started.elapsed();
        if elapsed > SLOW_HANDLER {
            tracing::warn!("daemon handler for {kind} took {elapsed:?}");
        }
    }

    /// One handler per event; the handlers live in `actor/handlers.rs`.
    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Register {
                dataflow,
                node,
                channel,
                protocol_version,
                reply,
            } => self.register(dataflow, &node, channel, protocol_version, reply),
            Event::SendOutput {
                dataflow,
                node,
                output,
                metadata,
                data,
            } => self.with(dataflow, |df, _| {
                df.send_output(&node, &output, metadata, data)
            }),
            event @ Event::SendOutputDirect { .. } => self.lane_event(event),
            Event::CloseOutputs {
                dataflow,
                node,
                outputs,
            } => self.with(dataflow, |df, _| df.close_outputs(&node, &outputs)),
            Event::DroppedSamples {
                dataflow,
                node,
                tokens,
            } => self.with(dataflow, |df, _| df.dropped_samples(&node, tokens)),
            Event::NextEvents {
                dataflow,
                node,
                dropped,
                reply,
            } => self.with(dataflow, |df, _| df.next_events(&node, dropped, reply)),
            Event::NextFreed {
                dataflow,
                node,
                reply,
            } => self.with(dataflow, |df, _| df.routing.next_freed(&node, reply)),
            Event::Batch { dataflow, events } => self.batch(dataflow, events),
            event @ Event::AwaitRoom { .. } => self.await_room(event),
            Event::ControlClosed { dataflow, node } => {
                self.settle(dataflow, |df, env| df.control_closed(&node, env.events))
            }
            event @ (Event::NodeExited { .. }
            | Event::TakeLock { .. }
            | Event::ReleaseLock { .. }
            | Event::LockTimeout { .. }
            | Event::EscalateNodes { .. }) => self.maintenance_event(event),
            Event::TimerTick { dataflow, interval } => self.timer_tick(dataflow, interval),
            event @ Event::LogLine { .. } => self.log_line(event),
            Event::InputDeadlines { dataflow } => self.with(dataflow, |df, _| df.expire_inputs()),
            Event::HealthCheck { dataflow } => self.with(dataflow, |df, _| df.check_health()),
            Event::SweepPools { dataflow } => self.settle(dataflow, |df, env| {
                df.sweep_ended_pools(env.events);
                // It may have waited for its publishers only.
                df.is_finished()
            }),
            Event::ConnectLate { dataflow, after } => {
                self.with(dataflow, |df, _| df.connect_late(after))
            }
            Event::ConnectTimeout { dataflow } => self.with(dataflow, |df, env| {
                df.connect_timeout(env.config.node_connect_timeout, env.events, env.config)
            }),
            Event::Escalate { dataflow, step } => self.with(dataflow, |df, env| {
                df.escalate(step, env.events, env.config)
            }),
            Event::RestartNode { dataflow, node } => {
                self.settle(dataflow, |df, env| df.restart_node(&node, env.events))
            }
            Event::Move(step) => self.move_event(step),
            Event::RemoteOpened(result) => self.remote_opened(result),
            event @ (Event::Remote(_)
            | Event::RemoteMissing { .. }
            | Event::RemoteMatched { .. }) => self.remote_event(event),
        }
    }
}

/// Creates the run directory and binds the node socket there (removing a stale one).
fn bind_socket(
    config: &DaemonConfig,
    socket: &std::path::Path,
) -> Result<UnixListener, DaemonError> {
    let io = |what: String| move |source| DaemonError::Io { what, source };
    std::fs::create_dir_all(&config.run_dir)
        .map_err(io(format!("cannot create {}", config.run_dir.display())))?;
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(io(format!(
                "cannot remove stale socket {}",
                socket.display()
            ))(e))
        }
    }
    UnixListener::bind(socket).map_err(io(format!("cannot listen on {}", socket.display())))
}
