//! Simulated daemons: many lightweight stand-ins for `adora daemon` that speak the real daemon
//! protocol to a real coordinator, for control-plane benchmarks and scale tests.
//!
//! Each simulated daemon opens the same WebSocket as a real one (`/api/v1/daemon`, bearer token,
//! `Hello` / `Welcome`) with the daemon's own client ([`adora_client::Connection`]), registers
//! with a machine id, sends a heartbeat every [`adora_client::HEARTBEAT_INTERVAL`] carrying
//! plausible figures for every node it "runs", and answers the coordinator's commands the way
//! a daemon does: `Prepare` → `Prepared`, `Spawn` → `Spawned`, `Build` → `Built` (all at once),
//! `Stop` → `Finished` (every node finished), `ReadLogs` → `Logs` (none), `Shutdown` → it
//! disconnects. It starts no processes: a node is "running" from
//! the moment its `Spawn` is answered.
//!
//! A simulated daemon can carry labels and thresholds and report given machine figures
//! ([`SimulatedMachine`]), so placement can be tested against chosen capacity and use instead
//! of this machine's.
//!
//! Unlike a real daemon it does not reconnect: a lost connection ends that simulated daemon, and
//! [`SimulatedFleet::shutdown`] reports it.
//!
//! Its test against an in-process coordinator lives with the coordinator
//! (`binaries/coordinator/tests/simulator.rs`): this crate depends on no binary crate.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Instant,
};

pub use adora_client::HEARTBEAT_INTERVAL;
use adora_client::{ClientError, Connection, DAEMON_PATH};
use adora_core::{resources::MachineLimits, NodeId};
use adora_message::{
    control::{Labels, NodeResult},
    coordinator_to_daemon::DaemonCommand,
    daemon_to_coordinator::{DaemonMessage, DaemonRegistration},
    envelope::{Envelope, Hello},
    stats::{MachineTelemetry, NodeStats, NodeStatus},
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Resident memory each simulated node reports (a small Rust node).
pub const SIMULATED_NODE_RSS: u64 = 6 << 20;
/// CPU each simulated node reports, in percent of one core.
const SIMULATED_NODE_CPU: f64 = 0.3;
/// Messages each simulated node reports sending and receiving per heartbeat.
const SIMULATED_MESSAGES_PER_HEARTBEAT: u64 = 500;
/// First pid handed to simulated nodes (above the usual `pid_max`, so it names no real process).
const FIRST_SIMULATED_PID: u32 = 5_000_000;

/// What a whole fleet did, summed over its simulated daemons.
#[derive(Debug, Default)]
struct Counters {
    heartbeats: AtomicU64,
    commands: AtomicU64,
    spawns: AtomicU64,
    stops: AtomicU64,
}

/// A snapshot of a [`SimulatedFleet`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetActivity {
    /// Heartbeats sent to the coordinator.
    pub heartbeats: u64,
    /// Commands received from the coordinator (its heartbeats included).
    pub commands: u64,
    /// `Spawn` commands answered.
    pub spawns: u64,
    /// `Stop` commands answered with `Finished`.
    pub stops: u64,
}

/// One simulated daemon: its machine id, labels and thresholds, and the machine figures its
/// heartbeats report.
#[derive(Debug, Clone)]
pub struct SimulatedMachine {
    /// Machine id.
    pub machine_id: String,
    /// Labels it registers with.
    pub labels: Labels,
    /// Thresholds it registers with.
    pub limits: MachineLimits,
    /// Machine figures of every heartbeat (`None`: heartbeats without them).
    pub telemetry: Option<MachineTelemetry>,
}

impl SimulatedMachine {
    /// A daemon with machine id `machine_id`, no labels, no thresholds, no figures.
    pub fn new(machine_id: impl Into<String>) -> Self {
        Self {
            machine_id: machine_id.into(),
            labels: Labels::new(),
            limits: MachineLimits::default(),
            telemetry: None,
        }
    }

