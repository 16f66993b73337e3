//! Handlers of CLI requests (`start`, `stop`, `restart`, `list`, `status`, `logs`), run by the
//! coordinator actor.

use std::{collections::BTreeSet, time::Duration};

use adora_message::{
    cli_to_coordinator::{ControlRequest, LogsRequest, StartDataflow},
    control::{ControlError, DataflowStatus, ErrorKind, NodeLogLine},
    coordinator_to_cli::{ControlReply, CoordinatorStatus, DaemonStatus, DataflowInfo},
    coordinator_to_daemon::DaemonCommand,
    envelope::Envelope,
    ADORA_VERSION,
};
use uuid::Uuid;

use crate::actor::{reply, ClientTx, Coordinator};

/// A logs request waiting for one daemon's `Logs`.
pub(crate) struct PendingLogs {
    pub client: ClientTx,
    pub request: u64,
    pub daemon: String,
    pub dataflow: Uuid,
    pub follow: bool,
}

pub(crate) fn error(tx: &ClientTx, id: u64, kind: ErrorKind, message: impl Into<String>) {
    reply(
        tx,
        id,
        ControlReply::Error(ControlError::new(kind, message)),
    );
}

impl Coordinator {
    pub(crate) fn handle_request(&mut self, envelope: Envelope<ControlRequest>, tx: ClientTx) {
        let id = envelope.id;
        match envelope.body {
            ControlRequest::Start(start) => self.start(start, tx, id, None),
            ControlRequest::Build(build) => self.build(build, tx, id),
            ControlRequest::Stop { dataflow, grace } => self.stop(&dataflow, grace, tx, id),
            ControlRequest::Restart { dataflow } => self.restart(&dataflow, tx, id),
            ControlRequest::List => reply(&tx, id, ControlReply::List(self.list())),
            ControlRequest::Status => reply(&tx, id, ControlReply::Status(self.status())),
            ControlRequest::Nodes { dataflow } => match self.node_infos(dataflow.as_deref()) {
                Ok(nodes) => reply(&tx, id, ControlReply::Nodes(nodes)),
                Err(e) => reply(&tx, id, ControlReply::Error(e)),
            },
            ControlRequest::Logs(request) => self.logs(request, tx, id),
            ControlRequest::DaemonLogs(request) => self.daemon_logs(request, tx, id),
            ControlRequest::ShutdownDaemons => {
                let daemons = self.shutdown_daemons(None);
                reply(&tx, id, ControlReply::ShuttingDown { daemons });
            }
            ControlRequest::ShutdownMachines { machines } => {
                let daemons = self.shutdown_daemons(Some(&machines));
                reply(&tx, id, ControlReply::ShuttingDown { daemons });
            }
            ControlRequest::Idempotent {
                request_id,
                request,
            } => self.handle_idempotent(request_id, *request, tx, id),
            ControlRequest::ShutdownCoordinator => {
                tracing::info!("shutdown requested by a client");
                reply(&tx, id, ControlReply::ShuttingDown { daemons: vec![] });
                self.shutdown.cancel();
            }
            ControlRequest::CreateJoinCode(create) => self.create_join_code(create, tx, id),
            ControlRequest::ListJoinCodes => {
                reply(&tx, id, ControlReply::JoinCodes(self.join_codes()))
            }
            ControlRequest::RevokeJoinCode { id: code } => self.revoke_join_code(&code, tx, id),
            ControlRequest::RevokeMachine { machine } => self.revoke_machine(&machine, tx, id),
            request @ (ControlRequest::Maintenance
            | ControlRequest::SetCordon { .. }
            | ControlRequest::SetOperatorLock { .. }
            | ControlRequest::Claim { .. }
            | ControlRequest::ReleaseClaim { .. }
            | ControlRequest::Drain { .. }) => self.maintenance_request(request, tx, id),
            ControlRequest::ListCertificates => {
                reply(&tx, id, ControlReply::Certificates(self.certificates()))
            }
            ControlRequest::MoveNode { dataflow, node, to } => {
                self.move_request(&dataflow, &node, to, tx, id)
            }
            ControlRequest::Tap(request) => self.tap(request, tx, id),
            ControlRequest::TapAck { tap, machine, cost } => self.tap_ack(tap, &machine, cost, &tx),
        }
    }

