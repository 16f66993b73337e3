//! Messages a daemon sends to a node over the Unix socket.

use std::collections::BTreeMap;

use adora_core::DataId;
use serde::{Deserialize, Serialize};

use crate::common::{DataRef, Metadata};

/// A reply from the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DaemonReply {
    /// Answer to `Register`: `Err` carries a human-readable reason. A plain string on purpose: it
    /// refuses nodes of another protocol version, so its encoding must never change.
    Registered(Result<(), String>),
    /// Answer to `NextEvents`. An empty list means the stream has ended: no more events will come.
    Events {
        /// The events, oldest first.
        events: Vec<NodeEvent>,
        /// Cumulative number of messages dropped per input because its queue was full. Sent only
        /// when a count changed since the previous reply (empty otherwise): keep the last values.
        drop_counts: BTreeMap<DataId, u64>,
    },
    /// Pushed on the drops channel: tokens of samples every receiver released. Empty means the
    /// node is shutting down.
    FreedSamples(Vec<u64>),
    /// Pushed on the drops channel: an instance of the receiver of each of these lanes (the
    /// sender's lane, named as in `NodeLanes`) ended having taken every entry before the
    /// position given (`u64::MAX`: it is gone for good, its queued entries were discarded). The
    /// sender releases the lane's hold on those samples: the instance can no longer drop them.
    LanesReleased(Vec<(String, u64)>),
    /// Answer to `TakeUpdateLock` (control channel): `Err` says why the lock was refused (the
    /// machine is being upgraded or drained, the coordinator is not reachable).
    UpdateLock(Result<(), String>),
    /// Answer to `AwaitRoom` (control channel): the output's receivers have room for one more
    /// message (or the dataflow is ending).
    Room,
}

/// An event delivered to a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeEvent {
    /// A message arrived on an input.
    Input {
        /// Input id.
        id: DataId,
        /// Metadata from the sender.
        metadata: Metadata,
        /// Payload.
        data: DataRef,
    },
    /// The sender of this input finished: no more messages will arrive on it.
    InputClosed {
        /// Input id.
        id: DataId,
    },
    /// The dataflow is stopping: finish and exit.
    Stop,
    /// A runtime error concerning this node (the node keeps running).
    Error(String),
    /// A node this one receives from exited and is being restarted by its restart policy; its
    /// inputs stay open and messages resume once it is back.
    UpstreamRestarted {
        /// The upstream node.
        node: adora_core::NodeId,
        /// This node's inputs fed by it.
        inputs: Vec<DataId>,
    },
    /// A node this one receives from failed for good (no restart left); `InputClosed` follows.
    UpstreamFailed {
        /// The upstream node.
        node: adora_core::NodeId,
        /// This node's inputs fed by it.
        inputs: Vec<DataId>,
        /// Why it failed.
        reason: String,
    },
}
