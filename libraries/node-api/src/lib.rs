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
//! Values are Arrow arrays on the wire, whatever the language: [`AdoraNode::send_arrow`] sends
//! one, [`Data::to_arrow`] reads one (raw bytes are a `UInt8` array).
//!
//! Payloads of at least [`adora_core::SHM_THRESHOLD`] bytes travel through shared memory: use
//! [`AdoraNode::allocate_sample`] + [`AdoraNode::send_sample`] to write them in place, without any
//! copy on the way to the receivers.

pub mod arrow;
mod data;
mod drops;
mod error;
mod event;
mod lanes;
mod node;
mod type_check;
mod update_lock;

pub use adora_core::{DataId, NodeId};
pub use adora_message::{Metadata, Parameter};
pub use data::{Data, MetadataParameters, Sample};
pub use error::NodeError;
pub use event::{Event, EventStream};
pub use node::AdoraNode;
pub use type_check::RUNTIME_TYPE_CHECK_ENV;
pub use update_lock::UpdateLock;
