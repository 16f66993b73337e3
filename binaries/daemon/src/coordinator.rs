//! The daemon's link to the coordinator: connect, register with a status report, heartbeat (with
//! the figures of the nodes and of the machine, [`crate::telemetry`]), and reconnect forever with exponential backoff and jitter when the connection is lost. Losing the
//! coordinator never touches the nodes: the actor keeps running them.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use adora_client::{Backoff, ClientError, Connection, DAEMON_PATH, HEARTBEAT_INTERVAL};
use adora_message::{
    control::RunningDataflow,
    coordinator_to_daemon::{DaemonCommand, RegistrationRefused},
    daemon_to_coordinator::{DaemonMessage, DaemonRegistration},
    envelope::{Envelope, Hello},
    stats::{MachineTelemetry, NodeStats},
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    actor::service::ServiceCommand, config::ServiceConfig, process_stats::ProcessSampler,
    telemetry::CapacitySampler,
};

/// First reconnect delay.
pub const RECONNECT_MIN: Duration = Duration::from_millis(500);
/// Reconnect delays double up to this.
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// A coordinator silent for this long is considered gone (the daemon reconnects).
pub const COORDINATOR_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a heartbeat waits for the actor's node snapshot, and for the machine's figures (it is
/// sent without them otherwise).
const STATS_TIMEOUT: Duration = Duration::from_secs(1);

/// How a connected session ended.
enum SessionEnd {
    /// The connection was lost (or the daemon is shutting down): why.
    Lost(String),
    /// The coordinator refused the registration: the daemon must exit.
    Refused(RegistrationRefused),
}

/// Runs the link until `shutdown` is cancelled. Returns the refusal when the coordinator refused
/// this daemon (another daemon with its machine id is connected): the link ends then, and the
/// caller stops the daemon with that error.
pub(crate) async fn run_link(
    config: ServiceConfig,
    commands: mpsc::Sender<ServiceCommand>,
    mut reports: mpsc::UnboundedReceiver<Envelope<DaemonMessage>>,
    shutdown: CancellationToken,
) -> Option<RegistrationRefused> {
    let addr = config.coordinator_addr.clone();
    let identity = Identity::of_this_process();
    // Each delay drawn from `[d/2, d]`, `d` doubling from RECONNECT_MIN up to RECONNECT_MAX.
    let mut backoff = Backoff::exponential(RECONNECT_MIN, RECONNECT_MAX);
    loop {
        let connect = Connection::connect(&addr, DAEMON_PATH, &config.auth, Hello::current());
        let result = tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = connect => r,
        };
        match result {
            Ok(mut conn) => {
                let (tx, rx) = oneshot::channel();
                let link_ip = conn.local_addr().map(|a| a.ip());
                let report = ServiceCommand::Report { link_ip, reply: tx };
                if commands.send(report).await.is_err() {
                    return None;
                }
                let (running, locks) = rx.await.unwrap_or_default();
                let mut registration = identity.registration(&config, running);
                registration.locks = locks;
                let register = Envelope::new(0, DaemonMessage::Register(registration));
                if let Err(e) = conn.send(&register).await {
                    tracing::warn!("cannot register with the coordinator at {addr}: {e}");
                } else {
                    tracing::info!("registered with the coordinator at {addr}");
                    backoff.reset();
                    let link = Link {
                        commands: &commands,
                        state_dir: &config.artifact_dir,
                        shutdown: &shutdown,
                    };
                    let end = session(conn, link, &mut reports).await;
                    let _ = commands.send(ServiceCommand::Disconnected).await;
                    let reason = match end {
                        SessionEnd::Refused(refused) => {
                            tracing::error!(
                                "the coordinator at {addr} refused this daemon: {refused}"
                            );
                            return Some(refused);
                        }
                        SessionEnd::Lost(reason) => reason,
                    };
                    if shutdown.is_cancelled() {
                        return None;
                    }
                    tracing::warn!(
                        "lost the coordinator at {addr}: {reason}; nodes keep running, reconnecting"
                    );
                }
            }
            Err(e @ ClientError::Unreachable { .. }) => tracing::info!("{e}; retrying"),
            Err(e) if e.is_permanent() => tracing::error!("{e}; retrying"),
            Err(e) => tracing::warn!("{e}; retrying"),
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Who this daemon process is, the same in every registration.
struct Identity {
    hostname: String,
    /// One id for this process, the same across reconnects (`DaemonRegistration::instance`).
    instance: uuid::Uuid,
    systemd_unit: Option<String>,
}

impl Identity {
    fn of_this_process() -> Self {
        Self {
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "unknown-host".into()),
            instance: uuid::Uuid::new_v4(),
            systemd_unit: systemd_unit(),
        }
    }

    fn registration(
        &self,
        config: &ServiceConfig,
        running: Vec<RunningDataflow>,
    ) -> DaemonRegistration {
        DaemonRegistration {
            machine_id: config.machine_id.clone(),
            labels: config.labels.clone(),
            hostname: self.hostname.clone(),
            // Reported with `ZenohListening` once the session is open.
            zenoh_locators: Vec::new(),
            running,
            adora_version: adora_message::ADORA_VERSION.to_owned(),
            instance: Some(self.instance),
            systemd_unit: self.systemd_unit.clone(),
            locks: Vec::new(),
            limits: config.limits,
            site: config.site.clone(),
        }
    }
}

/// What a session needs of the link besides its connection.
#[derive(Clone, Copy)]
struct Link<'a> {
    /// The actor's command channel.
    commands: &'a mpsc::Sender<ServiceCommand>,
    /// The directory whose file system's free space the heartbeat reports.
    state_dir: &'a Path,
    /// Cancelled when the daemon shuts down.
    shutdown: &'a CancellationToken,
}

/// The systemd unit this daemon runs as (`adora-daemon-robot.service`): systemd sets
/// `INVOCATION_ID` for the processes of a unit, and the unit is the last `.service` of the
/// process's cgroup path. `None` for a daemon started otherwise.
pub(crate) fn systemd_unit() -> Option<String> {
    std::env::var_os("INVOCATION_ID")?;
    unit_of_cgroup(&std::fs::read_to_string("/proc/self/cgroup").ok()?)
}

/// The `.service` unit in the contents of `/proc/<pid>/cgroup` (v2 `0::/path`, or v1 lines).
fn unit_of_cgroup(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .find_map(|path| path.rsplit('/').find(|c| c.ends_with(".service")))
        .map(str::to_owned)
}

/// One connected session; returns how it ended.
async fn session(
    mut conn: Connection,
    link: Link<'_>,
    reports: &mut mpsc::UnboundedReceiver<Envelope<DaemonMessage>>,
) -> SessionEnd {
    let Link {
        commands,
        state_dir,
        shutdown,
    } = link;
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut last_heard = Instant::now();
    let mut sampler = Some(ProcessSampler::default());
    let capacity = Arc::new(Mutex::new(CapacitySampler::default()));
    let lost = |reason: String| SessionEnd::Lost(reason);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                conn.close().await;
                return lost("shutting down".into());
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > COORDINATOR_TIMEOUT {
                    return lost(format!("no message for {:?}", last_heard.elapsed()));
                }
                let nodes = node_stats(commands, &mut sampler).await;
                let machine = machine_telemetry(state_dir.to_owned(), &capacity).await;
                let heartbeat = DaemonMessage::Heartbeat { nodes, machine };
                if let Err(e) = conn.send(&Envelope::new(0, heartbeat)).await {
                    return lost(e.to_string());
                }
            }
            Some(report) = reports.recv() => {
                if let Err(e) = conn.send(&report).await {
                    return lost(e.to_string());
                }
            }
            incoming = conn.recv::<Envelope<DaemonCommand>>() => match incoming {
                Ok(Envelope { body: DaemonCommand::Refused(refused), .. }) => {
                    conn.close().await;
                    return SessionEnd::Refused(refused);
                }
                Ok(envelope) => {
                    last_heard = Instant::now();
                    if commands.send(ServiceCommand::FromCoordinator(envelope)).await.is_err() {
                        return lost("the daemon is shutting down".into());
                    }
                }
                Err(e) => return lost(e.to_string()),
            },
        }
    }
}

