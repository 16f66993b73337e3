//! The daemons' side of the coordinator actor: registration (and reclaiming what a daemon
//! reports running), liveness, and the daemons' messages.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use adora_core::NodeId;
use adora_message::{
    control::{DataflowStatus, RunningDataflow},
    coordinator_to_cli::ControlReply,
    coordinator_to_daemon::{DaemonCommand, RegistrationRefused},
    daemon_to_coordinator::{DaemonMessage, DaemonRegistration},
    envelope::Envelope,
};
use adora_store::DataflowRecord;
use uuid::Uuid;

use super::{peers::ZenohState, ConnId, Coordinator, DaemonEntry, DaemonTx, Outgoing};

/// True when `reg` must be refused because `known`, the entry with its machine id, is another
/// daemon process that is still connected: never two daemons for one machine. A reconnect of
/// the same process (same instance id; daemons that predate instance ids count as the same)
/// replaces its stale connection instead.
fn refuses(known: &DaemonEntry, reg: &DaemonRegistration) -> bool {
    known.tx.is_some() && reg.machine_id.is_some() && known.instance != reg.instance
}

/// The error the refused newcomer gets, naming the connected daemon's host and address.
fn refusal(connected: &DaemonEntry) -> RegistrationRefused {
    let address = connected
        .zenoh_locators
        .first()
        .and_then(|l| l.split_once('/').map(|(_, addr)| addr)) // `tcp/` or `tls/`
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.ip().to_string());
    RegistrationRefused::MachineIdTaken {
        machine_id: connected.name().to_owned(),
        hostname: connected.hostname.clone(),
        address,
        connected_for_secs: connected.registered_at.elapsed().as_secs(),
    }
}

impl Coordinator {
    pub(super) fn heartbeat(&mut self) {
        let timeout = self.config.daemon_timeout;
        for d in &mut self.daemons {
            let Some(tx) = &d.tx else { continue };
            if d.last_seen.elapsed() > timeout {
                tracing::warn!(
                    "daemon `{}` sent nothing for {:?}: marking it lost",
                    d.name(),
                    d.last_seen.elapsed()
                );
                let _ = tx.send(Outgoing::Close("heartbeat timeout".into()));
                d.tx = None;
                continue;
            }
            let _ = tx.send(Outgoing::Message(Envelope::new(
                0,
                DaemonCommand::Heartbeat,
            )));
        }
        self.peers_timeouts();
        self.recovery_tick();
    }

    pub(super) fn handle_register(&mut self, conn: ConnId, reg: DaemonRegistration, tx: DaemonTx) {
        let entry = DaemonEntry {
            conn,
            machine_id: reg.machine_id.clone(),
            labels: reg.labels.clone(),
            hostname: reg.hostname.clone(),
            last_seen: Instant::now(),
            zenoh_locators: reg.zenoh_locators.clone(),
            zenoh: ZenohState::registered_with(&reg.zenoh_locators),
            tx: Some(tx),
            adora_version: reg.adora_version.clone(),
            registered_at: Instant::now(),
            instance: reg.instance,
            systemd_unit: reg.systemd_unit.clone(),
            limits: reg.limits,
            site: reg.site.clone(),
            // A new session has no links; one already open (a reconnect) is told its set.
            data_links: reg.zenoh_locators.is_empty().then(Vec::new),
            link_status: Vec::new(),
        };
        let existing = self.daemons.iter().position(|d| match &reg.machine_id {
            Some(id) => d.machine_id.as_deref() == Some(id),
            None => d.machine_id.is_none() && d.tx.is_none() && d.hostname == reg.hostname,
        });
        match existing {
            Some(i) if refuses(&self.daemons[i], &reg) => {
                let refused = refusal(&self.daemons[i]);
                tracing::warn!("refused a daemon from {}: {refused}", reg.hostname);
                if let Some(tx) = &entry.tx {
                    let answer = DaemonCommand::Refused(refused);
                    let _ = tx.send(Outgoing::Message(Envelope::new(0, answer)));
                    let _ = tx.send(Outgoing::Close("machine id taken".into()));
                }
                return;
            }
            Some(i) => {
                if let Some(old) = self.daemons[i].tx.take() {
                    tracing::warn!(
                        "daemon `{}` registered again: replacing its stale connection",
                        entry.name()
                    );
                    let _ = old.send(Outgoing::Close(
                        "replaced by a newer connection of the same daemon".into(),
                    ));
                }
                self.daemons[i] = entry;
            }
            None => self.daemons.push(entry),
        }
        // The newcomer connects its Zenoh session to the daemons already here (links are
        // bidirectional, and Zenoh retries them after a cut); see `peers`.
        if reg.zenoh_locators.is_empty() {
            self.offer_peers();
        } else {
            self.send_peers(conn);
        }
        let name = reg.machine_id.clone().unwrap_or(reg.hostname.clone());
        tracing::info!(
            "daemon `{name}` registered ({} running dataflows)",
            reg.running.len()
        );
        self.replace_node_locks(&name, &reg.locks);
        let reported: BTreeSet<Uuid> = reg.running.iter().map(|r| r.id).collect();
        for running in reg.running {
            self.reclaim(&name, running);
        }
        self.after_register(&name, &reported);
    }

