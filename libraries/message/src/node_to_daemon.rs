//! Messages a node sends to its daemon over the Unix socket.
//!
//! A node opens three connections, each starting with [`NodeRequest::Register`]:
//! [`Channel::Control`] (fire-and-forget sends), [`Channel::Events`] (request/reply: the node asks for
//! its next events) and [`Channel::Drops`] (after registration only the daemon writes: it pushes
//! the tokens of the node's samples that every receiver released).

use adora_core::{DataId, NodeId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::{DataRef, Metadata};

/// Which of the node's three connections this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Channel {
    /// Outputs and other fire-and-forget requests.
    Control,
    /// Event polling.
    Events,
    /// Notifications that the node's shared-memory samples were released.
    Drops,
}

/// A request from a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeRequest {
    /// First message on every connection. Answered by `DaemonReply::Registered`.
    Register {
        /// Protocol version the node was built with.
        protocol_version: u32,
        /// Dataflow the node belongs to.
        dataflow_id: Uuid,
        /// The node's id.
        node_id: NodeId,
        /// Which connection this is.
        channel: Channel,
    },
    /// Send an output (control channel, no reply).
    SendOutput {
        /// Output id (must be declared in the dataflow).
        output: DataId,
        /// Metadata with the send timestamp.
        metadata: Metadata,
        /// Payload.
        data: DataRef,
        /// How many copies the node had written into its taps lane before this message (see
        /// `NodeLanes::taps`): a tap takes those first, so it sees every output in order.
        taps_before: u64,
    },
    /// The node will not send on these outputs again (control channel, no reply).
    CloseOutputs(Vec<DataId>),
    /// The node dropped these received shared-memory samples (control channel, no reply). Drops
    /// usually travel with the next [`NodeRequest::NextEvents`] instead; this is for drops that
    /// happen while the node is already waiting for events.
    ReportDropTokens(Vec<u64>),
    /// Ask for the next events; the daemon answers when at least one is available (events channel).
    NextEvents {
        /// Received shared-memory samples the node dropped since its previous request (handled
        /// as a [`NodeRequest::ReportDropTokens`] before the request).
        dropped: Vec<u64>,
    },
    /// Take an update lock on the node's machine (control channel): maintenance (`cluster
    /// upgrade`, `cluster drain`) waits until it is released. Answered on the control channel by
    /// `DaemonReply::UpdateLock` once the coordinator recorded it (or refused it).
    TakeUpdateLock {
        /// The lock's number, chosen by the node (unique within the node).
        lock: u64,
        /// Why (shown to operators).
        reason: String,
    },
    /// Release an update lock (control channel, no reply). A node's locks are also released when
    /// it exits.
    ReleaseUpdateLock {
        /// The lock's number.
        lock: u64,
    },
    /// Wait until every local receiver of `output` has room in its input queue for one more
    /// message (control channel): a sender that must not lose anything (`adora replay --speed
    /// 0`) asks before each send. Answered on the control channel by `DaemonReply::Room` once
    /// everything the node sent before is routed and there is room (a receiver that exited or
    /// closed that input needs none; receivers on other machines are not waited for).
    AwaitRoom {
        /// The output about to be sent on.
        output: DataId,
    },
    /// An output sent straight into the lanes of the receivers in `served` (control channel, no
    /// reply): the daemon routes it to the output's other receivers (other machines, taps, local
    /// receivers whose lane it closed) and holds a shared payload until those are done with it
    /// (`served` hold it through the holder words in the sample, see `adora_shm::release_lane`).
    /// A message every lane took and that has no receiver elsewhere is not sent to the daemon
    /// at all.
    SendOutputDirect {
        /// Output id.
        output: DataId,
        /// Metadata with the send timestamp.
        metadata: Metadata,
        /// Payload.
        data: DataRef,
        /// The (node, input) lanes that took it.
        served: Vec<(NodeId, DataId)>,
        /// As in [`NodeRequest::SendOutput`].
        taps_before: u64,
    },
}
