//! Taps (`adora record`, `adora topic`): the coordinator asks each daemon running a tapped node
//! for copies (`DaemonCommand::Tap`), relays their batches to the client, and passes the client's
//! acknowledgements back as credit (`TapCredit`). It keeps no message: what is in flight is
//! bounded by each daemon's credit window.
//!
//! Every daemon of a tap is asked for all of its outputs, so a tapped node that moves between
//! them (`adora node move`, a drain) stays tapped; a node moving to a daemon without a part of
//! the tap gets one there before its `Spawn` ([`Coordinator::taps_follow_move`]).

use std::collections::{BTreeMap, BTreeSet};

use adora_core::{DataId, NodeId};
use adora_message::{
    cli_to_coordinator::TapRequest,
    control::{ControlError, ErrorKind},
    coordinator_to_cli::ControlReply,
    coordinator_to_daemon::DaemonCommand,
    envelope::Envelope,
    tap::{parse_topic, TapBatch},
};
use uuid::Uuid;

use crate::{
    actor::{reply, ClientTx, Coordinator, Outgoing},
    requests::error,
};

/// A tap being answered by some daemons.
pub(crate) struct PendingTap {
    /// The client.
    client: ClientTx,
    /// Its `Tap` request id.
    request: u64,
    /// Daemon name → the id of its `Tap` command, for the parts not yet ended.
    parts: BTreeMap<String, u64>,
    /// Drops reported by the ended parts.
    dropped: BTreeMap<String, u64>,
    /// What every part taps: the dataflow and its outputs, lossy or not.
    dataflow: Uuid,
    outputs: Vec<(NodeId, DataId)>,
    lossy: bool,
}

/// A tap waiting for its dataflow to start (`TapRequest::before_start`).
struct WaitingTap {
    request: TapRequest,
    client: ClientTx,
    req: u64,
}

/// Every tap, by the id of one of its `Tap` commands (each daemon's command maps here).
#[derive(Default)]
pub(crate) struct Taps {
    taps: Vec<PendingTap>,
    /// Taps of dataflows about to start, by name.
    waiting: Vec<WaitingTap>,
}

impl Taps {
    fn by_command(&mut self, command: u64) -> Option<usize> {
        self.taps
            .iter()
            .position(|t| t.parts.values().any(|c| *c == command))
    }
}

impl Coordinator {
    /// Asks the daemons running the tapped nodes for copies (or, `before_start`, waits for the
    /// dataflow to start).
    pub(crate) fn tap(&mut self, request: TapRequest, tx: ClientTx, req: u64) {
        if request.before_start && !request.dry_run {
            return self.wait_for_start(request, tx, req);
        }
        self.tap_now(request, tx, req, false);
    }

    /// A tap of a dataflow that is not started yet: answered `TapWaiting`, started by
    /// [`Self::start_waiting_taps`] just before the dataflow's `Spawn`.
    fn wait_for_start(&mut self, request: TapRequest, tx: ClientTx, req: u64) {
        let name = &request.dataflow;
        let running = self
            .flows
            .values()
            .any(|f| &f.record.name == name && !f.record.status.is_done());
        if running {
            let message = format!("dataflow `{name}` is already running: tap it as it runs");
            return error(&tx, req, ErrorKind::InvalidRequest, message);
        }
        self.taps.waiting.retain(|w| !w.client.is_closed());
        reply(&tx, req, ControlReply::TapWaiting);
        self.taps.waiting.push(WaitingTap {
            request,
            client: tx,
            req,
        });
    }

