//! `adora-message`: every type that crosses a process boundary in Adora, one module per direction,
//! kept separate from their encoding ([`codec`]).
//!
//! Local data plane (node ↔ daemon over a Unix socket): [`node_to_daemon`], [`daemon_to_node`].
//! Types shared by several directions live in [`common`]; the Arrow layout of payloads in
//! [`arrow_layout`].
//!
//! Control plane (JSON text frames over WebSocket, opened by the handshake of [`envelope`]):
//! [`cli_to_coordinator`], [`coordinator_to_cli`], [`daemon_to_coordinator`],
//! [`coordinator_to_daemon`]; their shared types live in [`control`], per-node figures in
//! [`stats`]. A daemon's enrollment with a join code (plain HTTP JSON, not the WebSocket) and
//! the join-code types live in [`enroll`]; moving a running node between daemons in
//! [`relocation`]; the Zenoh data links between daemons in [`data_links`].

pub mod arrow_layout;
pub mod cli_to_coordinator;
pub mod codec;
pub mod common;
pub mod control;
pub mod coordinator_to_cli;
pub mod coordinator_to_daemon;
pub mod daemon_to_coordinator;
pub mod daemon_to_daemon;
pub mod daemon_to_node;
pub mod data_links;
pub mod depth_limit;
pub mod distribute;
pub mod enroll;
pub mod envelope;
pub mod maintenance;
pub mod node_to_daemon;
pub mod relocation;
pub mod stats;
pub mod tap;

pub use common::{
    DataRef, InputLaneRef, LaneEntry, LaneRef, Metadata, NodeConfig, NodeLanes, OutputLanes,
    Parameter, SegmentFile, SharedRef, TapCopy, Timestamp,
};

/// Version of the node ↔ daemon protocol; a node built against another version is rejected at
/// registration with a clear message. Version 4: lanes (`NodeConfig::lanes`, `SendOutputDirect`,
/// `LaneEvicted`); a node of version 3 would not read its lanes. Version 5: the taps lane
/// (`NodeLanes::taps`, `taps_before` in `SendOutput` and `SendOutputDirect`). Version 6: samples
/// read through lanes go back to their sender's pool through holder words in the sample
/// (`InputLaneRef::bit`, `DaemonReply::LanesReleased`), not through the daemon. Version 7: an
/// empty lane puts its next entry into its first slot again (`adora_shm::Lane`, whose segments
/// say `ADLANE02`); a node of version 6 would look for entries in other slots.
pub const NODE_PROTOCOL_VERSION: u32 = 7;

/// The version of Adora this crate belongs to: the package version, plus the suffix in the
/// environment variable `ADORA_VERSION_SUFFIX` when it was set at build time (see `build.rs`).
pub const ADORA_VERSION: &str = env!("ADORA_FULL_VERSION");