    /// A daemon reports a dataflow it runs: adopt it if this coordinator does not know it
    /// (coordinator restart), so `list` shows it again and `stop` reaches it.
    fn reclaim(&mut self, daemon: &str, running: RunningDataflow) {
        let id = running.id;
        let mut nodes: BTreeSet<NodeId> = running.nodes.keys().cloned().collect();
        for stale in self.stale_instances(daemon, id, &nodes) {
            nodes.remove(&stale);
        }
        if !self.flows.contains_key(&id) {
            tracing::info!(
                "reclaiming dataflow `{}` ({id}) from `{daemon}`",
                running.name
            );
            let record = DataflowRecord::new(
                id,
                running.name,
                running.descriptor,
                running.working_dir,
                BTreeMap::new(),
            );
            self.insert_flow(record);
        }
        let flow = self.flows.get_mut(&id).expect("inserted above");
        for node in &nodes {
            flow.record
                .placement
                .insert(node.clone(), daemon.to_owned());
        }
        let part = flow.parts.entry(daemon.to_owned()).or_default();
        part.nodes.extend(nodes);
        part.finished = false;
        let stopping = flow.record.status != DataflowStatus::Running;
        self.save(id);
        if stopping {
            // A stop (or a failed start) happened while this daemon was away.
            self.send_to_daemon(
                daemon,
                DaemonCommand::Stop {
                    dataflow: id,
                    grace: None,
                },
            );
        }
    }

    pub(super) fn handle_daemon_gone(&mut self, conn: ConnId, reason: &str) {
        let Some(d) = self.daemons.iter_mut().find(|d| d.conn == conn) else {
            return;
        };
        if d.tx.take().is_some() {
            tracing::warn!("lost daemon `{}`: {reason}", d.name());
        }
        let name = d.name().to_owned();
        // A lock never outlives the daemon that took it: if it comes back, it reports them again.
        self.replace_node_locks(&name, &[]);
        self.offer_peers(); // it may have been the one the others waited for
        self.save_machine(&name);
        // Pending requests waiting on it fail now rather than hang.
        let starts: Vec<Uuid> = self
            .pending_starts
            .iter()
            .filter(|(_, p)| p.waiting.contains(&name))
            .map(|(id, _)| *id)
            .collect();
        for id in starts {
            self.start_daemon_gone(id, &name);
        }
        self.builds_daemon_gone(&name);
        self.daemon_logs_gone(&name);
        self.taps_daemon_gone(&name);
        self.moves_daemon_gone(&name);
        let logs: Vec<u64> = self
            .pending_logs
            .iter()
            .filter(|(_, p)| p.daemon == name)
            .map(|(id, _)| *id)
            .collect();
        for id in logs {
            self.logs_answered(id, Vec::new());
        }
    }

    pub(super) fn handle_daemon_message(
        &mut self,
        conn: ConnId,
        envelope: Envelope<DaemonMessage>,
    ) {
        let Some(d) = self
            .daemons
            .iter_mut()
            .find(|d| d.conn == conn && d.tx.is_some())
        else {
            return; // a replaced connection's last words
        };
        d.last_seen = Instant::now();
        let name = d.name().to_owned();
        match envelope.body {
            DaemonMessage::Heartbeat { nodes, machine } => {
                self.node_stats.update(nodes);
                self.node_stats.update_machine(&name, machine);
                let flows = &self.flows;
                self.node_stats.retain(|id| flows.contains_key(id));
            }
            DaemonMessage::ZenohListening { locators } => self.zenoh_listening(conn, locators),
            DaemonMessage::DataLinks { links } => self.data_links_reported(conn, links),
            DaemonMessage::Register(_) => {
                tracing::warn!("daemon `{name}` registered twice on one connection; ignored")
            }
            DaemonMessage::Spawned { dataflow, result } => {
                self.recovery_spawned(dataflow, &name, &result);
                self.spawn_answered(dataflow, &name, result)
            }
            DaemonMessage::Prepared { dataflow, result } => {
                self.prepare_answered(dataflow, &name, result)
            }
            DaemonMessage::Built { build_id, result } => {
                self.build_answered(build_id, &name, result)
            }
            DaemonMessage::Finished { dataflow, nodes } => {
                self.part_finished(dataflow, &name, nodes)
            }
            DaemonMessage::Log(line) if self.pending_builds.contains_key(&line.dataflow) => {
                self.build_log(line)
            }
            DaemonMessage::Log(line) => {
                if let Some(flow) = self.flows.get_mut(&line.dataflow) {
                    flow.watchers.retain(|(tx, id)| {
                        tx.send(Outgoing::Message(Envelope::new(
                            *id,
                            ControlReply::Log(line.clone()),
                        )))
                        .is_ok()
                    });
                }
            }
            DaemonMessage::Logs { lines } => self.logs_answered(envelope.id, lines),
            DaemonMessage::ServiceLog { lines } => {
                self.service_log_lines(&name, envelope.id, lines)
            }
            DaemonMessage::ServiceLogEnd { result } => self.service_log_end(envelope.id, result),
            DaemonMessage::TakeLock { request, lock } => self.take_node_lock(&name, request, lock),
            DaemonMessage::ReleaseLocks {
                dataflow,
                node,
                locks,
            } => self.release_node_locks(&name, dataflow, &node, &locks),
            DaemonMessage::Relocated {
                dataflow,
                node,
                step,
                result,
                cut,
            } => self.relocated(&name, dataflow, node, &step, result.map(|()| cut)),
            DaemonMessage::Tapped(batch) => self.tapped(&name, envelope.id, batch),
            DaemonMessage::TapEnd { dropped } => self.tap_part_end(&name, envelope.id, dropped),
        }
    }
}
