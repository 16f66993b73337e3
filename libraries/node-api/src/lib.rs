//! `adora-node-api`: the Rust SDK for Adora nodes.
//!
//! ```no_run
//! use adora_node_api::{AdoraNode, Event, MetadataParameters};
//!
//! let (mut node, mut events) = AdoraNode::init_from_env()?;
//! while let Some(event) = events.recv() {
//!     match event {
//!         Event::Input { id, data, .. } if id.as_str() == "tick" => {
//!             node.send_output(&"counter".into(), MetadataParameters::new(), &data)?;
//!         }
//!         Event::Stop => break,
//!         _ => {}
//!     }
//! }
//! # Ok::<(), adora_node_api::NodeError>(())
//! ```
//!
//! Payloads of at least [`adora_core::SHM_THRESHOLD`] bytes travel through shared memory: use
//! [`AdoraNode::allocate_sample`] + [`AdoraNode::send_sample`] to write them in place, without any
//! copy on the way to the receivers.

mod data;
mod event;
mod node;

pub use adora_core::{DataId, NodeId};
pub use adora_message::{Metadata, Parameter};
pub use data::{Data, Sample};
pub use event::{Event, EventStream};
pub use node::AdoraNode;

/// User parameters attached to a message.
pub type MetadataParameters = std::collections::BTreeMap<String, Parameter>;

/// Errors of the node API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// `ADORA_NODE_CONFIG` is missing or invalid: the node was not started by an Adora daemon.
    #[error("{0} (is this node running under `adora run` or a daemon?)")]
    Config(String),
    /// Talking to the daemon failed.
    #[error("connection to the daemon failed: {0}")]
    Daemon(#[from] adora_message::codec::CodecError),
    /// The daemon refused the registration.
    #[error("the daemon refused the node: {0}")]
    Refused(String),
    /// The output is not declared in the dataflow.
    #[error("output `{0}` is not declared in the dataflow for this node")]
    UnknownOutput(DataId),
    /// Shared memory failed.
    #[error("shared memory: {0}")]
    Shm(#[from] adora_shm::Error),
    /// The daemon answered with an unexpected message.
    #[error("protocol error: {0}")]
    Protocol(String),
}
