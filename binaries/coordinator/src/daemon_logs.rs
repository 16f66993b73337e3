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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use adora_message::daemon_to_coordinator::DaemonMessage;
    use adora_store::MemoryStore;

    use super::*;
    use crate::{
        actor::Event,
        testkit::{replies, DaemonRx, Harness},
    };

    fn request(machine: &str, follow: bool) -> adora_message::cli_to_coordinator::ControlRequest {
        adora_message::cli_to_coordinator::ControlRequest::DaemonLogs(DaemonLogsRequest {
            machine: machine.into(),
            tail: Some(20),
            follow,
        })
    }

    /// The id of the `ReadServiceLog` the daemon got.
    fn read_command(rx: &mut DaemonRx) -> u64 {
        while let Ok(Outgoing::Message(e)) = rx.try_recv() {
            if matches!(e.body, DaemonCommand::ReadServiceLog { tail: Some(20), .. }) {
                return e.id;
            }
        }
        panic!("no ReadServiceLog sent");
    }

    fn says(h: &mut Harness, conn: crate::actor::ConnId, id: u64, body: DaemonMessage) {
        h.c.dispatch(Event::FromDaemon {
            conn,
            envelope: Envelope::new(id, body),
        });
    }

    #[tokio::test]
    async fn an_unknown_machine_is_an_error_naming_the_known_ones() {
        let mut h = Harness::new(Arc::new(MemoryStore::new())).await;
        let (_conn, _rx) = h.register("h0", Vec::new());
        let mut client = h.request(request("nope", false));
        let got = replies(&mut client);
        let [ControlReply::Error(e)] = got.as_slice() else {
            panic!("{got:?}");
        };
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(
            e.message.contains("`nope` is unknown (known daemons: h0)"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn lines_are_relayed_then_the_end() {
        let mut h = Harness::new(Arc::new(MemoryStore::new())).await;
        let (conn, mut rx) = h.register("h0", Vec::new());
        let mut client = h.request(request("h0", false));
        let id = read_command(&mut rx);
        let lines = vec!["one".to_owned(), "two".to_owned()];
        says(&mut h, conn, id, DaemonMessage::ServiceLog { lines });
        says(
            &mut h,
            conn,
            id,
            DaemonMessage::ServiceLogEnd { result: Ok(()) },
        );
        assert_eq!(
            replies(&mut client),
            [
                ControlReply::DaemonLog("one".into()),
                ControlReply::DaemonLog("two".into()),
                ControlReply::LogsEnd
            ]
        );
    }

    #[tokio::test]
    async fn a_gone_client_stops_the_follow_and_a_gone_daemon_ends_it() {
        let mut h = Harness::new(Arc::new(MemoryStore::new())).await;
        let (conn, mut rx) = h.register("h0", Vec::new());
        let client = h.request(request("h0", true));
        let id = read_command(&mut rx);
        drop(client);
        let lines = vec!["late".to_owned()];
        says(&mut h, conn, id, DaemonMessage::ServiceLog { lines });
        let stop = crate::testkit::commands(&mut rx);
        assert_eq!(stop, [DaemonCommand::StopServiceLog { command: id }]);

        let mut client = h.request(request("h0", true));
        read_command(&mut rx);
        h.gone(conn);
        let got = replies(&mut client);
        let [ControlReply::Error(e)] = got.as_slice() else {
            panic!("{got:?}");
        };
        assert!(e.message.contains("daemon `h0` disconnected"), "{e}");
    }
}
