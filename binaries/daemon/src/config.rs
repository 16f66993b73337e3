//! What a daemon is told: its supervision settings, the dataflows it runs and, as a service, how
//! to reach its coordinator.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::Duration,
};

use adora_core::{Descriptor, NodeId};
use uuid::Uuid;

/// Default time a node has to exit after its Stop event before it gets SIGTERM.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);
/// Default time between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);
/// Default time every node has to connect to the daemon after it was spawned.
pub const DEFAULT_NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of a daemon.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Directory for the daemon's Unix socket (must be short: socket paths are limited to 107 bytes).
    pub run_dir: PathBuf,
    /// Stop event → SIGTERM.
    pub stop_grace: Duration,
    /// SIGTERM → SIGKILL.
    pub kill_grace: Duration,
    /// Spawn → node registered; a node that never connects fails the dataflow.
    pub node_connect_timeout: Duration,
}

impl DaemonConfig {
    /// Defaults with the given run directory.
    pub fn new(run_dir: PathBuf) -> Self {
        Self {
            run_dir,
            stop_grace: DEFAULT_STOP_GRACE,
            kill_grace: DEFAULT_KILL_GRACE,
            node_connect_timeout: DEFAULT_NODE_CONNECT_TIMEOUT,
        }
    }
}

/// A dataflow to run on this daemon.
#[derive(Debug, Clone)]
pub struct DataflowSpec {
    /// Unique id of this run.
    pub id: Uuid,
    /// The validated descriptor.
    pub descriptor: Descriptor,
    /// Directory relative paths in the descriptor are resolved against.
    pub working_dir: PathBuf,
    /// Extra environment for every node (`--env`), applied after the descriptor's `env`.
    pub env: BTreeMap<String, String>,
    /// Directory for the per-node log files (`<node>.txt`).
    pub log_dir: PathBuf,
    /// The nodes to spawn on this daemon; `None` spawns every node (`adora run`).
    pub local_nodes: Option<BTreeSet<NodeId>>,
}

impl DataflowSpec {
    /// True when `node` runs on this daemon.
    pub fn is_local(&self, node: &NodeId) -> bool {
        self.local_nodes
            .as_ref()
            .is_none_or(|set| set.contains(node))
    }
}

/// Settings of a daemon service connected to a coordinator.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Node supervision settings.
    pub daemon: DaemonConfig,
    /// `host:port` of the coordinator.
    pub coordinator_addr: String,
    /// How to reach the coordinator: TLS trusting the cluster CA, with this daemon's
    /// certificate (enrolled) or the admin token (`adora up`'s local daemon).
    pub auth: adora_client::Auth,
    /// Machine id (`--machine-id`).
    pub machine_id: Option<String>,
    /// Labels (`--labels`).
    pub labels: BTreeMap<String, String>,
    /// Thresholds above which this machine takes no new nodes (`--max-cpu-percent`, ...),
    /// reported in the registration.
    pub limits: adora_core::resources::MachineLimits,
    /// Node logs go to `<log_root>/<dataflow uuid>/<node>.txt`.
    pub log_root: PathBuf,
    /// The Zenoh endpoint to listen on for other daemons, with a concrete port
    /// (see [`crate::resolve_zenoh_listen`]).
    pub zenoh_listen: String,
    /// Binaries downloaded for `distribute: http` go to `<artifact_dir>/<dataflow>/<node>/`.
    pub artifact_dir: PathBuf,
    /// Zenoh over mutual TLS with the daemon's cluster certificate: the session listens on
    /// `quic/<ip>:<port>` and `tls/<ip>:<port>` and accepts only peers with a certificate of
    /// the cluster CA. `None`: plain TCP (`--insecure-zenoh`, or a daemon without an identity).
    pub zenoh_tls: Option<ZenohTls>,
    /// The site of this machine (`cluster.yml` `sites:`): direct data links stay within it.
    pub site: Option<String>,
    /// The Zenoh endpoints of the site's router (`quic/<host>:<port>`), through which data from
    /// and to other sites goes; none without a site.
    pub zenoh_routers: Vec<String>,
}

/// The files Zenoh's encrypted transports are configured with: those of a daemon identity
/// (`adora_pki::Identity::files`), and the transport the daemon connects with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZenohTls {
    /// The cluster CA (PEM): the only issuer peers' certificates are accepted from.
    pub ca: PathBuf,
    /// The daemon's certificate (PEM), presented both when listening and when connecting.
    pub cert: PathBuf,
    /// The daemon's private key (PEM, mode 0600).
    pub key: PathBuf,
    /// The transport it connects with (it listens on both).
    pub transport: SecureTransport,
}

impl ZenohTls {
    /// The files of the identity saved in `dir` (see `adora_pki::Identity::save`), connecting
    /// over QUIC.
    pub fn from_identity_dir(dir: &std::path::Path) -> Self {
        let (ca, cert, key) = adora_pki::Identity::files(dir);
        Self {
            ca,
            cert,
            key,
            transport: SecureTransport::Quic,
        }
    }
}

/// Zenoh's two transports with mutual TLS. A daemon or router with an identity listens on both
/// (QUIC on the UDP port, TLS on the TCP port of the same number) and connects with one,
/// falling back to the other when a peer offers only that one (a daemon of an older version
/// offers only TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecureTransport {
    /// QUIC (TLS 1.3 inside, over UDP): the default. Zenoh's QUIC link sends and receives on
    /// separate streams.
    #[default]
    Quic,
    /// TLS over TCP, for networks that block UDP. Zenoh 1.10's TLS link now and then resets
    /// itself (its reading and writing tasks share one TLS stream, upstream issue
    /// eclipse-zenoh/zenoh#2557), losing what is in flight (counted as `link` drops).
    Tls,
}

impl SecureTransport {
    /// Zenoh's locator scheme of this transport.
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::Tls => "tls",
        }
    }

    /// The transport parsed from its scheme (`quic` or `tls`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "quic" => Ok(Self::Quic),
            "tls" => Ok(Self::Tls),
            other => Err(format!("`{other}`: expected `quic` or `tls`")),
        }
    }

    /// The other encrypted transport.
    pub(crate) fn other(self) -> Self {
        match self {
            Self::Quic => Self::Tls,
            Self::Tls => Self::Quic,
        }
    }

    /// The transports to try, this one first.
    pub fn preference(self) -> [Self; 2] {
        [self, self.other()]
    }
}