    /// Dataflow `id` is about to be spawned: the taps waiting for its name start now, so that
    /// each daemon has its tap before the `Spawn` (commands to a daemon arrive in order).
    pub(crate) fn start_waiting_taps(&mut self, id: Uuid) {
        let Some(name) = self.flows.get(&id).map(|f| f.record.name.clone()) else {
            return;
        };
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.taps.waiting)
            .into_iter()
            .partition(|w| w.request.dataflow == name);
        self.taps.waiting = waiting;
        for mut tap in ready {
            tap.request.dataflow = id.to_string();
            self.tap_now(tap.request, tap.client, tap.req, true);
        }
    }

    /// Asks the daemons running the tapped nodes for copies now (`before_spawn`: their `Spawn`
    /// follows).
    fn tap_now(&mut self, request: TapRequest, tx: ClientTx, req: u64, before_spawn: bool) {
        let (dataflow, daemons, tapped) = match self.tap_plan(&request) {
            Ok(plan) => plan,
            Err(e) => return reply(&tx, req, ControlReply::Error(e)),
        };
        let outputs: Vec<String> = tapped.iter().map(|(n, o)| format!("{n}/{o}")).collect();
        if request.dry_run {
            reply(&tx, req, ControlReply::TapStarted { dataflow, outputs });
            let dropped = BTreeMap::new();
            return reply(&tx, req, ControlReply::TapEnd { dropped });
        }
        let mut parts: BTreeMap<String, u64> = BTreeMap::new();
        for daemon in daemons {
            let command = DaemonCommand::Tap {
                dataflow,
                outputs: tapped.clone(),
                lossy: request.lossy,
                before_spawn,
            };
            let Some(id) = self.send_to_daemon(&daemon, command) else {
                for (started, command) in parts {
                    self.send_to_daemon(&started, DaemonCommand::Untap { command });
                }
                let message =
                    format!("daemon `{daemon}` is not connected: its nodes cannot be tapped");
                return error(&tx, req, ErrorKind::Daemon, message);
            };
            parts.insert(daemon, id);
        }
        reply(&tx, req, ControlReply::TapStarted { dataflow, outputs });
        if parts.is_empty() {
            let dropped = BTreeMap::new();
            return reply(&tx, req, ControlReply::TapEnd { dropped });
        }
        self.taps.taps.push(PendingTap {
            client: tx,
            request: req,
            parts,
            dropped: BTreeMap::new(),
            dataflow,
            outputs: tapped,
            lossy: request.lossy,
        });
    }

    /// `node` of `dataflow` is about to start on daemon `to` (a move; its `Spawn` follows): each
    /// tap of its outputs without a part there gets one, so that its copies go on from there.
    /// A part that does not come to run there (the move fails) ends on that daemon.
    pub(crate) fn taps_follow_move(&mut self, dataflow: Uuid, node: &NodeId, to: &str) {
        for i in 0..self.taps.taps.len() {
            let tap = &self.taps.taps[i];
            let follows = tap.dataflow == dataflow
                && !tap.parts.contains_key(to)
                && tap.outputs.iter().any(|(n, _)| n == node);
            if !follows {
                continue;
            }
            let command = DaemonCommand::Tap {
                dataflow,
                outputs: tap.outputs.clone(),
                lossy: tap.lossy,
                before_spawn: true,
            };
            // Unreachable: the move fails on it too.
            if let Some(id) = self.send_to_daemon(to, command) {
                self.taps.taps[i].parts.insert(to.to_owned(), id);
            }
        }
    }

    /// The running dataflow, the daemons running its tapped nodes, and the tapped outputs (of
    /// placed nodes; each daemon taps all of them, see the module's documentation).
    #[allow(clippy::type_complexity)]
    fn tap_plan(
        &self,
        request: &TapRequest,
    ) -> Result<(Uuid, BTreeSet<String>, Vec<(NodeId, DataId)>), ControlError> {
        let id = self.resolve(&request.dataflow)?;
        let flow = &self.flows[&id];
        if flow.record.status.is_done() {
            let message = format!("dataflow `{}` is not running", request.dataflow);
            return Err(ControlError::new(ErrorKind::InvalidRequest, message));
        }
        let declared: BTreeSet<(NodeId, DataId)> = flow
            .record
            .descriptor
            .nodes
            .iter()
            .flat_map(|n| n.outputs.iter().map(|o| (n.id.clone(), o.clone())))
            .collect();
        let wanted = if request.outputs.is_empty() {
            declared
        } else {
            let mut wanted = BTreeSet::new();
            for topic in &request.outputs {
                let output = parse_topic(topic)
                    .map_err(|e| ControlError::new(ErrorKind::InvalidRequest, e))?;
                if !declared.contains(&output) {
                    let message = format!(
                        "dataflow `{}` has no output `{topic}` (see `adora topic list {}`)",
                        request.dataflow, request.dataflow
                    );
                    return Err(ControlError::new(ErrorKind::NotFound, message));
                }
                wanted.insert(output);
            }
            wanted
        };
        let mut daemons = BTreeSet::new();
        let mut tapped = Vec::new();
        for (node, output) in wanted {
            if let Some(daemon) = flow.record.placement.get(&node) {
                daemons.insert(daemon.clone());
                tapped.push((node, output));
            }
        }
        Ok((id, daemons, tapped))
    }

    /// A client handled a batch: the daemon may send as much again.
    pub(crate) fn tap_ack(&mut self, tap: u64, machine: &str, cost: u64, tx: &ClientTx) {
        let command = self
            .taps
            .taps
            .iter()
            .find(|t| t.request == tap && t.client.same_channel(tx))
            .and_then(|t| t.parts.get(machine).copied());
        if let Some(command) = command {
            self.send_to_daemon(machine, DaemonCommand::TapCredit { command, cost });
        }
    }

    /// A daemon's batch: relayed, or the tap is stopped when its client is gone.
    pub(crate) fn tapped(&mut self, daemon: &str, command: u64, batch: TapBatch) {
        let Some(i) = self.taps.by_command(command) else {
            self.send_to_daemon(daemon, DaemonCommand::Untap { command });
            return;
        };
        let tap = &self.taps.taps[i];
        let body = ControlReply::Tapped {
            machine: daemon.to_owned(),
            batch,
        };
        let message = Outgoing::Message(Envelope::new(tap.request, body));
        if tap.client.send(message).is_err() {
            let tap = self.taps.taps.remove(i);
            for (daemon, command) in tap.parts {
                self.send_to_daemon(&daemon, DaemonCommand::Untap { command });
            }
        }
    }

    /// A daemon's part of a tap ended; the client hears `TapEnd` when every part has.
    pub(crate) fn tap_part_end(
        &mut self,
        daemon: &str,
        command: u64,
        dropped: BTreeMap<String, u64>,
    ) {
        let Some(i) = self.taps.by_command(command) else {
            return;
        };
        let tap = &mut self.taps.taps[i];
        tap.parts.remove(daemon);
        // Summed: a node that moved was tapped (and may have dropped) on two daemons.
        for (output, count) in dropped {
            *tap.dropped.entry(output).or_default() += count;
        }
        if tap.parts.is_empty() {
            let tap = self.taps.taps.remove(i);
            let body = ControlReply::TapEnd {
                dropped: tap.dropped,
            };
            reply(&tap.client, tap.request, body);
        }
    }

    /// A daemon went away: the taps of its nodes fail now rather than hang.
    pub(crate) fn taps_daemon_gone(&mut self, daemon: &str) {
        let (gone, kept) = std::mem::take(&mut self.taps.taps)
            .into_iter()
            .partition(|t| t.parts.contains_key(daemon));
        self.taps.taps = kept;
        for tap in gone {
            for (other, command) in &tap.parts {
                if other != daemon {
                    self.send_to_daemon(other, DaemonCommand::Untap { command: *command });
                }
            }
            let message = format!("daemon `{daemon}` disconnected: the tap of its nodes ended");
            error(&tap.client, tap.request, ErrorKind::Daemon, message);
        }
    }
}

#[cfg(test)]
mod tests;
