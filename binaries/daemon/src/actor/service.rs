//! The daemon as a long-running service (`adora daemon`): besides node events, the actor handles
//! commands of the coordinator link and reports back through it.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use adora_core::NodeId;
use adora_message::{
    control::{self, ControlError, NodeLogLine, RunningDataflow},
    coordinator_to_daemon::{DaemonCommand, SpawnDataflow},
    daemon_to_coordinator::DaemonMessage,
    envelope::Envelope,
    maintenance::NodeLock,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod prepare;
mod relocate;

use super::Daemon;
use crate::{
    config::DataflowSpec,
    dataflow::{stats::NodeSnapshot, Dataflow},
    distribute,
    event::Reports,
    result::DataflowResult,
};
use adora_tasks::Tasks;

/// After shutdown was requested, the longest the daemon waits for its nodes on top of the stop
/// and kill graces.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(2);

/// What the coordinator link asks of the actor.
#[derive(Debug)]
pub(crate) enum ServiceCommand {
    /// A command from the coordinator.
    FromCoordinator(Envelope<DaemonCommand>),
    /// The status report for a (re)registration, with the address this machine uses to reach
    /// the coordinator.
    Report {
        /// Local IP of the connection to the coordinator.
        link_ip: Option<std::net::IpAddr>,
        /// Where the report goes.
        reply: oneshot::Sender<(Vec<RunningDataflow>, Vec<NodeLock>)>,
    },
    /// The connection to the coordinator was lost: nobody watches logs any more.
    Disconnected,
    /// Every local node of every dataflow, for a heartbeat.
    NodeSnapshots(oneshot::Sender<Vec<(Uuid, NodeSnapshot)>>),
    /// The builds and downloads of a dataflow are done (see `crate::distribute`).
    Prepared {
        /// The dataflow.
        dataflow: Uuid,
        /// Per node, the executable to run instead of `path`; or why the start fails.
        result: Result<BTreeMap<NodeId, PathBuf>, String>,
    },
    /// The builds of an `adora build` are done.
    Built {
        /// Envelope id of the `Build` command.
        request: u64,
        /// The build.
        build_id: Uuid,
        /// Every failure, one line per node.
        result: Result<(), String>,
    },
}

/// What to do with a dataflow once its preparation is done.
#[derive(Debug)]
enum AfterPrepare {
    /// Keep the result for the coordinator's `Spawn`, and answer `Prepared` to this request.
    Keep { request: u64 },
    /// Spawn right away and answer `Spawned` to this request (a `Spawn` of a dataflow that was
    /// not prepared: auto-recovery on a restarted daemon, or a `Spawn` overtaking its
    /// `Prepare`).
    Spawn {
        request: u64,
        spawn: Box<SpawnDataflow>,
    },
    /// The start failed elsewhere: remove the downloads, answer nothing.
    Discard,
}

/// What the daemon logs when it is asked for its own log (a follower sees later readers).
pub(crate) const READING_OWN_LOG: &str = "sending this daemon's own log to the coordinator";

/// Service-only state of the actor.
pub(crate) struct Service {
    pub reports: Reports,
    /// Where node logs go: `<log_root>/<dataflow>/<node>.txt`.
    pub log_root: PathBuf,
    names: HashMap<Uuid, (String, PathBuf)>,
    /// Dataflows whose log lines are forwarded as they are printed.
    watched: Arc<Mutex<HashSet<Uuid>>>,
    /// Builds and downloads before spawning (`distribute`), with the way back to the actor.
    pub(crate) distribution: Option<(distribute::Context, mpsc::Sender<ServiceCommand>)>,
    /// Dataflows being prepared (a retried command is not prepared twice), and what then.
    preparing: HashMap<Uuid, AfterPrepare>,
    /// Prepared dataflows waiting for their `Spawn`: per node, the executable to run.
    prepared: HashMap<Uuid, BTreeMap<NodeId, PathBuf>>,
    /// Builds (`adora build`) running here.
    building: HashSet<Uuid>,
    /// The daemon's tasks: log forwarding, builds, downloads.
    tasks: Tasks,
    /// Followed readings of the daemon's own log, by `ReadServiceLog` command id.
    service_logs: HashMap<u64, CancellationToken>,
}

impl Service {
    /// Service state reporting through `reports`, keeping node logs under `log_root`.
    pub fn new(reports: Reports, log_root: PathBuf, tasks: Tasks) -> Self {
        Self {
            reports,
            log_root,
            tasks,
            names: HashMap::new(),
            watched: Arc::default(),
            distribution: None,
            preparing: HashMap::new(),
            prepared: HashMap::new(),
            building: HashSet::new(),
            service_logs: HashMap::new(),
        }
    }

    /// Sends the daemon's own log (`ReadServiceLog`), following it until `StopServiceLog`.
    fn read_service_log(&mut self, id: u64, tail: Option<usize>, follow: bool) {
        let lines = tail.map_or_else(|| "all".to_owned(), |n| n.to_string());
        tracing::info!("{READING_OWN_LOG} (lines: {lines}, follow: {follow})");
        let cancel = self.tasks.cancel_token().child_token();
        if follow {
            self.service_logs.insert(id, cancel.clone());
        }
        let reports = self.reports.clone();
        self.tasks.spawn_until_cancelled(
            "reading the daemon's own log",
            crate::service_log::send(id, tail, follow, reports, cancel),
        );
    }

    /// Stops a followed reading of the daemon's own log.
    fn stop_service_log(&mut self, command: u64) {
        if let Some(cancel) = self.service_logs.remove(&command) {
            cancel.cancel();
        }
    }

    /// Forwards a dataflow's log lines to the coordinator while someone watches them, and
    /// reports `Finished` with every node's result when the dataflow ends here: after every
    /// line its nodes printed (one task, so the last lines of a node that exits at once never
    /// arrive after the end).
    fn forward_logs_and_end(
        &self,
        id: Uuid,
        mut logs: mpsc::UnboundedReceiver<NodeLogLine>,
        done: oneshot::Receiver<DataflowResult>,
    ) {
        let (watched, reports) = (self.watched.clone(), self.reports.clone());
        let forward = move |line: NodeLogLine| {
            let on = watched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&id);
            if on {
                let _ = reports.send(Envelope::new(0, DaemonMessage::Log(line)));
            }
        };
        let reports = self.reports.clone();
        self.tasks
            .spawn(format!("the logs and end of dataflow {id}"), async move {
                tokio::pin!(done);
                let result = loop {
                    tokio::select! {
                        biased;
                        line = logs.recv() => match line {
                            Some(line) => forward(line),
                            None => break (&mut done).await,
                        },
                        result = &mut done => break result,
                    }
                };
                // Lines printed before the nodes' exits were reported are queued by now.
                while let Ok(line) = logs.try_recv() {
                    forward(line);
                }
                let result = result.unwrap_or_default();
                tracing::info!("dataflow {id} ended on this daemon");
                let finished = DaemonMessage::Finished {
                    dataflow: id,
                    nodes: result.outcome.nodes,
                };
                let _ = reports.send(Envelope::new(0, finished));
            });
    }

    fn report(&self, id: u64, body: DaemonMessage) {
        let _ = self.reports.send(Envelope::new(id, body));
    }

    fn watch(&self, dataflow: Uuid, on: bool) {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            watched.insert(dataflow);
        } else {
            watched.remove(&dataflow);
        }
    }
}

