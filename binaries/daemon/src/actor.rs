//! The daemon actor: one task owns every dataflow's state and drains one event channel.
//! Connection tasks, process watchers and timers only send events here.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::ExitStatus,
    sync::Arc,
    time::{Duration, Instant},
};

use adora_core::{DataId, NodeId};
use adora_message::{
    node_to_daemon::{Channel, NodeRequest},
    Metadata, NODE_PROTOCOL_VERSION,
};
use tokio::{
    net::UnixListener,
    sync::{mpsc, oneshot},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod remote_session;
pub(crate) mod service;

use crate::{
    dataflow::{Dataflow, Escalation},
    node_conn,
    remote::{RemoteDataPlane, RemoteSample},
    routing::Waiter,
    DaemonConfig, DaemonError, DataflowResult, DataflowSpec, LogLine,
};

/// Capacity of the actor's event channel; connection tasks wait when it is full (backpressure on
/// fast senders instead of unbounded memory).
pub const EVENT_CHANNEL_CAPACITY: usize = 4096;

/// A handler slower than this is logged: it delays every message of every dataflow.
const SLOW_HANDLER: Duration = Duration::from_millis(100);

/// Everything the actor reacts to.
#[derive(Debug)]
pub(crate) enum Event {
    Register {
        dataflow: Uuid,
        node: NodeId,
        channel: Channel,
        protocol_version: u32,
        reply: oneshot::Sender<Result<(), String>>,
    },
    SendOutput {
        dataflow: Uuid,
        node: NodeId,
        output: DataId,
        metadata: Metadata,
        data: adora_message::DataRef,
    },
    CloseOutputs {
        dataflow: Uuid,
        node: NodeId,
        outputs: Vec<DataId>,
    },
    DroppedSamples {
        dataflow: Uuid,
        node: NodeId,
        tokens: Vec<u64>,
    },
    NextEvents {
        dataflow: Uuid,
        node: NodeId,
        /// Shared samples the node dropped since its previous request.
        dropped: Vec<u64>,
        reply: Waiter,
    },
    NextFreed {
        dataflow: Uuid,
        node: NodeId,
        reply: Waiter,
    },
    ControlClosed {
        dataflow: Uuid,
        node: NodeId,
    },
    /// Several requests a node's control connection had already received, in order. Receivers
    /// are answered once the whole batch is routed.
    Batch {
        dataflow: Uuid,
        events: Vec<Event>,
    },
    NodeExited {
        dataflow: Uuid,
        node: NodeId,
        status: std::io::Result<ExitStatus>,
        stderr_tail: Vec<String>,
    },
    TimerTick {
        dataflow: Uuid,
        interval: Duration,
    },
    ConnectTimeout {
        dataflow: Uuid,
    },
    Escalate {
        dataflow: Uuid,
        step: Escalation,
    },
    /// Start the next instance of a node whose restart policy brought it back.
    RestartNode {
        dataflow: Uuid,
        node: NodeId,
    },
    /// The daemon's Zenoh session opened (or could not).
    RemoteOpened(Result<Arc<RemoteDataPlane>, String>),
    /// A message from a node on another machine.
    Remote(RemoteSample),
    /// A subscriber on another machine matched a published output.
    RemoteMatched {
        dataflow: Uuid,
        node: NodeId,
        output: DataId,
    },
}

pub(crate) struct Daemon {
    config: DaemonConfig,
    socket: PathBuf,
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    dataflows: HashMap<Uuid, Dataflow>,
    hlc: uhlc::HLC,
    cancel: CancellationToken,
    /// The cross-machine data plane, once the coordinator told this daemon its peers.
    pub(crate) remote: RemoteState,
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
    Open(Arc<RemoteDataPlane>),
}

impl Daemon {
    /// Creates the run directory and binds the node socket.
    pub async fn bind(config: DaemonConfig) -> Result<Self, DaemonError> {
        let io = |what: String| move |source| DaemonError::Io { what, source };
        std::fs::create_dir_all(&config.run_dir)
            .map_err(io(format!("cannot create {}", config.run_dir.display())))?;
        let socket = config.run_dir.join("daemon.sock");
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io(format!(
                    "cannot remove stale socket {}",
                    socket.display()
                ))(e))
            }
        }
        let listener = UnixListener::bind(&socket)
            .map_err(io(format!("cannot listen on {}", socket.display())))?;
        let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let cancel = CancellationToken::new();
        tokio::spawn(node_conn::accept_loop(
            listener,
            events_tx.clone(),
            cancel.clone(),
        ));
        Ok(Self {
            config,
            socket,
            events_tx,
            events_rx,
            dataflows: HashMap::new(),
            hlc: uhlc::HLC::default(),
            cancel,
            remote: RemoteState::Disabled,
        })
    }

    /// Runs one dataflow to completion; cancelling `shutdown` stops it gracefully.
    pub async fn run_single(
        mut self,
        spec: DataflowSpec,
        logs: mpsc::UnboundedSender<LogLine>,
        shutdown: CancellationToken,
    ) -> Result<DataflowResult, DaemonError> {
        let id = spec.id;
        let (done_tx, mut done_rx) = oneshot::channel();
        let dataflow = Dataflow::start(
            &self.config,
            &self.socket,
            spec,
            logs,
            self.events_tx.clone(),
            done_tx,
        )?;
        self.dataflows.insert(id, dataflow);
        // The loop runs as a runtime task rather than on the caller's thread (often the
        // `block_on` thread): a connection task that wakes it, and the reply task it wakes in
        // turn, then run on the same worker thread (tokio's LIFO slot) instead of each message
        // waking another thread through a futex.
        let actor = tokio::spawn(async move {
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
            self.cancel.cancel();
            let _ = std::fs::remove_file(&self.socket);
            result
        });
        match actor.await {
            Ok(result) => Ok(result),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only when the runtime itself shuts down.
            Err(_) => Ok(DataflowResult::default()),
        }
    }

    fn stop_dataflow(&mut self, id: Uuid) {
        if let Some(df) = self.dataflows.get_mut(&id) {
            df.stop(&self.events_tx, &self.config);
        }
    }

    fn handle(&mut self, event: Event) {
        let started = Instant::now();
        let kind = event_kind(&event);
        self.dispatch(event);
        let elapsed = started.elapsed();
        if elapsed > SLOW_HANDLER {
            tracing::warn!("daemon handler for {kind} took {elapsed:?}");
        }
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Register {
                dataflow,
                node,
                channel,
                protocol_version,
                reply,
            } => {
                if protocol_version != NODE_PROTOCOL_VERSION {
                    let _ = reply.send(Err(format!(
                        "node protocol version {protocol_version} is not supported by this daemon (version {NODE_PROTOCOL_VERSION}, adora {}): rebuild the node against the same adora-node-api",
                        adora_message::ADORA_VERSION
                    )));
                    return;
                }
                match self.dataflows.get_mut(&dataflow) {
                    Some(df) => df.register(&node, channel, reply, &self.events_tx),
                    None => {
                        let _ = reply.send(Err(format!(
                            "dataflow {dataflow} is not running on this daemon"
                        )));
                    }
                }
            }
            Event::SendOutput {
                dataflow,
                node,
                output,
                metadata,
                data,
            } => {
                if let Some(df) = self.dataflows.get_mut(&dataflow) {
                    df.forward_remote(&node, &output, &metadata, &data);
                    df.routing.send_output(&node, &output, metadata, data);
                }
            }
            Event::CloseOutputs {
                dataflow,
                node,
                outputs,
            } => {
                if let Some(df) = self.dataflows.get_mut(&dataflow) {
                    let closed = df.routing.close_outputs(&node, &outputs);
                    df.remote_closed(&node, &closed);
                }
            }
            Event::DroppedSamples {
                dataflow,
                node,
                tokens,
            } => {
                if let Some(df) = self.dataflows.get_mut(&dataflow) {
                    df.routing.report_dropped(&node, tokens);
                    df.recycle_remote_samples();
                }
            }
            Event::NextEvents {
                dataflow,
                node,
                dropped,
                reply,
            } => match self.dataflows.get_mut(&dataflow) {
                Some(df) => {
                    if !dropped.is_empty() {
                        df.routing.report_dropped(&node, dropped);
                        df.recycle_remote_samples();
                    }
                    df.routing.next_events(&node, reply);
                }
                None => drop(reply),
            },
            Event::NextFreed {
                dataflow,
                node,
                reply,
            } => match self.dataflows.get_mut(&dataflow) {
                Some(df) => df.routing.next_freed(&node, reply),
                None => drop(reply),
            },
            Event::Batch { dataflow, events } => {
                if let Some(df) = self.dataflows.get_mut(&dataflow) {
                    df.routing.hold_wakes();
                }
                for event in events {
                    self.dispatch(event);
                }
                if let Some(df) = self.dataflows.get_mut(&dataflow) {
                    df.routing.release_wakes();
                }
            }
            Event::ControlClosed { dataflow, node } => {
                // The node dropped its handle (or died) and every frame it sent was handled.
                let finished = match self.dataflows.get_mut(&dataflow) {
                    Some(df) => df.control_closed(&node),
                    None => false,
                };
                if finished {
                    if let Some(df) = self.dataflows.remove(&dataflow) {
                        df.finish();
                    }
                }
            }
            Event::NodeExited {
                dataflow,
                node,
                status,
                stderr_tail,
            } => {
                let finished = match self.dataflows.get_mut(&dataflow) {
                    Some(df) => df.node_exited(&node, status, stderr_tail, &self.events_tx),
                    None => false,
                };
                if finished {
                    if let Some(df) = self.dataflows.remove(&dataflow) {
                        df.finish();
                    }
                }
            }
            Event::TimerTick { dataflow, interval } => {
                if let Some(df) = self.dataflows.get_mut(&dataflow) {
                    df.routing
                        .timer_tick(interval, Metadata::new(self.hlc.new_timestamp()));
                }
            }
            Event::ConnectTimeout { dataflow } => {
                if let Some(df) = self.dataflows.get_mut(&dataflow) {
                    df.connect_timeout(
                        self.config.node_connect_timeout,
                        &self.events_tx,
                        &self.config,
                    );
                }
            }
            Event::Escalate { dataflow, step } => {
                if let Some(df) = self.dataflows.get_mut(&dataflow) {
                    df.escalate(step, &self.events_tx, &self.config);
                }
            }
            Event::RestartNode { dataflow, node } => {
                let finished = match self.dataflows.get_mut(&dataflow) {
                    Some(df) => df.restart_node(&node, &self.events_tx),
                    None => false,
                };
                if finished {
                    if let Some(df) = self.dataflows.remove(&dataflow) {
                        df.finish();
                    }
                }
            }
            Event::RemoteOpened(result) => self.remote_opened(result),
            Event::Remote(sample) => {
                if let Some(df) = self.dataflows.get_mut(&sample.dataflow) {
                    df.remote_input(sample);
                }
            }
            Event::RemoteMatched {
                dataflow,
                node,
                output,
            } => {
                if let Some(df) = self.dataflows.get_mut(&dataflow) {
                    df.remote_matched(node, output, &self.events_tx);
                }
            }
        }
    }
}

