//! The coordinator actor: one task owns the daemon registry and every dataflow's state, and
//! drains one event channel. WebSocket connection tasks only send events here and forward what
//! the actor queues for them. Control requests are handled in [`crate::requests`], daemons' messages
//! in [`daemons`].

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use adora_core::NodeId;
use adora_message::{
    cli_to_coordinator::ControlRequest,
    control::{DataflowStatus, Labels, NodeResult},
    coordinator_to_cli::ControlReply,
    coordinator_to_daemon::DaemonCommand,
    daemon_to_coordinator::{DaemonMessage, DaemonRegistration},
    envelope::Envelope,
};
use adora_store::{DataflowRecord, Store};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{requests::PendingLogs, CoordinatorConfig};

mod daemons;
pub(crate) mod data_links;
pub(crate) mod peers;

/// A handler slower than this is logged: it delays every request and daemon message.
const SLOW_HANDLER: Duration = Duration::from_millis(100);

/// Identifies one WebSocket connection (daemon or client).
pub(crate) type ConnId = u64;

/// What the actor asks a connection task to do.
#[derive(Debug)]
pub(crate) enum Outgoing<T> {
    /// Send this message.
    Message(Envelope<T>),
    /// Close the connection with this reason.
    Close(String),
}

pub(crate) type DaemonTx = mpsc::UnboundedSender<Outgoing<DaemonCommand>>;
pub(crate) type ClientTx = mpsc::UnboundedSender<Outgoing<ControlReply>>;

/// Everything the actor reacts to.
#[derive(Debug)]
pub(crate) enum Event {
    DaemonRegistered {
        conn: ConnId,
        registration: DaemonRegistration,
        tx: DaemonTx,
    },
    FromDaemon {
        conn: ConnId,
        envelope: Envelope<DaemonMessage>,
    },
    DaemonGone {
        conn: ConnId,
        reason: String,
    },
    Control {
        envelope: Envelope<ControlRequest>,
        tx: ClientTx,
    },
    Metrics {
        reply: oneshot::Sender<Metrics>,
    },
    /// A daemon enrolls with a join code (`POST /api/v1/enroll`).
    Enroll {
        request: adora_message::enroll::EnrollRequest,
        reply: oneshot::Sender<crate::join_codes::EnrollResult>,
    },
}

/// Numbers behind `/metrics`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Metrics {
    pub daemons_connected: usize,
    pub daemons_lost: usize,
    pub dataflows: BTreeMap<&'static str, usize>,
    /// Every node of every running dataflow.
    pub nodes: Vec<adora_message::stats::NodeInfo>,
    /// Connected daemons: (name, seconds since their last message).
    pub heartbeat_ages: Vec<(String, f64)>,
}

pub(crate) struct DaemonEntry {
    pub conn: ConnId,
    pub machine_id: Option<String>,
    pub labels: Labels,
    pub hostname: String,
    pub last_seen: Instant,
    /// Where other daemons reach this one's Zenoh session.
    pub zenoh_locators: Vec<String>,
    /// Where it stands in Zenoh discovery ([`peers`]).
    pub zenoh: peers::ZenohState,
    /// `None` once the daemon is lost.
    pub tx: Option<DaemonTx>,
    /// The Adora version it registered with.
    pub adora_version: String,
    /// When it registered (its current or last connection).
    pub registered_at: Instant,
    /// The daemon process's instance id (see `DaemonRegistration::instance`).
    pub instance: Option<Uuid>,
    /// The systemd unit it runs as, if any.
    pub systemd_unit: Option<String>,
    /// Thresholds above which it takes no new nodes (from its registration).
    pub limits: adora_core::resources::MachineLimits,
    /// Its site (from its registration): direct data links stay within a site.
    pub site: Option<String>,
    /// The direct links last sent on this connection ([`data_links`]).
    pub data_links: Option<Vec<adora_message::data_links::DataPeer>>,
    /// Its data links as it last reported them.
    pub link_status: Vec<adora_message::data_links::DataLinkStatus>,
}

impl DaemonEntry {
    /// The name used in placements: machine id, or hostname for unnamed daemons.
    pub fn name(&self) -> &str {
        self.machine_id.as_deref().unwrap_or(&self.hostname)
    }
}

/// The nodes of a dataflow on one daemon.
#[derive(Debug, Default)]
pub(crate) struct Part {
    pub nodes: BTreeSet<NodeId>,
    pub finished: bool,
}

/// A client waiting on a dataflow: (its connection, the request id to answer).
pub(crate) type Waiter = (ClientTx, u64);

pub(crate) struct Flow {
    pub record: DataflowRecord,
    /// Creation order, to pick the latest run of a name.
    pub seq: u64,
    /// Daemon name → its part.
    pub parts: BTreeMap<String, Part>,
    /// Clients streaming its logs (attached starts, `logs --follow`).
    pub watchers: Vec<Waiter>,
    /// Clients waiting for it to end (`stop`).
    pub stop_waiters: Vec<Waiter>,
    /// Clients waiting for it to end to start it again (`restart`).
    pub restart_waiters: Vec<Waiter>,
}

