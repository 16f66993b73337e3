//! Starting a dataflow, all or nothing:
//!
//! 1. **Placement** of every node, before anything is sent ([`Coordinator::place`]).
//! 2. **Prepare** (only when a daemon has work to do first: a `--build` of `local` nodes, a
//!    binary to fetch for `scp`/`http` nodes): every such daemon builds, downloads and verifies,
//!    keeps the result and answers `Prepared`. Nothing runs yet; the dataflow is `preparing`.
//! 3. **Spawn**, once every daemon is prepared: each daemon spawns its nodes with what it
//!    prepared and answers `Spawned`. If any preparation failed, the prepared daemons get
//!    `Discard` instead and the client an error naming node, machine and strategy.
//!
//! A dataflow no daemon has to prepare skips step 2. A spawn that fails in step 3 (a missing
//! executable, say) still stops the parts that did start.

use std::collections::{BTreeMap, BTreeSet};

use adora_core::{
    descriptor::Distribute,
    placement::{self, Candidate},
    Descriptor, NodeId,
};
use adora_message::{
    cli_to_coordinator::StartDataflow,
    control::{ControlError, DataflowStatus, ErrorKind},
    coordinator_to_cli::ControlReply,
    coordinator_to_daemon::{DaemonCommand, SpawnDataflow},
    distribute::NodeArtifacts,
};
use adora_store::DataflowRecord;
use uuid::Uuid;

use crate::{
    actor::{reply, ClientTx, Coordinator, Flow},
    requests::error,
};

/// A start waiting for its daemons' `Prepared`, then `Spawned`.
pub(crate) struct PendingStart {
    pub client: ClientTx,
    pub request: u64,
    /// Daemons that have not answered the current phase yet.
    pub waiting: BTreeSet<String>,
    pub errors: Vec<String>,
    /// Set for a restart: answer `Restarted { old, .. }` instead of `Started`.
    pub restart_of: Option<Uuid>,
    /// While the daemons prepare: every daemon's spawn command, sent once all are prepared.
    pub preparing: Option<BTreeMap<String, SpawnDataflow>>,
}

impl Coordinator {
    pub(crate) fn start(
        &mut self,
        start: StartDataflow,
        tx: ClientTx,
        request: u64,
        restart_of: Option<Uuid>,
    ) {
        let id = Uuid::new_v4();
        let record = match self.new_record(id, &start) {
            Ok(record) => record,
            Err(e) => return reply(&tx, request, ControlReply::Error(e)),
        };
        let name = record.name.clone();
        let flow = self.insert_flow(record);
        if start.attach {
            flow.watchers.push((tx.clone(), request));
        }
        let commands = spawn_commands(flow, &start);
        let prepare = commands.values().any(SpawnDataflow::needs_preparation);
        if prepare {
            flow.record.status = DataflowStatus::Preparing;
        }
        self.save(id);
        if start.attach {
            for daemon in commands.keys() {
                let watch = DaemonCommand::WatchLogs {
                    dataflow: id,
                    watch: true,
                };
                self.send_to_daemon(daemon, watch);
            }
        }
        self.pending_starts.insert(
            id,
            PendingStart {
                client: tx,
                request,
                waiting: BTreeSet::new(),
                errors: Vec::new(),
                restart_of,
                preparing: None,
            },
        );
        if prepare {
            tracing::info!("preparing dataflow `{name}` ({id}) on its daemons");
            self.send_prepare(id, commands);
        } else {
            tracing::info!("starting dataflow `{name}` ({id})");
            self.send_spawn(id, commands);
        }
        self.advance_start(id);
    }

    /// The record of a new run: its name checked (or generated), its binaries, its placement.
    fn new_record(&self, id: Uuid, start: &StartDataflow) -> Result<DataflowRecord, ControlError> {
        let name = self
            .check_name(start.name.clone())?
            .unwrap_or_else(|| self.generate_name(id));
        let artifacts = self.artifacts_of(start)?;
        let placement = self.place(&start.descriptor, "start")?;
        let mut record = DataflowRecord::new(
            id,
            name,
            start.descriptor.clone(),
            start.working_dir.clone(),
            placement,
        );
        record.request_id = self.current_request;
        record.artifacts = artifacts;
        Ok(record)
    }

    /// `Ok(None)` when no name was asked for; an error when it is taken or unusable.
    fn check_name(&self, name: Option<String>) -> Result<Option<String>, ControlError> {
        match name {
            Some(name) if self.name_taken(&name) => Err(ControlError::new(
                ErrorKind::DuplicateName,
                format!("a running dataflow is already named `{name}`; stop it first or choose another --name"),
            )),
            Some(name) if name.trim().is_empty() || name.parse::<Uuid>().is_ok() => Err(
                ControlError::new(
                    ErrorKind::InvalidRequest,
                    format!("`{name}` cannot be used as a dataflow name"),
                ),
            ),
            other => Ok(other),
        }
    }

