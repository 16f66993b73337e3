//! The messages the daemon's tasks send to its actor. A leaf: connection tasks, process watchers,
//! timers and the coordinator link all speak these types; only the actor acts on them.

use std::{process::ExitStatus, sync::Arc, time::Duration};

use adora_core::{DataId, NodeId};
use adora_message::{
    daemon_to_coordinator::DaemonMessage,
    envelope::Envelope,
    node_to_daemon::{Channel, NodeRequest},
    Metadata,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{
    remote::{feed::Missing, FromRemote, RemoteDataPlane, RemoteSample},
    routing::Waiter,
};

/// Everything the actor reacts to.
#[derive(Debug)]
pub(crate) enum Event {
    /// A node connection registers (answered once accepted, or parked at the start barrier).
    Register {
        dataflow: Uuid,
        node: NodeId,
        channel: Channel,
        protocol_version: u32,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A node sent a message on one of its outputs.
    SendOutput {
        dataflow: Uuid,
        node: NodeId,
        output: DataId,
        metadata: Metadata,
        data: adora_message::DataRef,
    },
    /// A node sent a message that the lanes of `served` took (see `routing/lanes.rs`).
    SendOutputDirect {
        dataflow: Uuid,
        node: NodeId,
        output: DataId,
        metadata: Metadata,
        data: adora_message::DataRef,
        served: Vec<(NodeId, DataId)>,
    },
    /// A node will not send on these outputs again.
    CloseOutputs {
        dataflow: Uuid,
        node: NodeId,
        outputs: Vec<DataId>,
    },
    /// A node released shared samples it had received.
    DroppedSamples {
        dataflow: Uuid,
        node: NodeId,
        tokens: Vec<u64>,
    },
    /// A node's events connection waits for its next events.
    NextEvents {
        dataflow: Uuid,
        node: NodeId,
        /// Shared samples the node dropped since its previous request.
        dropped: Vec<u64>,
        reply: Waiter,
    },
    /// A node's drops connection waits for samples its receivers released.
    NextFreed {
        dataflow: Uuid,
        node: NodeId,
        reply: Waiter,
    },
    /// A node's control connection closed after its last frame was handled.
    ControlClosed { dataflow: Uuid, node: NodeId },
    /// Several requests a node's control connection had already received, in order. Receivers
    /// are answered once the whole batch is routed.
    Batch { dataflow: Uuid, events: Vec<Event> },
    /// A line a node printed (or its log entry as JSON), to send on one of its log outputs
    /// (`send_stdout_as`, `send_logs_as`).
    LogLine {
        dataflow: Uuid,
        node: NodeId,
        output: DataId,
        message: (Metadata, adora_message::DataRef),
    },
    /// A node process exited (its log readers drained or timed out).
    NodeExited {
        dataflow: Uuid,
        node: NodeId,
        status: std::io::Result<ExitStatus>,
        stderr_tail: Vec<String>,
    },
    /// A timer input fired.
    TimerTick { dataflow: Uuid, interval: Duration },
    /// Time to close the inputs whose `input_timeout` passed.
    InputDeadlines { dataflow: Uuid },
    /// Time to check the nodes that have a `health_check_timeout`.
    HealthCheck { dataflow: Uuid },
    /// Time to look again for samples of ended node instances that nobody holds any more.
    SweepPools { dataflow: Uuid },
    /// Some nodes may be slow to connect: name the ones that have not yet (the connect timeout
    /// still decides).
    ConnectLate { dataflow: Uuid, after: Duration },
    /// The time every node had to connect is over.
    ConnectTimeout { dataflow: Uuid },
    /// A stop grace expired: the next signal is due.
    Escalate { dataflow: Uuid, step: Escalation },
    /// Start the next instance of a node whose restart policy brought it back.
    RestartNode { dataflow: Uuid, node: NodeId },
    /// A timed step of a node moving in or out.
    Move(MoveStep),
    /// The daemon's Zenoh session opened (or could not).
    RemoteOpened(Result<Arc<RemoteDataPlane>, String>),
    /// A message from a node on another machine.
    Remote(RemoteSample),
    /// Messages of a node on another machine went missing on the way (counted by the lanes'
    /// feed, `remote/feed.rs`).
    RemoteMissing {
        dataflow: Uuid,
        node: NodeId,
        output: DataId,
        missing: Missing,
    },
    /// A subscriber on another machine matched a published output.
    RemoteMatched {
        dataflow: Uuid,
        node: NodeId,
        output: DataId,
    },
    /// A node asks for an update lock (answered on its control connection).
    TakeLock {
        dataflow: Uuid,
        node: NodeId,
        lock: u64,
        reason: String,
        reply: crate::locks::LockReply,
    },
    /// A node released an update lock.
    ReleaseLock {
        dataflow: Uuid,
        node: NodeId,
        lock: u64,
    },
    /// The coordinator did not answer a lock request in time.
    LockTimeout { request: u64 },
    /// A node waits until the receivers of one of its outputs have room (answered on its
    /// control connection; see `routing/room.rs`).
    AwaitRoom {
        dataflow: Uuid,
        node: NodeId,
        output: DataId,
        reply: oneshot::Sender<()>,
    },
    /// Nodes stopped on their own did not exit within a grace period.
    EscalateNodes {
        dataflow: Uuid,
        nodes: Vec<NodeId>,
        step: Escalation,
    },
}

impl Event {
    /// The event's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Register { .. } => "register",
            Event::SendOutput { .. } => "send_output",
            Event::SendOutputDirect { .. } => "send_output_direct",
            Event::CloseOutputs { .. } => "close_outputs",
            Event::DroppedSamples { .. } => "dropped_samples",
            Event::NextEvents { .. } => "next_events",
            Event::NextFreed { .. } => "next_freed",
            Event::ControlClosed { .. } => "control_closed",
            Event::Batch { .. } => "batch",
            Event::LogLine { .. } => "log_line",
            Event::NodeExited { .. } => "node_exited",
            Event::TimerTick { .. } => "timer_tick",
            Event::InputDeadlines { .. } => "input_deadlines",
            Event::HealthCheck { .. } => "health_check",
            Event::SweepPools { .. } => "sweep_pools",
            Event::ConnectLate { .. } => "connect_late",
            Event::ConnectTimeout { .. } => "connect_timeout",
            Event::Escalate { .. } => "escalate",
            Event::RestartNode { .. } => "restart_node",
            Event::Move(MoveStep::ArrivalPatience { .. }) => "arrival_patience",
            Event::Move(MoveStep::SettleLinks { .. }) => "settle_links",
            Event::Move(MoveStep::EvictNode { .. }) => "evict_node",
            Event::Move(MoveStep::CheckCut { .. }) => "check_cut",
            Event::RemoteOpened(_) => "remote_opened",
            Event::Remote(_) => "remote",
            Event::RemoteMissing { .. } => "remote_missing",
            Event::RemoteMatched { .. } => "remote_matched",
            Event::TakeLock { .. } => "take_lock",
            Event::ReleaseLock { .. } => "release_lock",
            Event::LockTimeout { .. } => "lock_timeout",
            Event::AwaitRoom { .. } => "await_room",
            Event::EscalateNodes { .. } => "escalate_nodes",
        }
    }
}