pub(crate) struct Coordinator {
    pub config: CoordinatorConfig,
    pub store: Arc<dyn Store>,
    /// In registration order (placement picks the first match).
    pub daemons: Vec<DaemonEntry>,
    pub flows: HashMap<Uuid, Flow>,
    pub next_seq: u64,
    pub next_command: u64,
    /// Starts waiting for `Prepared` or `Spawned` replies, by dataflow.
    pub pending_starts: HashMap<Uuid, crate::start::PendingStart>,
    /// Stored builds (`adora build`), by build id.
    pub builds: HashMap<Uuid, adora_store::BuildRecord>,
    /// Builds waiting for `Built` replies, by build id.
    pub pending_builds: HashMap<Uuid, crate::builds::PendingBuild>,
    /// Logs requests waiting for `Logs` replies, by command id.
    pub pending_logs: HashMap<u64, PendingLogs>,
    /// `adora logs --daemon` requests being answered, by `ReadServiceLog` command id.
    pub pending_daemon_logs: HashMap<u64, crate::daemon_logs::PendingDaemonLogs>,
    /// Taps being relayed (`adora record`, `adora topic`).
    pub taps: crate::taps::Taps,
    /// Cancels the whole coordinator (`ShutdownCoordinator`); set by [`Coordinator::run`].
    pub shutdown: CancellationToken,
    /// Reclaims after a coordinator restart and auto-recoveries of restarted daemons.
    pub recovery: crate::recovery::RecoveryState,
    /// Idempotent requests by client request id.
    pub requests: crate::idempotency::Requests,
    /// The id of the idempotent request being handled (stored in the records it creates).
    pub current_request: Option<Uuid>,
    /// The latest per-node figures from daemon heartbeats.
    pub node_stats: crate::stats::NodeStatsTable,
    /// Join codes and issued daemon certificates.
    pub enrollment: crate::join_codes::Enrollment,
    /// The coordinator's tasks (what must wait for the store runs there); set by
    /// [`crate::start`].
    pub tasks: adora_tasks::Tasks,
    /// Cordons, update locks, claims and drains, by machine name (`maintenance.rs`).
    pub maintenance:
        std::collections::BTreeMap<String, adora_message::maintenance::MachineMaintenance>,
    /// Nodes being moved between daemons ([`crate::moves`]).
    pub moves: crate::moves::Moves,
}

/// Sends a reply to a client; a client that went away is simply gone.
pub(crate) fn reply(tx: &ClientTx, id: u64, body: ControlReply) {
    let _ = tx.send(Outgoing::Message(Envelope::new(id, body)));
}