    /// Finds a dataflow by uuid, or by name (the running one, else the latest run).
    pub(crate) fn resolve(&self, name_or_id: &str) -> Result<Uuid, ControlError> {
        if let Ok(id) = name_or_id.parse::<Uuid>() {
            if self.flows.contains_key(&id) {
                return Ok(id);
            }
        }
        self.flows
            .values()
            .filter(|f| f.record.name == name_or_id)
            .max_by_key(|f| (!f.record.status.is_done(), f.seq))
            .map(|f| f.record.id)
            .ok_or_else(|| {
                ControlError::new(
                    ErrorKind::NotFound,
                    format!("no dataflow named or with uuid `{name_or_id}` (see `adora list`)"),
                )
            })
    }

    fn stop(&mut self, target: &str, grace: Option<Duration>, tx: ClientTx, request: u64) {
        let id = match self.resolve(target) {
            Ok(id) => id,
            Err(e) => return reply(&tx, request, ControlReply::Error(e)),
        };
        let flow = self.flows.get_mut(&id).expect("resolved");
        if flow.record.status.is_done() {
            return error(
                &tx,
                request,
                ErrorKind::InvalidRequest,
                format!(
                    "dataflow `{}` ({id}) already {}",
                    flow.record.name, flow.record.status
                ),
            );
        }
        flow.stop_waiters.push((tx, request));
        self.send_stop(id, grace);
    }

    /// Asks every daemon still running a part of the dataflow to stop it.
    fn send_stop(&mut self, id: Uuid, grace: Option<Duration>) {
        if self.stop_preparing(id) {
            // Failed before anything was spawned: the stop is complete.
            return self.flow_ended(id);
        }
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        flow.record.status = DataflowStatus::Stopping;
        let daemons: Vec<String> = flow
            .parts
            .iter()
            .filter(|(_, p)| !p.finished)
            .map(|(d, _)| d.clone())
            .collect();
        self.save(id);
        for d in daemons {
            if self
                .send_to_daemon(
                    &d,
                    DaemonCommand::Stop {
                        dataflow: id,
                        grace,
                    },
                )
                .is_none()
            {
                tracing::warn!("cannot stop dataflow {id} on daemon `{d}`: it is not connected; it will be stopped when it reconnects");
            }
        }
    }

    fn restart(&mut self, target: &str, tx: ClientTx, request: u64) {
        let id = match self.resolve(target) {
            Ok(id) => id,
            Err(e) => return reply(&tx, request, ControlReply::Error(e)),
        };
        let flow = self.flows.get_mut(&id).expect("resolved");
        if flow.record.status.is_done() {
            return self.restart_now(id, tx, request);
        }
        flow.restart_waiters.push((tx, request));
        self.send_stop(id, None);
    }

    /// Starts a new run from a finished dataflow's stored descriptor.
    pub(crate) fn restart_now(&mut self, old: Uuid, tx: ClientTx, request: u64) {
        let Some(flow) = self.flows.get(&old) else {
            return;
        };
        let start = StartDataflow {
            descriptor: flow.record.descriptor.clone(),
            name: Some(flow.record.name.clone()),
            working_dir: flow.record.working_dir.clone(),
            attach: false,
            artifacts: flow.record.artifacts.clone(),
            build: false,
            build_id: None,
        };
        self.start(start, tx, request, Some(old));
    }

    fn list(&self) -> Vec<DataflowInfo> {
        let mut flows: Vec<_> = self.flows.values().collect();
        flows.sort_by_key(|f| f.seq);
        flows
            .into_iter()
            .map(|f| DataflowInfo {
                id: f.record.id,
                name: f.record.name.clone(),
                status: f.record.status,
                nodes: f.record.placement.clone(),
                restarts: self.node_stats.restarts_of(f.record.id),
                remote_dropped: self.node_stats.remote_dropped_of(f.record.id),
                degraded: f.record.degraded.clone(),
            })
            .collect()
    }

    /// Tells every connected daemon to stop its dataflows and exit; returns their names.
    /// Tells the connected daemons (all, or those named in `only`) to exit; returns their names.
    fn shutdown_daemons(&mut self, only: Option<&[String]>) -> Vec<String> {
        let names: Vec<String> = self
            .daemons
            .iter()
            .filter(|d| d.tx.is_some())
            .map(|d| d.name().to_owned())
            .filter(|name| only.is_none_or(|only| only.contains(name)))
            .collect();
        for name in &names {
            tracing::info!("telling daemon `{name}` to exit");
            self.send_to_daemon(name, DaemonCommand::Shutdown);
        }
        names
    }

