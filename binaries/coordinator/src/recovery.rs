//! Surviving failures of the coordinator and of daemons (DESIGN.md, "State, failure and
//! recovery"):
//!
//! - **Coordinator restart.** [`Coordinator::load`] reloads dataflows, machines and answered
//!   requests from the store. Every dataflow that was live waits for its daemons to reconnect
//!   and report it; one whose daemons are not all back within `reclaim_timeout` is marked failed
//!   with the reason. Nodes are never restarted by this: a daemon that reports the dataflow keeps
//!   running it.
//!   A dataflow that was still being prepared (nothing of it spawned) is marked failed; its
//!   daemons get `Discard` when they register.
//! - **Daemon restart** (killed, crashed, upgraded). A daemon that registers *without* a live
//!   dataflow that has nodes placed on it lost them: the coordinator re-spawns them there
//!   (auto-recovery), at most once per `recovery_backoff` per (daemon, dataflow). A part that
//!   could not be re-spawned is retried when the window has passed. The backoff clears when the
//!   daemon reports the dataflow running in a registration.

use std::collections::{BTreeSet, HashMap};

use adora_client::Backoff;
use adora_message::{
    control::{ControlError, DataflowStatus, NodeResult},
    coordinator_to_daemon::{DaemonCommand, SpawnDataflow},
};
use adora_store::{now_ms, MachineRecord};
use tokio::time::Instant;
use uuid::Uuid;

use crate::actor::{Coordinator, DaemonEntry};

/// Bookkeeping of reclaims and auto-recoveries in progress.
#[derive(Debug, Default)]
pub(crate) struct RecoveryState {
    /// After a coordinator restart: dataflow → (deadline, daemons not back yet).
    awaiting: HashMap<Uuid, (Instant, BTreeSet<String>)>,
    /// Auto-recovery re-spawns in progress per (daemon, dataflow).
    respawns: HashMap<(String, Uuid), Respawn>,
    /// Parts lost by a restarted daemon and not re-spawned yet (backoff or failed spawn).
    missing: BTreeSet<(String, Uuid)>,
    /// Failed starts whose preparation a daemon may still hold: it gets `Discard` when it
    /// registers (it was not connected when the start failed, or the coordinator restarted).
    discard: BTreeSet<(String, Uuid)>,
}

/// The auto-recovery of one (daemon, dataflow) part.
#[derive(Debug)]
struct Respawn {
    /// No new re-spawn before this.
    not_before: Instant,
    /// Spaces the re-spawns: a constant `recovery_backoff`.
    backoff: Backoff,
}

impl RecoveryState {
    /// Forgets the bookkeeping of dataflows the coordinator no longer knows (see
    /// [`crate::retention`]).
    pub(crate) fn forget(&mut self, ids: &BTreeSet<Uuid>) {
        self.awaiting.retain(|id, _| !ids.contains(id));
        self.respawns.retain(|(_, id), _| !ids.contains(id));
        self.missing.retain(|(_, id)| !ids.contains(id));
    }
}

