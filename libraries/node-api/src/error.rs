//! The node API's error type.

use adora_core::DataId;

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
    /// A value does not have its output's declared type (`ADORA_RUNTIME_TYPE_CHECK=error`).
    #[error("output `{output}` sends {found}, but its declared type {urn} is {expected}")]
    TypeMismatch {
        /// The output.
        output: DataId,
        /// Its declared type URN.
        urn: String,
        /// The Arrow type of that URN.
        expected: String,
        /// The Arrow type of the value.
        found: String,
    },
    /// A payload is not the Arrow array its metadata describes.
    #[error("the message is not a valid Arrow array: {0}")]
    Arrow(String),
    /// The daemon answered with an unexpected message.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An update lock was refused (the machine is being upgraded or drained, the coordinator
    /// is not reachable).
    #[error("update lock refused: {0}")]
    UpdateLock(String),
}