    fn name_taken(&self, name: &str) -> bool {
        self.flows
            .values()
            .any(|f| f.record.name == name && !f.record.status.is_done())
    }

    fn generate_name(&self, id: Uuid) -> String {
        let simple = id.simple().to_string();
        let mut len = 6;
        loop {
            let name = format!("dataflow-{}", &simple[..len]);
            if !self.name_taken(&name) || len >= simple.len() {
                return name;
            }
            len += 2;
        }
    }

    /// The binaries of a start: the CLI's, or those of the stored build it names.
    fn artifacts_of(&self, start: &StartDataflow) -> Result<NodeArtifacts, ControlError> {
        let Some(build_id) = start.build_id else {
            return Ok(start.artifacts.clone());
        };
        let build = self.builds.get(&build_id).ok_or_else(|| {
            ControlError::new(
                ErrorKind::NotFound,
                format!("no build {build_id} (builds are kept a week; run `adora build` again)"),
            )
        })?;
        missing_artifacts(&start.descriptor, &build.artifacts, build_id)?;
        Ok(build.artifacts.clone())
    }

    /// Places every node on a connected daemon (all or nothing); node → daemon name.
    pub(crate) fn place(
        &self,
        descriptor: &Descriptor,
        what: &str,
    ) -> Result<BTreeMap<NodeId, String>, ControlError> {
        let connected: Vec<usize> = (0..self.daemons.len())
            .filter(|&i| self.daemons[i].tx.is_some())
            .collect();
        let mut reserved = self.reserved_by_daemon();
        let candidates: Vec<Candidate> = connected
            .iter()
            .map(|&i| self.candidate(&self.daemons[i], &mut reserved))
            .collect();
        match placement::place(descriptor, &candidates) {
            Ok(placed) => Ok(placed
                .into_iter()
                .map(|(node, i)| (node, self.daemons[connected[i]].name().to_owned()))
                .collect()),
            Err(errors) => {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                Err(ControlError::new(
                    ErrorKind::Placement,
                    format!(
                        "cannot place the dataflow (nothing was {what}ed):\n{}",
                        lines.join("\n")
                    ),
                ))
            }
        }
    }

    /// Phase 1: `Prepare` to every daemon with work to do; the commands wait for phase 2.
    fn send_prepare(&mut self, id: Uuid, commands: BTreeMap<String, SpawnDataflow>) {
        let mut waiting = BTreeSet::new();
        let mut errors = Vec::new();
        for (daemon, spawn) in commands.iter().filter(|(_, s)| s.needs_preparation()) {
            match self.send_to_daemon(daemon, DaemonCommand::Prepare(spawn.clone())) {
                Some(_) => waiting.insert(daemon.clone()),
                None => {
                    errors.push(format!("daemon `{daemon}` is not connected"));
                    false
                }
            };
        }
        if let Some(pending) = self.pending_starts.get_mut(&id) {
            pending.waiting = waiting;
            pending.errors = errors;
            pending.preparing = Some(commands);
        }
    }

    /// Phase 2: `Spawn` to every daemon.
    fn send_spawn(&mut self, id: Uuid, commands: BTreeMap<String, SpawnDataflow>) {
        self.start_waiting_taps(id);
        let mut waiting = BTreeSet::new();
        for (daemon, spawn) in commands {
            if self
                .send_to_daemon(&daemon, DaemonCommand::Spawn(spawn))
                .is_some()
            {
                waiting.insert(daemon);
            }
        }
        if let Some(pending) = self.pending_starts.get_mut(&id) {
            pending.waiting = waiting;
            pending.preparing = None;
        }
    }

    /// A daemon answered a `Prepare`.
    pub(crate) fn prepare_answered(
        &mut self,
        id: Uuid,
        daemon: &str,
        result: Result<(), ControlError>,
    ) {
        let Some(p) = self.pending_starts.get_mut(&id) else {
            return;
        };
        if p.preparing.is_some() && p.waiting.remove(daemon) {
            if let Err(e) = result {
                p.errors.push(e.message);
            }
            self.advance_start(id);
        }
    }

    /// A daemon answered a `Spawn` of a start (auto-recoveries are in `crate::recovery`).
    pub(crate) fn spawn_answered(
        &mut self,
        id: Uuid,
        daemon: &str,
        result: Result<(), ControlError>,
    ) {
        let Some(p) = self.pending_starts.get_mut(&id) else {
            return;
        };
        if p.preparing.is_none() && p.waiting.remove(daemon) {
            if let Err(e) = result {
                p.errors.push(format!("daemon `{daemon}`: {e}"));
            }
            self.advance_start(id);
        }
    }

