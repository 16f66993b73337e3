//! Getting a dataflow ready before it spawns (`Prepare`, `Spawn`, `Discard`) and `adora build`:
//! the builds and downloads run on tasks (`crate::distribute`); their results come back to the
//! actor as [`ServiceCommand`]s.

use std::{collections::BTreeMap, path::PathBuf};

use adora_core::NodeId;
use adora_message::{
    control::ControlError,
    coordinator_to_daemon::{BuildNodes, SpawnDataflow},
    daemon_to_coordinator::DaemonMessage,
};
use uuid::Uuid;

use super::{AfterPrepare, Service, ServiceCommand};
use crate::{actor::Daemon, distribute};

impl Daemon {
    /// `Spawn`: with what its `Prepare` left ready, else preparing first when needed.
    pub(super) fn spawn_command(
        &mut self,
        request: u64,
        mut spawn: SpawnDataflow,
        service: &mut Service,
    ) {
        let dataflow = spawn.id;
        if let Some(paths) = service.prepared.remove(&dataflow) {
            distribute::apply(&mut spawn, &paths);
        } else if let Some(after) = service.preparing.get_mut(&dataflow) {
            if !matches!(after, AfterPrepare::Discard) {
                let spawn = Box::new(spawn);
                *after = AfterPrepare::Spawn { request, spawn };
            }
            return;
        } else if spawn.needs_preparation() && !service.names.contains_key(&dataflow) {
            let spawn = Box::new(spawn.clone());
            return service.start_preparing(
                spawn.as_ref().clone(),
                AfterPrepare::Spawn { request, spawn },
            );
        }
        let result = self
            .spawn_for_coordinator(spawn, service)
            .map_err(ControlError::daemon);
        service.report(request, DaemonMessage::Spawned { dataflow, result });
    }

    /// A preparation finished: keep its result, spawn, or throw it away.
    pub(super) fn prepared(
        &mut self,
        dataflow: Uuid,
        result: Result<BTreeMap<NodeId, PathBuf>, String>,
        service: &mut Service,
    ) {
        let after = service
            .preparing
            .remove(&dataflow)
            .unwrap_or(AfterPrepare::Discard);
        let failed = result.is_err();
        match after {
            AfterPrepare::Keep { request } => {
                let result = result
                    .map(|paths| {
                        service.prepared.insert(dataflow, paths);
                    })
                    .map_err(ControlError::daemon);
                service.report(request, DaemonMessage::Prepared { dataflow, result });
            }
            AfterPrepare::Spawn { request, mut spawn } => {
                let result = result
                    .and_then(|paths| {
                        distribute::apply(&mut spawn, &paths);
                        self.spawn_for_coordinator(*spawn, service)
                    })
                    .map_err(ControlError::daemon);
                service.report(request, DaemonMessage::Spawned { dataflow, result });
            }
            AfterPrepare::Discard => {
                tracing::info!("dataflow {dataflow} was discarded while being prepared");
                service.discard_downloads(dataflow);
            }
        }
        if failed {
            service.discard_downloads(dataflow);
        }
    }
}

impl Service {
    /// `Prepare`: builds and downloads on a task; answered with `Prepared` when done. Idempotent:
    /// a dataflow prepared, running or being prepared here is not prepared again.
    pub(super) fn prepare(&mut self, request: u64, spawn: SpawnDataflow) {
        let dataflow = spawn.id;
        if self.preparing.contains_key(&dataflow) {
            return; // a retry: the first command's preparation answers
        }
        let ready = self.prepared.contains_key(&dataflow) || self.names.contains_key(&dataflow);
        if ready || !spawn.needs_preparation() {
            let result = Ok(());
            return self.report(request, DaemonMessage::Prepared { dataflow, result });
        }
        self.start_preparing(spawn, AfterPrepare::Keep { request });
    }

    /// Runs `crate::distribute::prepare` on a task; the actor gets `ServiceCommand::Prepared`.
    fn start_preparing(&mut self, spawn: SpawnDataflow, after: AfterPrepare) {
        let dataflow = spawn.id;
        let Some((ctx, commands)) = self.distribution.clone() else {
            let result = Err(ControlError::daemon(
                "this daemon cannot fetch or build binaries (not a service)",
            ));
            let (request, body) = match after {
                AfterPrepare::Keep { request } => {
                    (request, DaemonMessage::Prepared { dataflow, result })
                }
                AfterPrepare::Spawn { request, .. } => {
                    (request, DaemonMessage::Spawned { dataflow, result })
                }
                AfterPrepare::Discard => return,
            };
            return self.report(request, body);
        };
        self.preparing.insert(dataflow, after);
        let logs = distribute::BuildLogs {
            dataflow,
            reports: self.reports.clone(),
            watched: self.watched.clone(),
            tasks: self.tasks.clone(),
        };
        self.tasks
            .spawn_until_cancelled(format!("preparing dataflow {dataflow}"), async move {
                let result = distribute::prepare(&ctx, &spawn, &logs).await;
                let _ = commands
                    .send(ServiceCommand::Prepared { dataflow, result })
                    .await;
            });
    }

    /// `Discard`: forgets a prepared dataflow (removing its downloads), or marks one being
    /// prepared to be thrown away when done. A running dataflow is left alone (`Stop` is for it).
    pub(super) fn discard(&mut self, dataflow: Uuid) {
        self.watch(dataflow, false);
        if self.prepared.remove(&dataflow).is_some() {
            tracing::info!("discarding prepared dataflow {dataflow}: its start failed");
            self.discard_downloads(dataflow);
        } else if let Some(after) = self.preparing.get_mut(&dataflow) {
            *after = AfterPrepare::Discard;
        }
    }

    fn discard_downloads(&self, dataflow: Uuid) {
        if self.names.contains_key(&dataflow) {
            return; // running: its nodes use the downloads
        }
        if let Some((ctx, _)) = &self.distribution {
            distribute::discard_downloads(ctx, dataflow, &self.tasks);
        }
    }

    /// `Build` (`adora build`): runs the builds on a task, forwarding their output; answered with
    /// `Built`. A retried command while the build runs is answered by the first.
    pub(super) fn start_build(&mut self, request: u64, build: BuildNodes) {
        let build_id = build.build_id;
        let Some((ctx, commands)) = self.distribution.clone() else {
            let result = Err(ControlError::daemon(
                "this daemon cannot build (not a service)",
            ));
            return self.report(request, DaemonMessage::Built { build_id, result });
        };
        if !self.building.insert(build_id) {
            return;
        }
        self.watch(build_id, true);
        let logs = distribute::BuildLogs {
            dataflow: build_id,
            reports: self.reports.clone(),
            watched: self.watched.clone(),
            tasks: self.tasks.clone(),
        };
        self.tasks
            .spawn_until_cancelled(format!("build {build_id}"), async move {
                let result = distribute::build(&ctx, &build, &logs).await;
                let built = ServiceCommand::Built {
                    request,
                    build_id,
                    result,
                };
                let _ = commands.send(built).await;
            });
    }
}