impl Coordinator {
    pub fn new(config: CoordinatorConfig, store: Arc<dyn Store>) -> Self {
        Self {
            config,
            store,
            daemons: Vec::new(),
            flows: HashMap::new(),
            next_seq: 0,
            next_command: 1,
            pending_starts: HashMap::new(),
            builds: HashMap::new(),
            pending_builds: HashMap::new(),
            pending_logs: HashMap::new(),
            pending_daemon_logs: HashMap::new(),
            taps: Default::default(),
            shutdown: CancellationToken::new(),
            recovery: Default::default(),
            requests: Default::default(),
            current_request: None,
            node_stats: Default::default(),
            enrollment: Default::default(),
            tasks: Default::default(),
            maintenance: Default::default(),
            moves: Default::default(),
        }
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(mut self, mut events: mpsc::Receiver<Event>, shutdown: CancellationToken) {
        self.shutdown = shutdown.clone();
        // Off the runtime; events queue meanwhile.
        self.load().await;
        self.resume_drains();
        // The first tick one period from now: nobody is connected yet to get a heartbeat.
        let period = self.config.heartbeat_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.tick(),
                Some(event) = events.recv() => {
                    let started = Instant::now();
                    let kind = event_kind(&event);
                    self.dispatch(event);
                    if started.elapsed() > SLOW_HANDLER {
                        tracing::warn!("coordinator handler for {kind} took {:?}", started.elapsed());
                    }
                }
            }
        }
    }

    pub(crate) fn dispatch(&mut self, event: Event) {
        match event {
            Event::DaemonRegistered {
                conn,
                registration,
                tx,
            } => self.handle_register(conn, registration, tx),
            Event::FromDaemon { conn, envelope } => self.handle_daemon_message(conn, envelope),
            Event::DaemonGone { conn, reason } => self.handle_daemon_gone(conn, &reason),
            Event::Control { envelope, tx } => self.handle_request(envelope, tx),
            Event::Metrics { reply } => {
                let _ = reply.send(self.metrics());
            }
            Event::Enroll { request, reply } => self.handle_enroll(request, reply),
        }
        self.forward_answers();
        self.sync_data_links();
    }

    /// Every heartbeat period: liveness and recoveries, then forgetting what is over.
    fn tick(&mut self) {
        self.heartbeat();
        self.moves_tick();
        self.drains_tick();
        self.prune(adora_store::now_ms());
        self.forward_answers();
        self.sync_data_links();
    }

    pub fn insert_flow(&mut self, record: DataflowRecord) -> &mut Flow {
        self.next_seq += 1;
        let mut parts: BTreeMap<String, Part> = BTreeMap::new();
        for (node, daemon) in &record.placement {
            parts
                .entry(daemon.clone())
                .or_default()
                .nodes
                .insert(node.clone());
        }
        if record.status.is_done() {
            parts.values_mut().for_each(|p| p.finished = true);
        }
        let id = record.id;
        self.flows.insert(
            id,
            Flow {
                record,
                seq: self.next_seq,
                parts,
                watchers: Vec::new(),
                stop_waiters: Vec::new(),
                restart_waiters: Vec::new(),
            },
        );
        self.flows.get_mut(&id).expect("just inserted")
    }

    pub fn save(&mut self, id: Uuid) {
        if let Some(flow) = self.flows.get_mut(&id) {
            flow.record.updated_at_ms = adora_store::now_ms();
            if let Err(e) = self.store.put_dataflow(&flow.record) {
                tracing::error!("cannot store dataflow {id}: {e}");
            }
        }
    }

    /// The connected daemon with this name.
    pub fn daemon_tx(&self, name: &str) -> Option<&DaemonTx> {
        self.daemons
            .iter()
            .find(|d| d.tx.is_some() && d.name() == name)
            .and_then(|d| d.tx.as_ref())
    }

    /// Sends a command to the named daemon; returns its id, or `None` when it is not connected.
    pub fn send_to_daemon(&mut self, name: &str, command: DaemonCommand) -> Option<u64> {
        let id = self.next_command;
        self.next_command += 1;
        let tx = self.daemon_tx(name)?;
        tx.send(Outgoing::Message(Envelope::new(id, command)))
            .ok()?;
        Some(id)
    }

    /// One daemon's part of a dataflow ended; when every part has, the dataflow ends.
    pub(crate) fn part_finished(
        &mut self,
        id: Uuid,
        daemon: &str,
        nodes: BTreeMap<NodeId, NodeResult>,
    ) {
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        flow.record.outcome.nodes.extend(nodes);
        flow.parts.entry(daemon.to_owned()).or_default().finished = true;
        if flow.parts.values().all(|p| p.finished) && !flow.record.status.is_done() {
            self.flow_ended(id);
        }
    }

    /// Marks a dataflow done and answers everyone waiting on it.
    pub fn flow_ended(&mut self, id: Uuid) {
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        flow.record.status = if flow.record.outcome.is_success() && flow.record.failure.is_none() {
            DataflowStatus::Finished
        } else {
            DataflowStatus::Failed
        };
        tracing::info!(
            "dataflow `{}` ({id}) {}",
            flow.record.name,
            flow.record.status
        );
        let outcome = flow.record.outcome.clone();
        for (tx, req) in flow.watchers.drain(..) {
            reply(
                &tx,
                req,
                ControlReply::Finished {
                    id,
                    outcome: outcome.clone(),
                },
            );
        }
        for (tx, req) in flow.stop_waiters.drain(..) {
            reply(
                &tx,
                req,
                ControlReply::Stopped {
                    id,
                    outcome: outcome.clone(),
                },
            );
        }
        let restarts: Vec<Waiter> = flow.restart_waiters.drain(..).collect();
        let daemons: Vec<String> = flow.parts.keys().cloned().collect();
        self.save(id);
        for name in daemons {
            self.send_to_daemon(
                &name,
                DaemonCommand::WatchLogs {
                    dataflow: id,
                    watch: false,
                },
            );
        }
        for (tx, req) in restarts {
            self.restart_now(id, tx, req);
        }
    }

    fn metrics(&self) -> Metrics {
        let mut m = Metrics::default();
        for d in &self.daemons {
            if d.tx.is_some() {
                m.daemons_connected += 1;
                m.heartbeat_ages
                    .push((d.name().to_owned(), d.last_seen.elapsed().as_secs_f64()));
            } else {
                m.daemons_lost += 1;
            }
        }
        for status in ["preparing", "running", "stopping", "finished", "failed"] {
            m.dataflows.insert(status, 0);
        }
        for f in self.flows.values() {
            let key = match f.record.status {
                DataflowStatus::Preparing => "preparing",
                DataflowStatus::Running => "running",
                DataflowStatus::Stopping => "stopping",
                DataflowStatus::Finished => "finished",
                _ => "failed",
            };
            *m.dataflows.entry(key).or_default() += 1;
        }
        m.nodes = self.node_infos(None).unwrap_or_default();
        m
    }
}

fn event_kind(event: &Event) -> &'static str {
    match event {
        Event::DaemonRegistered { .. } => "daemon_registered",
        Event::FromDaemon { .. } => "from_daemon",
        Event::DaemonGone { .. } => "daemon_gone",
        Event::Control { .. } => "control",
        Event::Metrics { .. } => "metrics",
        Event::Enroll { .. } => "enroll",
    }
}
