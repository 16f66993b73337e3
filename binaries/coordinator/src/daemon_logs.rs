//! `adora logs --daemon MACHINE`: a daemon's own log, read by that daemon (journald or its log
//! file) and relayed line by line to the client.

use adora_message::{
    cli_to_coordinator::DaemonLogsRequest,
    control::{ControlError, ErrorKind},
    coordinator_to_cli::ControlReply,
    coordinator_to_daemon::DaemonCommand,
    envelope::Envelope,
};

use crate::{
    actor::{reply, ClientTx, Coordinator, Outgoing},
    requests::error,
};

/// A `DaemonLogs` request being answered by one daemon.
pub(crate) struct PendingDaemonLogs {
    /// The client.
    pub client: ClientTx,
    /// Its request id.
    pub request: u64,
    /// The daemon reading its log.
    pub daemon: String,
}

impl Coordinator {
    /// Asks the named daemon for its own log.
    pub(crate) fn daemon_logs(&mut self, request: DaemonLogsRequest, tx: ClientTx, req: u64) {
        let machine = request.machine;
        if self.daemon_tx(&machine).is_none() {
            let known: Vec<&str> = self.daemons.iter().map(|d| d.name()).collect();
            let state = if known.contains(&machine.as_str()) {
                "is not connected (see `adora cluster status`)".to_owned()
            } else {
                format!(
                    "is unknown (known daemons: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )
            };
            return error(
                &tx,
                req,
                ErrorKind::NotFound,
                format!(
                    "daemon `{machine}` {state}: its log cannot be read through the coordinator"
                ),
            );
        }
        let command = DaemonCommand::ReadServiceLog {
            tail: request.tail,
            follow: request.follow,
        };
        if let Some(id) = self.send_to_daemon(&machine, command) {
            self.pending_daemon_logs.insert(
                id,
                PendingDaemonLogs {
                    client: tx,
                    request: req,
                    daemon: machine,
                },
            );
        }
    }

    /// Lines of a daemon's own log: relayed, or the reading is stopped when nobody waits.
    pub(crate) fn service_log_lines(&mut self, daemon: &str, command: u64, lines: Vec<String>) {
        let delivered = self.pending_daemon_logs.get(&command).is_some_and(|p| {
            lines.into_iter().all(|line| {
                p.client
                    .send(Outgoing::Message(Envelope::new(
                        p.request,
                        ControlReply::DaemonLog(line),
                    )))
                    .is_ok()
            })
        });
        if !delivered {
            self.pending_daemon_logs.remove(&command);
            self.send_to_daemon(daemon, DaemonCommand::StopServiceLog { command });
        }
    }

    /// A daemon finished reading its own log.
    pub(crate) fn service_log_end(&mut self, command: u64, result: Result<(), ControlError>) {
        let Some(p) = self.pending_daemon_logs.remove(&command) else {
            return;
        };
        let body = match result {
            Ok(()) => ControlReply::LogsEnd,
            Err(e) => ControlReply::Error(ControlError::new(
                e.kind,
                format!("daemon `{}`: {}", p.daemon, e.message),
            )),
        };
        reply(&p.client, p.request, body);
    }

    /// A daemon went away: its log readings fail now rather than hang.
    pub(crate) fn daemon_logs_gone(&mut self, daemon: &str) {
        let gone: Vec<u64> = self
            .pending_daemon_logs
            .iter()
            .filter(|(_, p)| p.daemon == daemon)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            let message = format!("daemon `{daemon}` disconnected");
            self.service_log_end(id, Err(ControlError::new(ErrorKind::Daemon, message)));
        }
    }
}
