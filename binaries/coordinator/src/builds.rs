//! `adora build` with a coordinator: the CLI has built, copied (`scp`) and uploaded (`http`)
//! the binaries it is responsible for; the coordinator places the dataflow, asks each daemon to
//! build its `local` nodes (their output streams to the CLI), and stores the build so that
//! `adora start --build-id` runs those binaries without building or uploading again. While a
//! build is stored its uploads are kept (see [`crate::artifacts`]).

use std::collections::{BTreeMap, BTreeSet};

use adora_core::{descriptor::Distribute, NodeId};
use adora_message::{
    cli_to_coordinator::BuildDataflow,
    control::{ControlError, ErrorKind, NodeLogLine},
    coordinator_to_cli::ControlReply,
    coordinator_to_daemon::{has_build, BuildNodes, DaemonCommand},
};
use adora_store::{now_ms, BuildRecord};
use uuid::Uuid;

use crate::{
    actor::{reply, ClientTx, Coordinator},
    requests::error,
};

/// A build waiting for its daemons' `Built`.
pub(crate) struct PendingBuild {
    client: ClientTx,
    request: u64,
    /// Daemons that have not answered yet.
    waiting: BTreeSet<String>,
    errors: Vec<String>,
    /// Stored once every daemon built.
    record: BuildRecord,
}

impl Coordinator {
    pub(crate) fn build(&mut self, build: BuildDataflow, tx: ClientTx, request: u64) {
        let build_id = build.build_id;
        if self.builds.contains_key(&build_id) || self.pending_builds.contains_key(&build_id) {
            return error(
                &tx,
                request,
                ErrorKind::InvalidRequest,
                format!("build {build_id} exists already"),
            );
        }
        let placement = match self.place(&build.descriptor, "built") {
            Ok(p) => p,
            Err(e) => return reply(&tx, request, ControlReply::Error(e)),
        };
        let mut per_daemon: BTreeMap<String, BTreeSet<NodeId>> = BTreeMap::new();
        for node in &build.descriptor.nodes {
            if node.deploy().distribute == Distribute::Local && has_build(node) {
                per_daemon
                    .entry(placement[&node.id].clone())
                    .or_default()
                    .insert(node.id.clone());
            }
        }
        let mut waiting = BTreeSet::new();
        let mut errors = Vec::new();
        for (daemon, nodes) in per_daemon {
            let command = DaemonCommand::Build(BuildNodes {
                build_id,
                descriptor: build.descriptor.clone(),
                working_dir: build.working_dir.clone(),
                nodes,
            });
            match self.send_to_daemon(&daemon, command) {
                Some(_) => waiting.insert(daemon),
                None => {
                    errors.push(format!("daemon `{daemon}` is not connected"));
                    false
                }
            };
        }
        tracing::info!("build {build_id}: {} daemon(s) building", waiting.len());
        let record = BuildRecord {
            id: build_id,
            artifacts: build.artifacts,
            placement,
            created_at_ms: 0,
        };
        self.pending_builds.insert(
            build_id,
            PendingBuild {
                client: tx,
                request,
                waiting,
                errors,
                record,
            },
        );
        self.advance_build(build_id);
    }

    /// A daemon answered a `Build`.
    pub(crate) fn build_answered(
        &mut self,
        build_id: Uuid,
        daemon: &str,
        result: Result<(), ControlError>,
    ) {
        let Some(pending) = self.pending_builds.get_mut(&build_id) else {
            return;
        };
        if pending.waiting.remove(daemon) {
            if let Err(e) = result {
                pending.errors.push(e.message);
            }
            self.advance_build(build_id);
        }
    }

    /// A daemon disconnected: the builds waiting on it fail.
    pub(crate) fn builds_daemon_gone(&mut self, daemon: &str) {
        let ids: Vec<Uuid> = self
            .pending_builds
            .iter()
            .filter(|(_, p)| p.waiting.contains(daemon))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let err = Err(ControlError::daemon(format!(
                "daemon `{daemon}` disconnected while building"
            )));
            self.build_answered(id, daemon, err);
        }
    }

    /// Build output of a daemon, for the CLI waiting on the build.
    pub(crate) fn build_log(&mut self, line: NodeLogLine) {
        if let Some(pending) = self.pending_builds.get(&line.dataflow) {
            reply(&pending.client, pending.request, ControlReply::Log(line));
        }
    }

    fn advance_build(&mut self, build_id: Uuid) {
        let Some(pending) = self.pending_builds.get(&build_id) else {
            return;
        };
        if !pending.waiting.is_empty() {
            return;
        }
        let mut pending = self
            .pending_builds
            .remove(&build_id)
            .expect("checked above");
        if !pending.errors.is_empty() {
            let message = format!("cannot build the dataflow:\n{}", pending.errors.join("\n"));
            return error(&pending.client, pending.request, ErrorKind::Daemon, message);
        }
        pending.record.created_at_ms = now_ms();
        if let Err(e) = self.store.put_build(&pending.record) {
            tracing::error!("cannot store build {build_id}: {e}");
        }
        let placement = pending.record.placement.clone();
        self.builds.insert(build_id, pending.record);
        tracing::info!("build {build_id} done");
        let body = ControlReply::Built {
            build_id,
            placement,
        };
        reply(&pending.client, pending.request, body);
    }
}