impl Coordinator {
    /// Loads the stored state, off the async runtime. Called once before the actor serves.
    pub(crate) async fn load(&mut self) {
        self.load_enrollment().await;
        let store = self.store.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            Ok::<_, adora_store::StoreError>((
                store.dataflows()?,
                store.machines()?,
                store.requests()?,
                store.builds()?,
                store.maintenance()?,
            ))
        })
        .await;
        let (mut flows, machines, requests, builds, maintenance) = match loaded {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(e)) => return tracing::error!("cannot load the coordinator's state: {e}"),
            Err(e) => return tracing::error!("cannot load the coordinator's state: {e}"),
        };
        flows.sort_by_key(|r| r.created_at_ms);
        let deadline = Instant::now() + self.config.reclaim_timeout;
        let live = flows.iter().filter(|r| !r.status.is_done()).count();
        for mut record in flows {
            if record.status == DataflowStatus::Preparing {
                // Nothing of it was spawned; its start cannot complete any more.
                record.status = DataflowStatus::Failed;
                record.failure = Some(
                    "the coordinator restarted while the dataflow was being prepared (nothing was started)".into(),
                );
                for daemon in record.placement.values() {
                    self.recovery.discard.insert((daemon.clone(), record.id));
                }
                let id = record.id;
                self.insert_flow(record);
                self.save(id);
                continue;
            }
            let flow = self.insert_flow(record);
            if flow.record.status.is_done() {
                continue;
            }
            let daemons: BTreeSet<String> = flow.parts.keys().cloned().collect();
            let id = flow.record.id;
            self.recovery.awaiting.insert(id, (deadline, daemons));
        }
        for m in machines {
            let age = std::time::Duration::from_millis(now_ms().saturating_sub(m.last_seen_ms));
            self.daemons.push(DaemonEntry::known(m, age));
        }
        self.requests.load(requests);
        self.builds = builds.into_iter().map(|b| (b.id, b)).collect();
        self.maintenance = maintenance
            .into_iter()
            .map(|m| (m.machine.clone(), m))
            .collect();
        self.prune(now_ms());
        tracing::info!(
            "loaded {} dataflow(s) ({live} to reclaim) and {} machine(s) from the store",
            self.flows.len(),
            self.daemons.len()
        );
    }

    /// Stores what is known about a daemon (on registration and disconnection).
    pub(crate) fn save_machine(&self, name: &str) {
        let Some(d) = self.daemons.iter().find(|d| d.name() == name) else {
            return;
        };
        let record = MachineRecord {
            name: name.to_owned(),
            machine_id: d.machine_id.clone(),
            hostname: d.hostname.clone(),
            labels: d.labels.clone(),
            last_seen_ms: now_ms(),
        };
        if let Err(e) = self.store.put_machine(&record) {
            tracing::error!("cannot store machine `{name}`: {e}");
        }
    }

    /// After `daemon` registered and its reported dataflows were reclaimed: clear what it
    /// reported, stop waiting for it, and recover the live parts it no longer runs.
    pub(crate) fn after_register(&mut self, daemon: &str, reported: &BTreeSet<Uuid>) {
        self.save_machine(daemon);
        for id in reported {
            self.recovery.respawns.remove(&(daemon.to_owned(), *id));
            self.recovery.missing.remove(&(daemon.to_owned(), *id));
        }
        self.recovery.awaiting.retain(|_, (_, waiting)| {
            waiting.remove(daemon);
            !waiting.is_empty()
        });
        let lost: Vec<(Uuid, DataflowStatus)> = self
            .flows
            .values()
            .filter(|f| !f.record.status.is_done() && !reported.contains(&f.record.id))
            .filter(|f| f.parts.get(daemon).is_some_and(|p| !p.finished))
            .map(|f| (f.record.id, f.record.status))
            .collect();
        for (id, status) in lost {
            match status {
                DataflowStatus::Running => {
                    tracing::warn!(
                        "daemon `{daemon}` registered without dataflow {id}: it restarted"
                    );
                    self.recovery.missing.insert((daemon.to_owned(), id));
                }
                // Nothing of it runs there any more.
                DataflowStatus::Stopping => self.part_finished(id, daemon, Default::default()),
                // Being prepared: its start decides.
                _ => {}
            }
        }
        let discards: Vec<Uuid> = self
            .recovery
            .discard
            .iter()
            .filter(|(d, _)| d == daemon)
            .map(|(_, id)| *id)
            .collect();
        for dataflow in discards {
            self.recovery.discard.remove(&(daemon.to_owned(), dataflow));
            self.send_to_daemon(daemon, DaemonCommand::Discard { dataflow });
        }
        self.recover_missing();
    }

    /// `daemon` gets `Discard` for `dataflow` when it next registers.
    pub(crate) fn discard_on_register(&mut self, daemon: &str, dataflow: Uuid) {
        self.recovery.discard.insert((daemon.to_owned(), dataflow));
    }

    /// Runs on every heartbeat tick: retries recoveries whose backoff passed and fails the
    /// dataflows whose daemons did not come back after a coordinator restart.
    pub(crate) fn recovery_tick(&mut self) {
        self.recover_missing();
        let now = Instant::now();
        let expired: Vec<(Uuid, BTreeSet<String>)> = self
            .recovery
            .awaiting
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(id, (_, waiting))| (*id, waiting.clone()))
            .collect();
        for (id, waiting) in expired {
            self.recovery.awaiting.remove(&id);
            let Some(flow) = self.flows.get_mut(&id) else {
                continue;
            };
            if flow.record.status.is_done() {
                continue;
            }
            let names: Vec<String> = waiting.iter().map(|d| format!("`{d}`")).collect();
            let reason = format!(
                "daemon(s) {} did not reconnect within {:?} after the coordinator restarted",
                names.join(", "),
                self.config.reclaim_timeout
            );
            tracing::warn!("dataflow `{}` ({id}) failed: {reason}", flow.record.name);
            // The nodes of the missing daemons carry the reason in the dataflow's result.
            for d in &waiting {
                if let Some(part) = flow.parts.get_mut(d) {
                    part.finished = true;
                    for node in &part.nodes {
                        let failed = NodeResult::Failed {
                            reason: reason.clone(),
                            stderr_tail: Vec::new(),
                        };
                        flow.record.outcome.nodes.insert(node.clone(), failed);
                    }
                }
            }
            flow.record.failure = Some(reason);
            self.send_stop_to_connected(id);
            self.flow_ended(id);
        }
    }

    /// Stops the parts of a failed dataflow that still run on connected daemons.
    fn send_stop_to_connected(&mut self, id: Uuid) {
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        let running: Vec<String> = flow
            .parts
            .iter()
            .filter(|(_, p)| !p.finished)
            .map(|(d, _)| d.clone())
            .collect();
        flow.parts.values_mut().for_each(|p| p.finished = true);
        for d in running {
            let stop = DaemonCommand::Stop {
                dataflow: id,
                grace: None,
            };
            self.send_to_daemon(&d, stop);
        }
    }

    /// Re-spawns every missing part whose daemon is connected and whose backoff has passed.
    fn recover_missing(&mut self) {
        let now = Instant::now();
        let due: Vec<(String, Uuid)> = self
            .recovery
            .missing
            .iter()
            .filter(|key| {
                self.recovery
                    .respawns
                    .get(*key)
                    .is_none_or(|r| r.not_before <= now)
            })
            .filter(|(d, _)| self.daemon_tx(d).is_some())
            .cloned()
            .collect();
        for (daemon, id) in due {
            self.recovery.missing.remove(&(daemon.clone(), id));
            self.respawn(&daemon, id);
        }
    }

    /// Auto-recovery: spawns the nodes of dataflow `id` placed on `daemon` again.
    fn respawn(&mut self, daemon: &str, id: Uuid) {
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        let Some(part) = flow.parts.get(daemon) else {
            return;
        };
        if flow.record.status != DataflowStatus::Running || part.finished {
            return;
        }
        flow.record.generation += 1;
        let spawn = DaemonCommand::Spawn(SpawnDataflow {
            id,
            name: flow.record.name.clone(),
            descriptor: std::sync::Arc::new(flow.record.descriptor.clone()),
            working_dir: flow.record.working_dir.clone(),
            nodes: part.nodes.clone(),
            artifacts: flow.record.artifacts.clone(),
            build: false,
        });
        let watched = !flow.watchers.is_empty();
        tracing::info!(
            "auto-recovery: re-spawning {} node(s) of dataflow `{}` ({id}) on restarted daemon `{daemon}` (generation {})",
            part.nodes.len(),
            flow.record.name,
            flow.record.generation
        );
        self.save(id);
        if watched {
            let watch = DaemonCommand::WatchLogs {
                dataflow: id,
                watch: true,
            };
            self.send_to_daemon(daemon, watch);
        }
        let window = self.config.recovery_backoff;
        let respawn = self
            .recovery
            .respawns
            .entry((daemon.to_owned(), id))
            .or_insert_with(|| Respawn {
                not_before: Instant::now(),
                backoff: Backoff::constant(window),
            });
        respawn.not_before = Instant::now() + respawn.backoff.next_delay();
        if self.send_to_daemon(daemon, spawn).is_none() {
            self.recovery.missing.insert((daemon.to_owned(), id));
        }
    }

    /// A daemon answered a spawn: a failed auto-recovery is retried after the backoff.
    pub(crate) fn recovery_spawned(
        &mut self,
        id: Uuid,
        daemon: &str,
        result: &Result<(), ControlError>,
    ) {
        let key = (daemon.to_owned(), id);
        if self.pending_starts.contains_key(&id) || !self.recovery.respawns.contains_key(&key) {
            return; // the answer to a start, not to a recovery
        }
        match result {
            Ok(()) => tracing::info!("auto-recovery: dataflow {id} runs again on `{daemon}`"),
            Err(e) => {
                tracing::warn!(
                    "auto-recovery of dataflow {id} on `{daemon}` failed: {e}; retrying in {:?}",
                    self.config.recovery_backoff
                );
                self.recovery.missing.insert(key);
            }
        }
    }
}

impl DaemonEntry {
    /// A machine known from the store, not connected (yet) after a coordinator restart.
    pub(crate) fn known(m: MachineRecord, age: std::time::Duration) -> Self {
        let now = std::time::Instant::now();
        let last_seen = now.checked_sub(age).unwrap_or(now);
        DaemonEntry {
            conn: 0,
            machine_id: m.machine_id,
            labels: m.labels,
            hostname: m.hostname,
            last_seen,
            zenoh_locators: Vec::new(),
            zenoh: crate::actor::peers::ZenohState::Unoffered,
            tx: None,
            adora_version: String::new(),
            registered_at: last_seen,
            instance: None,
            systemd_unit: None,
            limits: Default::default(),
            site: None,
            data_links: None,
            link_status: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
