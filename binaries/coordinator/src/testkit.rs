//! Helpers for actor-level unit tests: a [`Coordinator`] driven by hand, with fake daemon and
//! client channels (no sockets), so time-based logic runs under `tokio::time::pause()`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use adora_core::Descriptor;
use adora_message::{
    cli_to_coordinator::{ControlRequest, StartDataflow},
    control::RunningDataflow,
    coordinator_to_cli::ControlReply,
    coordinator_to_daemon::DaemonCommand,
    daemon_to_coordinator::{DaemonMessage, DaemonRegistration},
    envelope::Envelope,
};
use adora_store::Store;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{
    actor::{ConnId, Coordinator, Event, Outgoing},
    CoordinatorConfig, Token,
};

/// A coordinator under test.
pub(crate) struct Harness {
    pub c: Coordinator,
    next_conn: ConnId,
}

/// What a fake daemon received.
pub(crate) type DaemonRx = mpsc::UnboundedReceiver<Outgoing<DaemonCommand>>;
/// What a fake client received.
pub(crate) type ClientRx = mpsc::UnboundedReceiver<Outgoing<ControlReply>>;

impl Harness {
    /// A coordinator on `store` with short timeouts, its state loaded.
    pub async fn new(store: Arc<dyn Store>) -> Harness {
        let mut config = CoordinatorConfig::new(Token::new("test-token").unwrap());
        config.recovery_backoff = Duration::from_secs(30);
        config.reclaim_timeout = Duration::from_secs(60);
        Self::with_config(config, store).await
    }

    /// A coordinator with `config` on `store`, its state loaded.
    pub async fn with_config(config: CoordinatorConfig, store: Arc<dyn Store>) -> Harness {
        let mut c = Coordinator::new(config, store);
        c.load().await;
        Harness { c, next_conn: 1000 }
    }

    /// Registers daemon `machine` reporting `running`; returns its connection and command stream.
    pub fn register(&mut self, machine: &str, running: Vec<RunningDataflow>) -> (ConnId, DaemonRx) {
        self.register_labelled(machine, Default::default(), running)
    }

    /// Like [`Harness::register`], with labels.
    pub fn register_labelled(
        &mut self,
        machine: &str,
        labels: adora_message::control::Labels,
        running: Vec<RunningDataflow>,
    ) -> (ConnId, DaemonRx) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.next_conn += 1;
        let conn = self.next_conn;
        let registration = DaemonRegistration {
            machine_id: Some(machine.into()),
            labels,
            hostname: "host".into(),
            zenoh_locators: Vec::new(),
            running,
            adora_version: "test".into(),
            instance: None,
            systemd_unit: None,
            locks: Vec::new(),
            limits: Default::default(),
            site: None,
        };
        self.c.dispatch(Event::DaemonRegistered {
            conn,
            registration,
            tx,
        });
        (conn, rx)
    }

    /// The daemon's connection dropped.
    pub fn gone(&mut self, conn: ConnId) {
        self.c.dispatch(Event::DaemonGone {
            conn,
            reason: "test".into(),
        });
    }

    /// A message from a daemon.
    pub fn daemon_says(&mut self, conn: ConnId, body: DaemonMessage) {
        self.c.dispatch(Event::FromDaemon {
            conn,
            envelope: Envelope::new(0, body),
        });
    }

    /// A client request; returns the client's reply stream.
    pub fn request(&mut self, body: ControlRequest) -> ClientRx {
        let (tx, rx) = mpsc::unbounded_channel();
        self.c.dispatch(Event::Control {
            envelope: Envelope::new(7, body),
            tx,
        });
        rx
    }
}

/// A dataflow with node `a` on machine `a` and node `b` on machine `b`.
pub(crate) fn two_machine_start() -> StartDataflow {
    let yaml = "nodes:\n  - id: a\n    path: ./a\n    outputs: [x]\n    _unstable_deploy: { machine: a }\n  - id: b\n    path: ./b\n    inputs:\n      x: a/x\n    _unstable_deploy: { machine: b }\n";
    StartDataflow {
        descriptor: Descriptor::parse(yaml, "d.yml".as_ref()).unwrap(),
        name: Some("demo".into()),
        working_dir: "/w".into(),
        attach: false,
        artifacts: Default::default(),
        build: false,
        build_id: None,
    }
}

/// The report of a daemon running node `node` of dataflow `id`.
/// A daemon's successful `Spawned` answer for dataflow `id`.
pub(crate) fn spawned(id: Uuid) -> DaemonMessage {
    DaemonMessage::Spawned {
        dataflow: id,
        result: Ok(()),
    }
}

pub(crate) fn running(id: Uuid, node: &str) -> RunningDataflow {
    let start = two_machine_start();
    RunningDataflow {
        id,
        name: "demo".into(),
        descriptor: start.descriptor,
        working_dir: start.working_dir,
        nodes: BTreeMap::from([(node.into(), true)]),
    }
}

/// The commands a fake daemon received so far.
pub(crate) fn commands(rx: &mut DaemonRx) -> Vec<DaemonCommand> {
    let mut out = Vec::new();
    while let Ok(o) = rx.try_recv() {
        if let Outgoing::Message(e) = o {
            if !matches!(
                e.body,
                DaemonCommand::Heartbeat | DaemonCommand::Peers { .. }
            ) {
                out.push(e.body);
            }
        }
    }
    out
}

/// The replies a fake client received so far.
pub(crate) fn replies(rx: &mut ClientRx) -> Vec<ControlReply> {
    let mut out = Vec::new();
    while let Ok(o) = rx.try_recv() {
        if let Outgoing::Message(e) = o {
            out.push(e.body);
        }
    }
    out
}

/// The replies of an idempotent request so far: its answer is sent by a task once the store
/// has the change, so this waits (up to 5 s) for the first reply, then takes what else came.
pub(crate) async fn stored_replies(rx: &mut ClientRx) -> Vec<ControlReply> {
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
        .await
        .expect("an answer within 5 s")
        .expect("the connection stays open");
    let mut out = Vec::new();
    if let Outgoing::Message(e) = first {
        out.push(e.body);
    }
    out.extend(replies(rx));
    out
}

/// Counts `Spawn` commands.
pub(crate) fn spawns(commands: &[DaemonCommand]) -> usize {
    commands
        .iter()
        .filter(|c| matches!(c, DaemonCommand::Spawn(_)))
        .count()
}