    pub(crate) fn status(&self) -> CoordinatorStatus {
        let mut reserved = self.reserved_by_daemon();
        CoordinatorStatus {
            adora_version: ADORA_VERSION.to_owned(),
            daemons: self
                .daemons
                .iter()
                .map(|d| DaemonStatus {
                    machine_id: d.machine_id.clone(),
                    hostname: d.hostname.clone(),
                    labels: d.labels.clone(),
                    last_heartbeat_ms: d.last_seen.elapsed().as_millis() as u64,
                    connected: d.tx.is_some(),
                    adora_version: d.adora_version.clone(),
                    registered_ms_ago: d.registered_at.elapsed().as_millis() as u64,
                    machine: self.node_stats.machine(d.name()).cloned(),
                    systemd_unit: d.systemd_unit.clone(),
                    state: self.maintenance_of(d.name()).state(adora_store::now_ms()),
                    unavailable: self.unavailable(d.name()),
                    maintenance: self.maintenance.get(d.name()).cloned(),
                    limits: d.limits,
                    reserved: reserved.remove(d.name()).unwrap_or_default(),
                    site: d.site.clone(),
                    links: d.link_status.clone(),
                })
                .collect(),
            running_dataflows: self
                .flows
                .values()
                .filter(|f| !f.record.status.is_done())
                .count(),
        }
    }

    fn logs(&mut self, request: LogsRequest, tx: ClientTx, req: u64) {
        let id = match self.resolve(&request.dataflow) {
            Ok(id) => id,
            Err(e) => return reply(&tx, req, ControlReply::Error(e)),
        };
        let flow = &self.flows[&id];
        if let Some(node) = &request.node {
            if !flow.record.placement.contains_key(node) {
                return error(
                    &tx,
                    req,
                    ErrorKind::NotFound,
                    format!("dataflow `{}` has no node `{node}`", flow.record.name),
                );
            }
        }
        let daemons: Vec<String> = flow
            .record
            .placement
            .iter()
            .filter(|(n, _)| request.node.as_ref().is_none_or(|want| want == *n))
            .map(|(_, d)| d.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut asked = 0;
        for daemon in daemons {
            let command = DaemonCommand::ReadLogs {
                dataflow: id,
                node: request.node.clone(),
                tail: request.tail,
            };
            match self.send_to_daemon(&daemon, command) {
                Some(cmd) => {
                    asked += 1;
                    self.pending_logs.insert(
                        cmd,
                        PendingLogs {
                            client: tx.clone(),
                            request: req,
                            daemon,
                            dataflow: id,
                            follow: request.follow,
                        },
                    );
                }
                None => reply(
                    &tx,
                    req,
                    ControlReply::Log(NodeLogLine {
                        dataflow: id,
                        node: "adora".into(),
                        stream: adora_message::control::LogStream::Stderr,
                        line: format!(
                            "(daemon `{daemon}` is not connected: its logs are unavailable)"
                        ),
                    }),
                ),
            }
        }
        if asked == 0 {
            self.logs_complete(id, tx, req, request.follow);
        }
    }

    /// A daemon answered a `ReadLogs`.
    pub(crate) fn logs_answered(&mut self, command: u64, lines: Vec<NodeLogLine>) {
        let Some(pending) = self.pending_logs.remove(&command) else {
            return;
        };
        for line in lines {
            reply(&pending.client, pending.request, ControlReply::Log(line));
        }
        let more = self
            .pending_logs
            .values()
            .any(|p| p.request == pending.request && p.client.same_channel(&pending.client));
        if !more {
            self.logs_complete(
                pending.dataflow,
                pending.client,
                pending.request,
                pending.follow,
            );
        }
    }

    pub(crate) fn logs_complete(&mut self, id: Uuid, tx: ClientTx, req: u64, follow: bool) {
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        if !follow {
            return reply(&tx, req, ControlReply::LogsEnd);
        }
        if flow.record.status.is_done() {
            let outcome = flow.record.outcome.clone();
            return reply(&tx, req, ControlReply::Finished { id, outcome });
        }
        flow.watchers.push((tx, req));
        let daemons: Vec<String> = flow.parts.keys().cloned().collect();
        for d in daemons {
            self.send_to_daemon(
                &d,
                DaemonCommand::WatchLogs {
                    dataflow: id,
                    watch: true,
                },
            );
        }
    }
}
