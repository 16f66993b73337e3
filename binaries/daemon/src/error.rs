//! The daemon's error type.

/// Errors that prevent a dataflow from running at all (nothing was spawned, or everything
/// spawned was stopped again).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// Some nodes cannot be started (missing executable, bad args, ...).
    #[error("cannot start the dataflow:\n{}", .0.join("\n"))]
    InvalidNodes(Vec<String>),
    /// A reserved environment variable was given.
    #[error("environment variable `{0}` is set by the runtime and cannot be overridden")]
    ReservedEnv(String),
    /// I/O on the daemon's own files failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The coordinator refused this daemon (another daemon with its machine id is connected).
    #[error("the coordinator refused this daemon")]
    Refused(#[from] adora_message::coordinator_to_daemon::RegistrationRefused),
}
