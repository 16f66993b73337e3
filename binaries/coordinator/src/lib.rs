//! `adora-coordinator`: owns the desired state of an Adora cluster (dataflows, their placement,
//! which daemons exist) and serves it on one port:
//!
//! - `GET /api/health` — liveness and version, no authentication;
//! - `GET /api/v1/control` — WebSocket for CLI clients;
//! - `GET /api/v1/daemon` — WebSocket for daemons;
//! - `POST /api/v1/enroll` — a daemon enrolls with a join code and gets its certificate;
//! - `GET|PUT /api/v1/artifacts/{build_id}/{node_id}` — artifact store of `distribute: http`;
//! - `GET /metrics` — Prometheus text.
//!
//! [`run`] takes its resources as arguments (listener, store, config, shutdown) so tests run it on
//! `127.0.0.1:0` with a [`adora_store::MemoryStore`]. Every task it starts is owned (see
//! [`tasks`]): `run` returns once they all stopped, or reports the ones that did not.

mod access;
mod actor;
pub mod artifacts;
mod auth;
mod builds;
mod certs;
mod daemon_logs;
mod drain;
mod enroll;
mod http;
mod idempotency;
mod join_codes;
mod maintenance;
mod metrics;
mod moves;
mod recovery;
mod requests;
mod resources;
mod retention;
mod serve;
mod start;
mod stats;
mod taps;
#[cfg(test)]
mod testkit;
mod ws;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use adora_store::{Retention, Store};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_util::sync::CancellationToken;

pub use adora_client::{Token, DEFAULT_PORT, HEARTBEAT_INTERVAL};
pub use adora_tasks::SHUTDOWN_GRACE;
pub use http::router;

/// A daemon silent for this long is marked lost and its connection closed.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(20);
/// Time a connecting peer has to send its `Hello` (and a daemon its `Register`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a coordinator restart, how long the daemons of a stored running dataflow have to
/// reconnect and report it before it is marked failed.
pub const RECLAIM_TIMEOUT: Duration = Duration::from_secs(60);
/// Auto-recovery re-spawns a dataflow's nodes on a restarted daemon at most once per this
/// window per (daemon, dataflow).
pub const RECOVERY_BACKOFF: Duration = Duration::from_secs(30);
/// Capacity of the actor's event channel.
pub const EVENT_CHANNEL_CAPACITY: usize = 4096;

/// Settings of a coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// The token clients must present; `None` disables authentication (tests only).
    pub token: Option<Token>,
    /// See [`HEARTBEAT_INTERVAL`].
    pub heartbeat_interval: Duration,
    /// See [`DAEMON_TIMEOUT`].
    pub daemon_timeout: Duration,
    /// See [`RECLAIM_TIMEOUT`].
    pub reclaim_timeout: Duration,
    /// See [`RECOVERY_BACKOFF`].
    pub recovery_backoff: Duration,
    /// Directory of the artifact store (`distribute: http`), next to the store; `None`
    /// disables it (its routes answer 503).
    pub artifact_dir: Option<std::path::PathBuf>,
    /// How many finished dataflows are kept, and for how long (in memory and in the store):
    /// by default the last 100 or those of the last 24 h, whichever keeps more.
    pub finished_dataflows: Retention,
    /// The cluster CA: it issues daemons their certificates at enrollment; `None` (tests of
    /// other things) refuses enrollments.
    pub ca: Option<Arc<adora_pki::ClusterCa>>,
    /// The TLS settings the port is served with (see [`adora_pki::tls::server_config`]);
    /// `None` serves plain HTTP (tests of this library only: `adora coordinator` always has TLS).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `/metrics` without credentials (`--metrics-public`).
    pub metrics_public: bool,
}

impl CoordinatorConfig {
    /// Defaults, requiring `token`.
    pub fn new(token: Token) -> Self {
        Self {
            token: Some(token),
            heartbeat_interval: HEARTBEAT_INTERVAL,
            daemon_timeout: DAEMON_TIMEOUT,
            reclaim_timeout: RECLAIM_TIMEOUT,
            recovery_backoff: RECOVERY_BACKOFF,
            artifact_dir: None,
            finished_dataflows: Retention::default(),
            ca: None,
            tls: None,
            metrics_public: false,
        }
    }
}