fn event_kind(event: &Event) -> &'static str {
    match event {
        Event::Register { .. } => "register",
        Event::SendOutput { .. } => "send_output",
        Event::CloseOutputs { .. } => "close_outputs",
        Event::DroppedSamples { .. } => "dropped_samples",
        Event::NextEvents { .. } => "next_events",
        Event::NextFreed { .. } => "next_freed",
        Event::ControlClosed { .. } => "control_closed",
        Event::Batch { .. } => "batch",
        Event::NodeExited { .. } => "node_exited",
        Event::TimerTick { .. } => "timer_tick",
        Event::ConnectTimeout { .. } => "connect_timeout",
        Event::Escalate { .. } => "escalate",
        Event::RestartNode { .. } => "restart_node",
        Event::RemoteOpened(_) => "remote_opened",
        Event::Remote(_) => "remote",
        Event::RemoteMatched { .. } => "remote_matched",
    }
}

// Keep NodeRequest referenced here so the mapping from requests to events stays in one place.
pub(crate) fn request_event(dataflow: Uuid, node: &NodeId, request: NodeRequest) -> Option<Event> {
    let node = node.clone();
    Some(match request {
        NodeRequest::SendOutput {
            output,
            metadata,
            data,
        } => Event::SendOutput {
            dataflow,
            node,
            output,
            metadata,
            data,
        },
        NodeRequest::CloseOutputs(outputs) => Event::CloseOutputs {
            dataflow,
            node,
            outputs,
        },
        NodeRequest::ReportDropTokens(tokens) => Event::DroppedSamples {
            dataflow,
            node,
            tokens,
        },
        _ => return None,
    })
}