    /// With a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// With thresholds.
    pub fn limits(mut self, limits: MachineLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Reporting `cpus` cores at `cpu_percent`, `memory_available` of `memory_total` bytes,
    /// `disk_free` bytes and `gpus`.
    pub fn figures(
        mut self,
        cpus: u32,
        cpu_percent: f64,
        memory_total: u64,
        memory_available: u64,
        disk_free: u64,
        gpus: Option<u32>,
    ) -> Self {
        self.telemetry = Some(MachineTelemetry {
            adora_version: adora_message::ADORA_VERSION.to_owned(),
            os: "Simulated Linux".into(),
            kernel: "0.0.0-simulated".into(),
            arch: std::env::consts::ARCH.to_owned(),
            uptime_secs: Some(1),
            load: Some([0.0; 3]),
            memory_total_bytes: Some(memory_total),
            memory_available_bytes: Some(memory_available),
            disk_free_bytes: Some(disk_free),
            cpus: Some(cpus),
            cpu_percent: Some(cpu_percent),
            gpus,
        });
        self
    }
}

/// Simulated daemons connected to one coordinator; dropping the fleet without
/// [`SimulatedFleet::shutdown`] aborts them.
pub struct SimulatedFleet {
    shutdown: CancellationToken,
    tasks: JoinSet<Result<(), String>>,
    counters: Arc<Counters>,
}

impl SimulatedFleet {
    /// Connects and registers one simulated daemon per machine id with the coordinator at
    /// `addr` (`host:port`), one after the other, and leaves them heartbeating. Fails on the
    /// first daemon that cannot connect (the ones already connected are shut down).
    pub async fn start(
        addr: &str,
        auth: &adora_client::Auth,
        machine_ids: impl IntoIterator<Item = String>,
    ) -> Result<SimulatedFleet, ClientError> {
        let machines = machine_ids.into_iter().map(SimulatedMachine::new);
        Self::start_machines(addr, auth, machines).await
    }

    /// Like [`SimulatedFleet::start`], each daemon as described by its [`SimulatedMachine`].
    pub async fn start_machines(
        addr: &str,
        auth: &adora_client::Auth,
        machines: impl IntoIterator<Item = SimulatedMachine>,
    ) -> Result<SimulatedFleet, ClientError> {
        let mut fleet = SimulatedFleet {
            shutdown: CancellationToken::new(),
            tasks: JoinSet::new(),
            counters: Arc::default(),
        };
        for (i, machine) in machines.into_iter().enumerate() {
            let conn = Connection::connect(addr, DAEMON_PATH, auth, Hello::current()).await?;
            let daemon = SimulatedDaemon {
                machine,
                dataflows: BTreeMap::new(),
                next_pid: FIRST_SIMULATED_PID + (i as u32) * 10_000,
                counters: fleet.counters.clone(),
            };
            let shutdown = fleet.shutdown.clone();
            fleet.tasks.spawn(daemon.run(conn, shutdown));
        }
        Ok(fleet)
    }

    /// Number of simulated daemons still connected.
    pub fn connected(&self) -> usize {
        self.tasks.len()
    }

    /// What the fleet did so far.
    pub fn activity(&self) -> FleetActivity {
        let c = &self.counters;
        FleetActivity {
            heartbeats: c.heartbeats.load(Ordering::Relaxed),
            commands: c.commands.load(Ordering::Relaxed),
            spawns: c.spawns.load(Ordering::Relaxed),
            stops: c.stops.load(Ordering::Relaxed),
        }
    }

    /// Disconnects every simulated daemon; `Err` lists the ones that ended on their own before
    /// (lost connection, protocol error) with their reason.
    pub async fn shutdown(mut self) -> Result<(), String> {
        self.shutdown.cancel();
        let mut failures = Vec::new();
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => failures.push(reason),
                Err(e) => failures.push(format!("a simulated daemon panicked: {e}")),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("\n"))
        }
    }
}

/// A dataflow part a simulated daemon "runs".
struct SimulatedPart {
    /// Node → its fake pid.
    nodes: BTreeMap<NodeId, u32>,
    started: Instant,
    heartbeats: u64,
}

struct SimulatedDaemon {
    machine: SimulatedMachine,
    dataflows: BTreeMap<Uuid, SimulatedPart>,
    next_pid: u32,
    counters: Arc<Counters>,
}

