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
    /// The shared-memory lanes of the node's local edges: messages on them go from node to node
    /// without the daemon. Absent: everything goes through the daemon.
    #[serde(default, skip_serializing_if = "NodeLanes::is_empty")]
    pub lanes: NodeLanes,
}

/// A node's lanes (see `adora_shm::Lane`): the inputs it reads from lanes and the lanes its
/// outputs write to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLanes {
    /// Input → the lane it reads.
    #[serde(default)]
    pub inputs: BTreeMap<DataId, InputLaneRef>,
    /// The FIFO the node sleeps on while it waits for its lanes (set when it has input lanes).
    #[serde(default)]
    pub bell: Option<PathBuf>,
    /// Output → the lanes of its local receivers.
    #[serde(default)]
    pub outputs: BTreeMap<DataId, OutputLanes>,
    /// The lane the node writes a copy of each inline message of an output a tap watches into
    /// ([`TapCopy`], numbered from 1), instead of sending it on its control socket: the daemon
    /// reads it every millisecond while a tap watches the node, and before a tapped message the
    /// node sent on its socket (`taps_before`). Full: the control socket.
    #[serde(default)]
    pub taps: Option<String>,
}

impl NodeLanes {
    /// Whether the node has no lane at all.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty() && self.outputs.is_empty()
    }
}

/// The lanes of one output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputLanes {
    /// One lane per local receiving input.
    pub lanes: Vec<LaneRef>,
    /// The daemon needs every message too (receivers on other machines): send it
    /// `SendOutputDirect` as well.
    #[serde(default)]
    pub daemon_copy: bool,
}

/// The lane of one input: its name and the node that writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputLaneRef {
    /// The lane's shared-memory name.
    pub lane: String,
    /// The sending node.
    pub sender: NodeId,
    /// `poll: spin`: the node busy-polls this lane a while before it sleeps.
    #[serde(default)]
    pub spin: bool,
    /// The lane's place among the lanes of its output in the sender's `NodeLanes` (the bit of
    /// the holder words of the output's samples, see `adora_shm::release_lane`): the receiver
    /// releases a shared sample it took from this lane by clearing that bit, and tells nobody.
    /// Lanes fed by a remote output have one too (the daemon's copies hold the same words).
    /// `None` (no holder bit): it reports the drop to the daemon.
    #[serde(default)]
    pub bit: Option<u32>,
}

/// One lane of an output: the receiving input, the lane's name and the receiver's bell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaneRef {
    /// The receiving node.
    pub receiver: NodeId,
    /// Its input.
    pub input: DataId,
    /// The lane's shared-memory name.
    pub lane: String,
    /// The receiver's bell.
    pub bell: PathBuf,
}

/// What a lane entry holds: a message's metadata and payload (the input is the lane's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaneEntry {
    /// Metadata with the send timestamp.
    pub metadata: Metadata,
    /// Payload: inline bytes or a shared sample.
    pub data: DataRef,
}

impl LaneEntry {
    /// The entry's bytes in a lane.
    pub fn encode(&self) -> Result<Vec<u8>, bincode::Error> {
        bincode::serialize(self)
    }

    /// [`Self::encode`] into `out` (cleared first), reusing its memory.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), bincode::Error> {
        out.clear();
        bincode::serialize_into(out, self)
    }

    /// An entry read from a lane.
    pub fn decode(bytes: &[u8]) -> Result<LaneEntry, bincode::Error> {
        bincode::deserialize(bytes)
    }
}

/// An entry of a node's taps lane (`NodeLanes::taps`): the output a message was sent on, and
/// the message as its receivers' lanes got it (the [`LaneEntry`] bytes, not encoded again).
#[derive(Debug, Clone, PartialEq)]
pub struct TapCopy {
    /// The output.
    pub output: DataId,
    /// The message.
    pub entry: LaneEntry,
}

impl TapCopy {
    /// The bytes of a copy of `entry` (encoded by [`LaneEntry::encode`]) sent on `output`.
    pub fn encode(output: &DataId, entry: &[u8]) -> Result<Vec<u8>, bincode::Error> {
        let mut bytes = bincode::serialize(output)?;
        bytes.extend_from_slice(entry);
        Ok(bytes)
    }

    /// A copy read from a taps lane.
    pub fn decode(bytes: &[u8]) -> Result<TapCopy, bincode::Error> {
        // From the slice, not a reader: a garbage length is refused, not allocated.
        let output: DataId = bincode::deserialize(bytes)?;
        let used = bincode::serialized_size(&output)? as usize;
        let entry = LaneEntry::decode(bytes.get(used..).unwrap_or_default())?;
        Ok(TapCopy { output, entry })
    }
}
