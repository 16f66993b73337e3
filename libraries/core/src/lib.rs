//! `adora-core`: the dataflow descriptor (`dataflow.yml`) and everything that can be decided about a
//! dataflow without running it — ids, parsing, validation with precise error locations, timer specs
//! and the Mermaid graph.

pub mod cluster;
pub mod descriptor;
pub mod graph;
pub mod ids;
pub mod placement;
pub mod resources;
pub mod schema;
pub mod timer;
pub mod types;
pub mod validate;

pub use descriptor::{Descriptor, InputSource, NodeSpec};
pub use ids::{DataId, NodeId};
pub use validate::{ValidationError, ValidationErrors};

/// Payloads of at least this many bytes travel through shared memory instead of inline in a frame.
pub const SHM_THRESHOLD: usize = 4096;

/// Default capacity of a node input queue when `queue_size` is not given.
pub const DEFAULT_QUEUE_SIZE: usize = 10;

/// Environment variable through which a node receives its configuration.
pub const NODE_CONFIG_ENV: &str = "ADORA_NODE_CONFIG";

/// Environment variables the runtime sets for every node; dataflow `env` and `--env` cannot override them.
pub const RESERVED_ENV_VARS: &[&str] = &[NODE_CONFIG_ENV, "ADORA_DATAFLOW_ID", "ADORA_NODE_ID"];