/// The machine's figures for a heartbeat, read off the runtime; `None` when that takes longer
/// than [`STATS_TIMEOUT`] (a hung file system, a slow `nvidia-smi`) or fails, and while the
/// previous reading still runs (`capacity` is busy).
async fn machine_telemetry(
    state_dir: PathBuf,
    capacity: &Arc<Mutex<CapacitySampler>>,
) -> Option<MachineTelemetry> {
    let capacity = capacity.clone();
    let read = tokio::task::spawn_blocking(move || {
        let mut capacity = match capacity.try_lock() {
            Ok(capacity) => capacity,
            // A panic while sampling leaves nothing half-written that matters.
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(crate::telemetry::sample(&state_dir, &mut capacity))
    });
    match tokio::time::timeout(STATS_TIMEOUT, read).await {
        Ok(Ok(figures)) => figures,
        Ok(Err(e)) => {
            tracing::warn!("reading the machine's figures failed: {e}");
            None
        }
        Err(_) => None,
    }
}

/// The figures of every local node for a heartbeat: status and counters from the actor, process
/// figures from `/proc` (sampled off the runtime). Empty when the actor does not answer in time.
async fn node_stats(
    commands: &mpsc::Sender<ServiceCommand>,
    sampler: &mut Option<ProcessSampler>,
) -> Vec<NodeStats> {
    let (tx, rx) = oneshot::channel();
    if commands
        .send(ServiceCommand::NodeSnapshots(tx))
        .await
        .is_err()
    {
        return Vec::new();
    }
    let Ok(Ok(snapshots)) = tokio::time::timeout(STATS_TIMEOUT, rx).await else {
        return Vec::new();
    };
    let Some(mut owned) = sampler.take() else {
        return Vec::new();
    };
    let sampled = tokio::task::spawn_blocking(move || {
        let pids: Vec<u32> = snapshots.iter().filter_map(|(_, s)| s.pid).collect();
        owned.retain(&pids);
        let stats = snapshots
            .into_iter()
            .map(|(dataflow, s)| {
                let figures = s.pid.and_then(|pid| owned.sample(pid)).unwrap_or_default();
                NodeStats {
                    dataflow,
                    node: s.node,
                    status: s.status,
                    pid: s.pid,
                    cpu_percent: figures.cpu_percent,
                    rss_bytes: figures.rss_bytes,
                    messages_sent: s.sent,
                    messages_received: s.received,
                    dropped: s.dropped,
                    remote_dropped: s.remote_dropped,
                    restarts: s.restarts,
                    uptime_ms: u64::try_from(figures.uptime.as_millis()).unwrap_or(u64::MAX),
                    last_error: s.last_error,
                }
            })
            .collect();
        (owned, stats)
    })
    .await;
    match sampled {
        Ok((owned, stats)) => {
            *sampler = Some(owned);
            stats
        }
        Err(e) => {
            tracing::warn!("sampling node processes failed: {e}");
            *sampler = Some(ProcessSampler::default());
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_is_read_from_the_cgroup_path() {
        assert_eq!(
            unit_of_cgroup("0::/system.slice/adora-daemon-robot.service\n").as_deref(),
            Some("adora-daemon-robot.service")
        );
        let v1 = "12:pids:/system.slice/adora-daemon-h0.service\n1:name=systemd:/system.slice/adora-daemon-h0.service\n";
        assert_eq!(
            unit_of_cgroup(v1).as_deref(),
            Some("adora-daemon-h0.service")
        );
        assert_eq!(unit_of_cgroup("0::/user.slice/session-3.scope\n"), None);
    }
}