impl Daemon {
    /// Runs until `shutdown` is cancelled, then stops every dataflow gracefully and returns.
    /// Commands come from the coordinator link; losing the coordinator changes nothing here.
    pub(crate) async fn run_service(
        mut self,
        mut commands: mpsc::Receiver<ServiceCommand>,
        mut service: Service,
        shutdown: CancellationToken,
    ) {
        let deadline = self.config.stop_grace + self.config.kill_grace + SHUTDOWN_MARGIN;
        let mut stop_at: Option<tokio::time::Instant> = None;
        loop {
            if stop_at.is_some() && self.dataflows.is_empty() {
                break;
            }
            let timeout =
                stop_at.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.cancelled(), if stop_at.is_none() => {
                    tracing::info!("stopping {} dataflow(s) before exiting", self.dataflows.len());
                    let ids: Vec<Uuid> = self.dataflows.keys().copied().collect();
                    for id in ids {
                        self.stop_dataflow(id);
                    }
                    stop_at = Some(tokio::time::Instant::now() + deadline);
                }
                _ = tokio::time::sleep_until(timeout), if stop_at.is_some() => {
                    tracing::warn!("{} dataflow(s) did not stop in time", self.dataflows.len());
                    break;
                }
                Some(command) = commands.recv() => {
                    if matches!(&command, ServiceCommand::FromCoordinator(Envelope { body: DaemonCommand::Shutdown, .. })) {
                        // `adora cluster down`: exit like on SIGTERM (the branch above stops
                        // every dataflow on the next turn of the loop).
                        tracing::info!("the coordinator asked this daemon to exit");
                        shutdown.cancel();
                    }
                    self.handle_service(command, &mut service)
                }
                Some(event) = self.events_rx.recv() => self.handle(event),
            }
        }
        self.tasks.cancel_token().cancel();
        if let super::RemoteState::Open(plane) = &self.remote {
            plane.close();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    fn handle_service(&mut self, command: ServiceCommand, service: &mut Service) {
        match command {
            ServiceCommand::Report { link_ip, reply } => {
                self.link_ip = link_ip;
                let _ = reply.send((self.running_dataflows(service), self.locks.reported()));
                // Goes out right after the registration this report is for.
                self.report_listening_if_open();
            }
            ServiceCommand::NodeSnapshots(reply) => {
                let snapshots = self
                    .dataflows
                    .iter()
                    .flat_map(|(id, df)| df.node_snapshots().into_iter().map(|s| (*id, s)))
                    .collect();
                let _ = reply.send(snapshots);
            }
            ServiceCommand::Disconnected => {
                self.abort_moves();
                self.taps.untap_all();
                self.watch_taps();
                service
                    .watched
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
            }
            ServiceCommand::Prepared { dataflow, result } => {
                self.prepared(dataflow, result, service)
            }
            ServiceCommand::Built {
                request,
                build_id,
                result,
            } => {
                service.building.remove(&build_id);
                service.watch(build_id, false);
                let result = result.map_err(ControlError::daemon);
                service.report(request, DaemonMessage::Built { build_id, result });
            }
            ServiceCommand::FromCoordinator(Envelope { id, body }) => {
                self.handle_command(id, body, service)
            }
        }
    }

    /// The status report: every dataflow running here.
    fn running_dataflows(&self, service: &Service) -> Vec<RunningDataflow> {
        self.dataflows
            .iter()
            .map(|(id, df)| RunningDataflow {
                id: *id,
                name: service
                    .names
                    .get(id)
                    .map(|n| n.0.clone())
                    .unwrap_or_default(),
                descriptor: df.spec.descriptor.clone(),
                working_dir: df.spec.working_dir.clone(),
                nodes: df.node_states(),
            })
            .collect()
    }

    /// One command of the coordinator (`id` is its envelope id, echoed by the answer).
    fn handle_command(&mut self, id: u64, command: DaemonCommand, service: &mut Service) {
        match command {
            DaemonCommand::Heartbeat => {}
            DaemonCommand::Prepare(spawn) => service.prepare(id, spawn),
            DaemonCommand::Spawn(spawn) => self.spawn_command(id, spawn, service),
            DaemonCommand::Discard { dataflow } => service.discard(dataflow),
            DaemonCommand::Build(build) => service.start_build(id, build),
            DaemonCommand::Stop { dataflow, grace } => {
                if let Some(df) = self.dataflows.get_mut(&dataflow) {
                    let mut config = self.config.clone();
                    if let Some(grace) = grace {
                        config.stop_grace = grace;
                    }
                    df.stop(&self.events_tx, &config);
                }
            }
            DaemonCommand::WatchLogs { dataflow, watch } => service.watch(dataflow, watch),
            DaemonCommand::ReadServiceLog { tail, follow } => {
                service.read_service_log(id, tail, follow)
            }
            DaemonCommand::StopServiceLog { command } => service.stop_service_log(command),
            DaemonCommand::Shutdown => {}   // handled in `run_service`
            DaemonCommand::Refused(_) => {} // handled by the link (`coordinator.rs`)
            DaemonCommand::Peers { endpoints } => self.handle_peers(endpoints),
            DaemonCommand::DataLinks { peers } => self.handle_data_links(peers),
            DaemonCommand::LockAnswer { request, result } => self.locks.answered(request, result),
            DaemonCommand::StopNodes { dataflow, nodes } => self.with(dataflow, |df, env| {
                df.stop_nodes(&nodes, env.events, env.config)
            }),
            DaemonCommand::Relocate(relocation) => self.relocate(id, relocation, service),
            DaemonCommand::Tap {
                dataflow,
                outputs,
                lossy,
                before_spawn,
            } => {
                let tap =
                    crate::tap::Tap::new(dataflow, Some(outputs.into_iter().collect()), lossy);
                self.tap(id, tap, before_spawn, service)
            }
            DaemonCommand::TapCredit { command, cost } => self.taps.credit(command, cost),
            DaemonCommand::Untap { command } => {
                self.taps.untap(command);
                self.watch_taps();
            }
            DaemonCommand::ReadLogs {
                dataflow,
                node,
                tail,
            } => {
                let dir = service.log_root.join(dataflow.to_string());
                let reports = service.reports.clone();
                let what = format!("reading the logs of dataflow {dataflow}");
                service.tasks.spawn_blocking(what, move || {
                    let lines = read_logs(&dir, dataflow, node.as_ref(), tail);
                    let _ = reports.send(Envelope::new(id, DaemonMessage::Logs { lines }));
                });
            }
        }
    }

    /// Starts copying a tap's outputs to the coordinator (command `id`); a dataflow that does
    /// not run here ends the tap at once, unless its `Spawn` follows (`before_spawn`).
    fn tap(
        &mut self,
        id: u64,
        (tap, rx): (crate::tap::Tap, mpsc::Receiver<crate::tap::Tapped>),
        before_spawn: bool,
        service: &Service,
    ) {
        let dataflow = tap.dataflow();
        let forward = self.taps.forward(id, tap, rx, service.reports.clone());
        self.watch_taps();
        service
            .tasks
            .spawn(format!("tap {id} of dataflow {dataflow}"), forward);
        if !before_spawn && !self.dataflows.contains_key(&dataflow) {
            self.taps.end_dataflow(dataflow);
        }
    }

    /// Tells the senders of tapped outputs to send the daemon a copy of what they put into their
    /// lanes, and the others to stop (taps changed).
    fn watch_taps(&mut self) {
        for (id, df) in &mut self.dataflows {
            df.routing
                .watch_lanes(|node, output| !self.taps.matching(*id, node, output).is_empty());
        }
    }

    /// Spawns this daemon's nodes of a dataflow. Idempotent: a dataflow already started here is
    /// not started again (a retried command after a reconnect).
    fn spawn_for_coordinator(
        &mut self,
        spawn: SpawnDataflow,
        service: &mut Service,
    ) -> Result<(), String> {
        let id = spawn.id;
        if service.names.contains_key(&id) {
            return Ok(());
        }
        let spec = DataflowSpec {
            id,
            descriptor: std::sync::Arc::unwrap_or_clone(spawn.descriptor),
            working_dir: spawn.working_dir.clone(),
            env: BTreeMap::new(),
            log_dir: service.log_root.join(id.to_string()),
            local_nodes: Some(spawn.nodes),
        };
        let (logs_tx, logs_rx) = mpsc::unbounded_channel::<NodeLogLine>();
        let (done_tx, done_rx) = oneshot::channel();
        let dataflow =
            Dataflow::start(self.launch(), spec, logs_tx, done_tx).map_err(|e| e.to_string())?;
        tracing::info!("started dataflow `{}` ({id})", spawn.name);
        self.dataflows.insert(id, dataflow);
        self.attach_remote(id);
        service.names.insert(id, (spawn.name, spawn.working_dir));

        service.forward_logs_and_end(id, logs_rx, done_rx);
        Ok(())
    }
}

/// Reads the stored log files of a dataflow (blocking; run off the runtime).
fn read_logs(
    dir: &Path,
    dataflow: Uuid,
    node: Option<&NodeId>,
    tail: Option<usize>,
) -> Vec<NodeLogLine> {
    let mut files: Vec<(NodeId, PathBuf)> = match node {
        Some(n) => vec![(n.clone(), dir.join(format!("{n}.txt")))],
        None => std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "txt"))
                    .filter_map(|p| {
                        let stem = p.file_stem()?.to_str()?.to_owned();
                        Some((NodeId::from(stem), p))
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    files.sort();
    let mut out = Vec::new();
    for (node, path) in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        let skip = tail.map_or(0, |n| lines.len().saturating_sub(n));
        out.extend(lines[skip..].iter().map(|l| NodeLogLine {
            dataflow,
            node: node.clone(),
            stream: control::LogStream::Stdout,
            line: (*l).to_owned(),
        }));
    }
    out
}