/// Errors that end the coordinator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The HTTP server failed.
    #[error("the coordinator's server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// What the HTTP handlers share: the way to the actor, the token and the coordinator's tasks.
#[derive(Clone)]
pub struct AppState {
    events: mpsc::Sender<actor::Event>,
    token: Option<Token>,
    next_conn: Arc<AtomicU64>,
    /// Cancelled when the coordinator stops (a shutdown request or the caller's token).
    shutdown: CancellationToken,
    tasks: adora_tasks::Tasks,
    artifacts: Option<Arc<artifacts::ArtifactStore>>,
    /// The daemon certificates issued here (shared with the actor).
    certs: Arc<certs::CertRegistry>,
    /// The cluster CA (served at `/api/v1/ca`; issues daemon certificates).
    ca: Option<Arc<adora_pki::ClusterCa>>,
    /// See [`CoordinatorConfig::metrics_public`].
    metrics_public: bool,
}

impl AppState {
    fn next_conn(&self) -> actor::ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// Starts the actor (and the artifact store's garbage collection) and returns the state the
/// router needs. They stop when `shutdown` is cancelled; [`run`] waits for them.
pub fn start(
    store: Arc<dyn Store>,
    config: CoordinatorConfig,
    shutdown: CancellationToken,
) -> AppState {
    // A child: a `ShutdownCoordinator` request stops this coordinator, not the caller's token.
    let tasks = adora_tasks::Tasks::new(shutdown.child_token());
    let shutdown = tasks.cancel_token().clone();
    let (events, events_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
    let token = config.token.clone();
    let (ca, metrics_public) = (config.ca.clone(), config.metrics_public);
    let artifacts = config.artifact_dir.as_deref().and_then(open_artifacts);
    if let Some(a) = &artifacts {
        let gc = artifacts::gc_loop(a.clone(), store.clone(), shutdown.clone());
        tasks.spawn("artifact garbage collection", gc);
    }
    let mut coordinator = actor::Coordinator::new(config, store);
    coordinator.tasks = tasks.clone();
    let certs = coordinator.enrollment.registry.clone();
    tasks.spawn(
        "coordinator actor",
        coordinator.run(events_rx, shutdown.clone()),
    );
    AppState {
        events,
        token,
        next_conn: Arc::new(AtomicU64::new(1)),
        shutdown,
        tasks,
        artifacts,
        certs,
        ca,
        metrics_public,
    }
}

/// The artifact store in `dir`, `None` (logged) when it is unusable.
fn open_artifacts(dir: &std::path::Path) -> Option<Arc<artifacts::ArtifactStore>> {
    match artifacts::ArtifactStore::open(dir) {
        Ok(a) => Some(Arc::new(a)),
        Err(e) => {
            tracing::error!("artifact store in {} unusable: {e}", dir.display());
            None
        }
    }
}

/// Serves the coordinator on `listener` until `shutdown` is cancelled (or a client asks it to
/// stop), then waits up to [`SHUTDOWN_GRACE`] for its tasks.
pub async fn run(
    listener: TcpListener,
    store: Arc<dyn Store>,
    config: CoordinatorConfig,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let tls = config.tls.clone();
    let state = start(store, config, shutdown);
    let tasks = state.tasks.clone();
    if let Ok(addr) = listener.local_addr() {
        let scheme = if tls.is_some() { "TLS" } else { "plain HTTP" };
        tracing::info!("coordinator listening on {addr} ({scheme})");
    }
    let served = match tls {
        Some(tls) => serve::serve_tls(listener, router(state), tls, &tasks).await,
        None => {
            axum::serve(listener, router(state))
                .with_graceful_shutdown(tasks.cancel_token().clone().cancelled_owned())
                .await
        }
    };
    tasks.shutdown(SHUTDOWN_GRACE).await;
    served.map_err(Error::Serve)
}

#[cfg(test)]
mod tests;
