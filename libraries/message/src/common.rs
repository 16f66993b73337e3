//! Types shared by several protocol directions.

use std::{collections::BTreeMap, path::PathBuf};

use adora_core::{DataId, NodeId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::arrow_layout::TypeInfo;

/// A hybrid-logical-clock timestamp (time since the Unix epoch plus the clock's id), taken when
/// a message is sent; receivers compare it with their own clock to measure latency.
pub type Timestamp = uhlc::Timestamp;

/// Metadata travelling with every message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// When the message was sent (set by the sender's node API).
    pub timestamp: Timestamp,
    /// How the payload is laid out as an Arrow array (plain bytes unless the sender said otherwise).
    pub type_info: TypeInfo,
    /// User parameters.
    pub parameters: BTreeMap<String, Parameter>,
}

impl Metadata {
    /// Metadata of a plain-bytes payload with a timestamp and no parameters.
    pub fn new(timestamp: Timestamp) -> Self {
        Self {
            timestamp,
            type_info: TypeInfo::bytes(),
            parameters: BTreeMap::new(),
        }
    }
}

/// A user parameter value in [`Metadata`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Parameter {
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A string.
    String(String),
    /// A list of integers.
    ListInt(Vec<i64>),
    /// A list of floats.
    ListFloat(Vec<f64>),
    /// A list of strings.
    ListString(Vec<String>),
}

/// Where a message's payload is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataRef {
    /// Small payloads travel inline in the frame. Encoded as one byte string (same bincode wire
    /// format as a `Vec<u8>` sequence, but one copy instead of a serde call per byte).
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Large payloads stay in a shared-memory sample of the sender; only this handle travels.
    Shared(SharedRef),
}

impl DataRef {
    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        match self {
            DataRef::Inline(v) => v.len(),
            DataRef::Shared(s) => s.len,
        }
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Handle to a shared-memory sample.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SharedRef {
    /// Name of the shared-memory segment.
    pub os_id: String,
    /// Number of payload bytes at the start of the segment.
    pub len: usize,
    /// Token identifying this in-flight sample; returned to the sender when every receiver dropped it.
    pub token: u64,
    /// The file the sender wrote into. A receiver that already has a mapping of this very file
    /// reuses it without asking the kernel what the name refers to now.
    pub file: SegmentFile,
}

/// Identity of the file behind a shared-memory segment name (device and inode number). It
/// changes when the name is removed and created again, e.g. by a restarted node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SegmentFile {
    /// Device number of the file system (`/dev/shm`).
    pub dev: u64,
    /// Inode number of the file.
    pub ino: u64,
}

/// The configuration a daemon hands a node in `ADORA_NODE_CONFIG` (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The dataflow this node instance belongs to.
    pub dataflow_id: Uuid,
    /// The node's id.
    pub node_id: NodeId,
    /// The daemon's Unix socket for this dataflow.
    pub daemon_socket: PathBuf,
    /// Inputs the node will receive.
    pub inputs: Vec<DataId>,
    /// Outputs the node may send.
    pub outputs: Vec<DataId>,
    /// Prefix for the names of the node's shared-memory segments.
    pub shm_prefix: String,
    /// Process id of the daemon that spawned the node. The node API asks the kernel to kill the
    /// node when that parent exits (`PR_SET_PDEATHSIG`), so a SIGKILLed daemon takes its nodes
    /// with it.
    #[serde(default)]
    pub daemon_pid: Option<u32>,
    /// The declared types of the node's outputs (`output_types`: output → type URN). With
    /// `ADORA_RUNTIME_TYPE_CHECK=warn|error` the node API checks what it sends against them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub output_types: BTreeMap<DataId, String>,
}