/// The timed steps of a node moving in or out (`dataflow/relocate.rs`, `dataflow/arrival.rs`).
#[derive(Debug)]
pub(crate) enum MoveStep {
    /// A node arriving in a move waited long enough for its remote inputs.
    ArrivalPatience { dataflow: Uuid, node: NodeId },
    /// After a move, the links only the old instance needed end now.
    SettleLinks { dataflow: Uuid },
    /// A node leaving after a cut: time to check whether its inputs reached the cut.
    CheckCut {
        dataflow: Uuid,
        node: NodeId,
        /// When its `Leave` arrived.
        since: std::time::Instant,
    },
    /// The stop grace of a node leaving this daemon expired: the next signal is due.
    EvictNode {
        dataflow: Uuid,
        node: NodeId,
        step: Escalation,
    },
}

/// The next step of a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escalation {
    /// Stop grace expired: SIGTERM.
    Terminate,
    /// Kill grace expired: SIGKILL.
    Kill,
}

impl Escalation {
    /// The signal of this step.
    pub fn signal(self) -> nix::sys::signal::Signal {
        match self {
            Escalation::Terminate => nix::sys::signal::Signal::SIGTERM,
            Escalation::Kill => nix::sys::signal::Signal::SIGKILL,
        }
    }
}

/// Outgoing messages to the coordinator (queued while disconnected).
pub(crate) type Reports = mpsc::UnboundedSender<Envelope<DaemonMessage>>;

/// The actor event for a request on a node's control connection; `None` for requests that
/// belong on another connection.
pub(crate) fn request_event(dataflow: Uuid, node: &NodeId, request: NodeRequest) -> Option<Event> {
    let node = node.clone();
    Some(match request {
        NodeRequest::SendOutput {
            output,
            metadata,
            data,
            taps_before: _,
        } => Event::SendOutput {
            dataflow,
            node,
            output,
            metadata,
            data,
        },
        NodeRequest::SendOutputDirect {
            output,
            metadata,
            data,
            served,
            taps_before: _,
        } => Event::SendOutputDirect {
            dataflow,
            node,
            output,
            metadata,
            data,
            served,
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
        NodeRequest::ReleaseUpdateLock { lock } => Event::ReleaseLock {
            dataflow,
            node,
            lock,
        },
        NodeRequest::Register { .. }
        | NodeRequest::NextEvents { .. }
        | NodeRequest::TakeUpdateLock { .. }
        | NodeRequest::AwaitRoom { .. } => return None,
    })
}

impl From<RemoteSample> for Event {
    fn from(sample: RemoteSample) -> Self {
        Event::Remote(sample)
    }
}

impl FromRemote for Event {
    fn batch(dataflow: Uuid, events: Vec<Self>) -> Vec<Self> {
        vec![Event::Batch { dataflow, events }]
    }

    fn missing(dataflow: Uuid, node: NodeId, output: DataId, missing: Missing) -> Option<Self> {
        Some(Event::RemoteMissing {
            dataflow,
            node,
            output,
            missing,
        })
    }
}
