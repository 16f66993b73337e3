//! `adora-client`: everything a program needs to talk to an Adora coordinator, shared by the CLI,
//! the daemon and the test fixtures.
//!
//! - [`connection`]: the control-plane WebSocket (bearer token, `Hello` / `Welcome` handshake,
//!   typed envelopes);
//! - [`artifacts`]: the artifact-store HTTP client of `distribute: http` (upload, download with a
//!   size limit and a checksum);
//! - [`token`]: the admin token, its file (mode 0600) and where a client finds it;
//! - [`tls`]: the coordinator's port speaks TLS only: a client's settings ([`Auth`]), where the
//!   CLI finds the cluster CA, opening a verified stream;
//! - [`backoff`]: the delays between reconnection and retry attempts;
//! - the constants both ends of a connection must agree on.
//!
//! It must never depend on a binary crate (`adora-cli`, `adora-daemon`, `adora-coordinator`):
//! they depend on it.

use std::time::Duration;

pub mod artifacts;
pub mod backoff;
pub mod connection;
pub mod enroll;
mod http;
pub mod tls;
pub mod token;

pub use backoff::Backoff;
pub use connection::{ClientError, Connection};
pub use tls::{find_ca, Auth, CA_FILE_ENV};
pub use token::{find_token, Token, TokenError, TOKEN_ENV};

/// Default TCP port of the coordinator.
pub const DEFAULT_PORT: u16 = 6013;
/// Path of the WebSocket CLI clients use on the coordinator.
pub const CONTROL_PATH: &str = "/api/v1/control";
/// Path of the WebSocket daemons use on the coordinator.
pub const DAEMON_PATH: &str = "/api/v1/daemon";
/// How often each end of a daemon connection sends a heartbeat (the coordinator also checks
/// daemon liveness at this pace).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
