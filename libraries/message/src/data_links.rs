//! Zenoh data links between daemons: which daemons a daemon links to (coordinator → daemon,
//! [`DataPeer`]) and the state of its links (daemon → coordinator, [`DataLinkStatus`], shown by
//! `adora cluster status --links`).
//!
//! A daemon holds a direct link only to the daemons of its site whose nodes' outputs its own
//! nodes read in running dataflows; data from other sites comes through its site's router.

use serde::{Deserialize, Serialize};

/// The Zenoh liveliness token a site's router declares (`adora/routers/<site>`): daemons see
/// which other sites are reachable through the routers.
pub const ROUTER_TOKEN_PREFIX: &str = "adora/routers";

/// A daemon another one should link to directly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DataPeer {
    /// The peer's name (machine id, or hostname for unnamed daemons).
    pub machine: String,
    /// Where its Zenoh session listens (`tls/<ip>:<port>` or `tcp/<ip>:<port>`); empty when the
    /// coordinator does not know (yet): an existing link to it is kept as it is.
    pub endpoints: Vec<String>,
}

/// What a data link leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// Another daemon of the same site.
    Daemon,
    /// The site's router (`adora router`), carrying data from and to other sites.
    Router,
    /// Another site, reached through the routers (down when its router is unreachable).
    Site,
}

/// The state of one data link of a daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataLinkStatus {
    /// The daemon or router it leads to (a daemon's name, a router's endpoint).
    pub peer: String,
    /// Daemon or router.
    pub kind: LinkKind,
    /// True while Zenoh has a connection to the peer.
    pub up: bool,
    /// When it last went up or down (milliseconds since the Unix epoch, the daemon's clock).
    pub since_ms: u64,
}