impl SimulatedDaemon {
    /// Registers, then heartbeats and answers commands until `shutdown` or the connection ends.
    async fn run(
        mut self,
        mut conn: Connection,
        shutdown: CancellationToken,
    ) -> Result<(), String> {
        let name = self.machine.machine_id.clone();
        let registration = DaemonRegistration {
            machine_id: Some(name.clone()),
            labels: self.machine.labels.clone(),
            hostname: format!("simulated-{name}"),
            zenoh_locators: Vec::new(),
            running: Vec::new(),
            adora_version: adora_message::ADORA_VERSION.to_owned(),
            instance: Some(uuid::Uuid::new_v4()),
            systemd_unit: None,
            locks: Vec::new(),
            limits: self.machine.limits,
            site: None,
        };
        let fail = |e: ClientError| format!("simulated daemon `{name}`: {e}");
        conn.send(&Envelope::new(0, DaemonMessage::Register(registration)))
            .await
            .map_err(fail)?;
        // Like the real daemon: the first heartbeat right after registering.
        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    conn.close().await;
                    return Ok(());
                }
                _ = heartbeat.tick() => {
                    let nodes = self.node_stats();
                    let machine = self.machine.telemetry.clone();
                    conn.send(&Envelope::new(0, DaemonMessage::Heartbeat { nodes, machine }))
                        .await
                        .map_err(fail)?;
                    self.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                }
                incoming = conn.recv::<Envelope<DaemonCommand>>() => {
                    let Envelope { id, body } = incoming.map_err(fail)?;
                    self.counters.commands.fetch_add(1, Ordering::Relaxed);
                    if matches!(body, DaemonCommand::Shutdown) {
                        conn.close().await;
                        return Ok(());
                    }
                    for reply in self.answer(id, body) {
                        conn.send(&reply).await.map_err(fail)?;
                    }
                }
            }
        }
    }

    /// What a daemon sends back for one command.
    fn answer(&mut self, id: u64, command: DaemonCommand) -> Vec<Envelope<DaemonMessage>> {
        match command {
            DaemonCommand::Spawn(spawn) => {
                let dataflow = spawn.id;
                // Idempotent like the real daemon: a retried spawn is answered, not repeated.
                if !self.dataflows.contains_key(&dataflow) {
                    let nodes = spawn
                        .nodes
                        .into_iter()
                        .map(|node| {
                            self.next_pid += 1;
                            (node, self.next_pid)
                        })
                        .collect();
                    let part = SimulatedPart {
                        nodes,
                        started: Instant::now(),
                        heartbeats: 0,
                    };
                    self.dataflows.insert(dataflow, part);
                }
                self.counters.spawns.fetch_add(1, Ordering::Relaxed);
                vec![Envelope::new(
                    id,
                    DaemonMessage::Spawned {
                        dataflow,
                        result: Ok(()),
                    },
                )]
            }
            DaemonCommand::Stop { dataflow, .. } => {
                let Some(part) = self.dataflows.remove(&dataflow) else {
                    return Vec::new();
                };
                self.counters.stops.fetch_add(1, Ordering::Relaxed);
                let nodes: BTreeMap<NodeId, NodeResult> = part
                    .nodes
                    .into_keys()
                    .map(|node| (node, NodeResult::Finished))
                    .collect();
                vec![Envelope::new(
                    0,
                    DaemonMessage::Finished { dataflow, nodes },
                )]
            }
            DaemonCommand::ReadLogs { .. } => {
                vec![Envelope::new(id, DaemonMessage::Logs { lines: Vec::new() })]
            }
            // Nothing to build or download: every node is ready at once.
            DaemonCommand::Prepare(spawn) => vec![Envelope::new(
                id,
                DaemonMessage::Prepared {
                    dataflow: spawn.id,
                    result: Ok(()),
                },
            )],
            DaemonCommand::Build(build) => vec![Envelope::new(
                id,
                DaemonMessage::Built {
                    build_id: build.build_id,
                    result: Ok(()),
                },
            )],
            // No data plane: answered as a daemon whose Zenoh session could not open, so the
            // coordinator tells the next daemon its peers at once.
            DaemonCommand::Peers { .. } => vec![Envelope::new(
                0,
                DaemonMessage::ZenohListening {
                    locators: Vec::new(),
                },
            )],
            // Heartbeat, Discard (nothing was prepared), WatchLogs (a simulated node prints
            // nothing).
            _ => Vec::new(),
        }
    }

    /// Figures for every simulated node, as a daemon's heartbeat carries them.
    fn node_stats(&mut self) -> Vec<NodeStats> {
        let mut stats = Vec::new();
        for (dataflow, part) in &mut self.dataflows {
            part.heartbeats += 1;
            let messages = part.heartbeats * SIMULATED_MESSAGES_PER_HEARTBEAT;
            let uptime_ms = u64::try_from(part.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            stats.extend(part.nodes.iter().map(|(node, pid)| NodeStats {
                dataflow: *dataflow,
                node: node.clone(),
                status: NodeStatus::Running,
                pid: Some(*pid),
                cpu_percent: SIMULATED_NODE_CPU,
                rss_bytes: SIMULATED_NODE_RSS,
                messages_sent: messages,
                messages_received: messages,
                dropped: 0,
                remote_dropped: Vec::new(),
                restarts: 0,
                uptime_ms,
                last_error: None,
            }));
        }
        stats
    }
}

/// The machine ids `prefix-000`, `prefix-001`, ... of a fleet of `count` simulated daemons.
pub fn machine_ids(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i:03}")).collect()
}