    /// A daemon of a pending start disconnected: it fails whichever phase it was in.
    pub(crate) fn start_daemon_gone(&mut self, id: Uuid, daemon: &str) {
        let Some(p) = self.pending_starts.get_mut(&id) else {
            return;
        };
        if p.waiting.remove(daemon) {
            let phase = if p.preparing.is_some() {
                "preparing"
            } else {
                "spawning"
            };
            p.errors
                .push(format!("daemon `{daemon}` disconnected while {phase}"));
            self.advance_start(id);
        }
    }

    /// Moves a start on once every daemon answered its phase: to the spawn phase, to `Started`,
    /// or to failure.
    fn advance_start(&mut self, id: Uuid) {
        let Some(pending) = self.pending_starts.get_mut(&id) else {
            return;
        };
        if !pending.waiting.is_empty() {
            return;
        }
        if !pending.errors.is_empty() {
            let pending = self.pending_starts.remove(&id).expect("checked above");
            return self.fail_start(id, pending);
        }
        if let Some(commands) = pending.preparing.take() {
            if let Some(flow) = self.flows.get_mut(&id) {
                flow.record.status = DataflowStatus::Running;
                tracing::info!("dataflow {id} prepared everywhere: spawning it");
            }
            self.save(id);
            self.send_spawn(id, commands);
            return self.advance_start(id);
        }
        let pending = self.pending_starts.remove(&id).expect("checked above");
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        let name = flow.record.name.clone();
        let body = match pending.restart_of {
            Some(old) => ControlReply::Restarted { old, new: id, name },
            None => ControlReply::Started {
                id,
                name,
                placement: flow.record.placement.clone(),
            },
        };
        reply(&pending.client, pending.request, body);
    }

    /// The start failed: nothing was spawned when it failed while preparing (the prepared
    /// daemons discard their work); a failed spawn stops the parts that did start.
    fn fail_start(&mut self, id: Uuid, pending: PendingStart) {
        let prepared = pending.preparing.is_some();
        let message = if prepared {
            format!(
                "cannot start the dataflow (nothing was started):\n{}",
                pending.errors.join("\n")
            )
        } else {
            format!("cannot start the dataflow:\n{}", pending.errors.join("\n"))
        };
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        flow.watchers.clear();
        flow.record.status = DataflowStatus::Failed;
        flow.record.failure = Some(message.clone());
        let daemons: Vec<String> = flow.parts.keys().cloned().collect();
        flow.parts.values_mut().for_each(|p| p.finished = true);
        self.save(id);
        for d in daemons {
            let command = if prepared {
                DaemonCommand::Discard { dataflow: id }
            } else {
                DaemonCommand::Stop {
                    dataflow: id,
                    grace: None,
                }
            };
            if self.send_to_daemon(&d, command).is_none() && prepared {
                self.discard_on_register(&d, id);
            }
        }
        error(&pending.client, pending.request, ErrorKind::Daemon, message);
    }

    /// `adora stop` of a dataflow still being prepared: the start fails, nothing is spawned.
    /// Returns false when `id` is not being prepared.
    pub(crate) fn stop_preparing(&mut self, id: Uuid) -> bool {
        let Some(pending) = self.pending_starts.get_mut(&id) else {
            return false;
        };
        if pending.preparing.is_none() {
            return false;
        }
        pending.waiting.clear();
        pending
            .errors
            .push("stopped by `adora stop` while being prepared".into());
        self.advance_start(id);
        true
    }
}

/// Every daemon's spawn command of a new run.
fn spawn_commands(flow: &Flow, start: &StartDataflow) -> BTreeMap<String, SpawnDataflow> {
    let record = &flow.record;
    // One copy of the descriptor for every daemon's command: a copy each made a start of
    // 1000 nodes on 200 daemons cost the coordinator ~200 MiB.
    let descriptor = std::sync::Arc::new(start.descriptor.clone());
    flow.parts
        .iter()
        .map(|(daemon, part)| {
            let spawn = SpawnDataflow {
                id: record.id,
                name: record.name.clone(),
                descriptor: descriptor.clone(),
                working_dir: start.working_dir.clone(),
                nodes: part.nodes.clone(),
                artifacts: record.artifacts.clone(),
                build: start.build,
            };
            (daemon.clone(), spawn)
        })
        .collect()
}

/// An error when a `scp`/`http` node of `descriptor` has no binary in the build.
fn missing_artifacts(
    descriptor: &Descriptor,
    artifacts: &NodeArtifacts,
    build_id: Uuid,
) -> Result<(), ControlError> {
    let missing: Vec<String> = descriptor
        .nodes
        .iter()
        .filter(|n| n.deploy().distribute != Distribute::Local && !artifacts.contains_key(&n.id))
        .map(|n| format!("`{}`", n.id))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ControlError::new(
        ErrorKind::InvalidRequest,
        format!(
            "build {build_id} has no binary of node(s) {} (distribute: scp | http): run `adora build` again",
            missing.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests;
