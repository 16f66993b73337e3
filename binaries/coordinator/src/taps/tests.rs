use std::sync::Arc;

use adora_message::{
    cli_to_coordinator::{ControlRequest, TapRequest},
    coordinator_to_cli::ControlReply,
    coordinator_to_daemon::DaemonCommand,
    daemon_to_coordinator::DaemonMessage,
    envelope::Envelope,
    tap::TapBatch,
};
use adora_store::MemoryStore;

use crate::{
    actor::{ConnId, Event, Outgoing},
    testkit::*,
};

fn tap_request(outputs: &[&str]) -> ControlRequest {
    ControlRequest::Tap(TapRequest {
        dataflow: "demo".into(),
        outputs: outputs.iter().map(|o| (*o).to_owned()).collect(),
        lossy: false,
        dry_run: false,
        before_start: false,
    })
}

/// The id of the `Tap` command a daemon got, with its outputs.
fn tap_command(rx: &mut DaemonRx) -> (u64, Vec<String>) {
    while let Ok(Outgoing::Message(e)) = rx.try_recv() {
        if let DaemonCommand::Tap { outputs, .. } = e.body {
            let outputs = outputs.iter().map(|(n, o)| format!("{n}/{o}")).collect();
            return (e.id, outputs);
        }
    }
    panic!("no Tap sent");
}

fn says(h: &mut Harness, conn: ConnId, id: u64, body: DaemonMessage) {
    h.c.dispatch(Event::FromDaemon {
        conn,
        envelope: Envelope::new(id, body),
    });
}

#[tokio::test]
async fn a_tap_goes_to_the_senders_daemon_is_relayed_credited_and_ends() {
    let mut h = Harness::new(Arc::new(MemoryStore::new())).await;
    let (a, mut a_rx) = h.register("a", vec![]);
    let (b, _b_rx) = h.register("b", vec![]);
    let mut start = h.request(ControlRequest::Start(two_machine_start()));
    let id = *h.c.flows.keys().next().expect("started");
    h.daemon_says(a, spawned(id));
    h.daemon_says(b, spawned(id));
    replies(&mut start);

    let mut bad = h.request(tap_request(&["a/nope"]));
    let got = replies(&mut bad);
    let [ControlReply::Error(e)] = got.as_slice() else {
        panic!("{got:?}");
    };
    assert!(e.message.contains("no output `a/nope`"), "{e}");

    let (tx, mut client) = tokio::sync::mpsc::unbounded_channel();
    h.c.dispatch(Event::Control {
        envelope: Envelope::new(5, tap_request(&[])),
        tx: tx.clone(),
    });
    let (command, outputs) = tap_command(&mut a_rx);
    assert_eq!(outputs, ["a/x"]);
    let batch = TapBatch::default();
    says(&mut h, a, command, DaemonMessage::Tapped(batch.clone()));
    h.c.dispatch(Event::Control {
        envelope: Envelope::new(
            6,
            ControlRequest::TapAck {
                tap: 5,
                machine: "a".into(),
                cost: 300,
            },
        ),
        tx,
    });
    assert_eq!(
        commands(&mut a_rx),
        [DaemonCommand::TapCredit { command, cost: 300 }]
    );
    let dropped = [("a/x".to_owned(), 2)].into();
    says(&mut h, a, command, DaemonMessage::TapEnd { dropped });
    assert_eq!(
        replies(&mut client),
        [
            ControlReply::TapStarted {
                dataflow: id,
                outputs: vec!["a/x".into()]
            },
            ControlReply::Tapped {
                machine: "a".into(),
                batch
            },
            ControlReply::TapEnd {
                dropped: [("a/x".to_owned(), 2)].into()
            }
        ]
    );
}

#[tokio::test]
async fn a_gone_client_untaps_and_a_gone_daemon_ends_the_tap_with_an_error() {
    let mut h = Harness::new(Arc::new(MemoryStore::new())).await;
    let (a, mut a_rx) = h.register("a", vec![]);
    let (b, _b_rx) = h.register("b", vec![]);
    let mut start = h.request(ControlRequest::Start(two_machine_start()));
    let id = *h.c.flows.keys().next().expect("started");
    h.daemon_says(a, spawned(id));
    h.daemon_says(b, spawned(id));
    replies(&mut start);

    let client = h.request(tap_request(&["a/x"]));
    let (command, _) = tap_command(&mut a_rx);
    drop(client);
    says(
        &mut h,
        a,
        command,
        DaemonMessage::Tapped(TapBatch::default()),
    );
    assert_eq!(commands(&mut a_rx), [DaemonCommand::Untap { command }]);

    let mut client = h.request(tap_request(&["a/x"]));
    tap_command(&mut a_rx);
    h.gone(a);
    let got = replies(&mut client);
    let [.., ControlReply::Error(e)] = got.as_slice() else {
        panic!("{got:?}");
    };
    assert!(e.message.contains("daemon `a` disconnected"), "{e}");
}

#[tokio::test]
async fn a_tap_asked_before_the_start_reaches_each_daemon_before_its_spawn() {
    let mut h = Harness::new(Arc::new(MemoryStore::new())).await;
    let (_a, mut a_rx) = h.register("a", vec![]);
    let (_b, mut b_rx) = h.register("b", vec![]);
    let ControlRequest::Tap(mut early) = tap_request(&[]) else {
        unreachable!("tap_request makes a Tap");
    };
    early.before_start = true;
    let mut tap = h.request(ControlRequest::Tap(early));
    assert!(matches!(
        replies(&mut tap).as_slice(),
        [ControlReply::TapWaiting]
    ));

    let _start = h.request(ControlRequest::Start(two_machine_start()));
    let order = |rx: &mut DaemonRx| {
        let mut order = Vec::new();
        while let Ok(Outgoing::Message(e)) = rx.try_recv() {
            match e.body {
                DaemonCommand::Tap { before_spawn, .. } => {
                    order.push(format!("tap {before_spawn}"))
                }
                DaemonCommand::Spawn(_) => order.push("spawn".to_owned()),
                _ => {}
            }
        }
        order
    };
    assert_eq!(order(&mut a_rx), ["tap true", "spawn"]);
    assert_eq!(
        order(&mut b_rx),
        ["spawn"],
        "b runs no sender: nothing to tap there"
    );
    let got = replies(&mut tap);
    assert!(
        matches!(got.as_slice(), [ControlReply::TapStarted { outputs, .. }] if outputs == &["a/x"]),
        "{got:?}"
    );

    let ControlRequest::Tap(mut late) = tap_request(&[]) else {
        unreachable!("tap_request makes a Tap");
    };
    late.before_start = true;
    let mut late = h.request(ControlRequest::Tap(late));
    let got = replies(&mut late);
    assert!(
        matches!(got.as_slice(), [ControlReply::Error(e)] if e.message.contains("already running")),
        "{got:?}"
    );
}

#[tokio::test]
async fn a_tapped_node_moving_to_another_daemon_is_tapped_there_until_both_parts_end() {
    let mut h = Harness::new(Arc::new(MemoryStore::new())).await;
    let (a, mut a_rx) = h.register("a", vec![]);
    let (b, mut b_rx) = h.register("b", vec![]);
    let mut start = h.request(ControlRequest::Start(two_machine_start()));
    let id = *h.c.flows.keys().next().expect("started");
    h.daemon_says(a, spawned(id));
    h.daemon_says(b, spawned(id));
    replies(&mut start);
    commands(&mut b_rx);

    let (tx, mut client) = tokio::sync::mpsc::unbounded_channel();
    h.c.dispatch(Event::Control {
        envelope: Envelope::new(5, tap_request(&[])),
        tx,
    });
    let (on_a, _) = tap_command(&mut a_rx);
    assert_eq!(commands(&mut b_rx), [], "b runs no tapped node yet");

    // `a` is about to start on b: b taps it from its first message.
    h.c.taps_follow_move(id, &"a".into(), "b");
    let got = commands(&mut b_rx);
    let [DaemonCommand::Tap {
        dataflow,
        outputs,
        before_spawn: true,
        ..
    }] = got.as_slice()
    else {
        panic!("{got:?}");
    };
    assert_eq!((*dataflow, outputs.len()), (id, 1));
    h.c.taps_follow_move(id, &"a".into(), "b");
    assert_eq!(commands(&mut b_rx), [], "one part per daemon");

    // The old part ends (the node left a); the tap goes on with b's part, and the drops of
    // both parts add up.
    let dropped = [("a/x".to_owned(), 2)].into();
    says(&mut h, a, on_a, DaemonMessage::TapEnd { dropped });
    let got = replies(&mut client);
    assert!(
        matches!(got.as_slice(), [ControlReply::TapStarted { .. }]),
        "{got:?}"
    );
    let on_b = h.c.taps.taps[0].parts["b"];
    let batch = TapBatch::default();
    says(&mut h, b, on_b, DaemonMessage::Tapped(batch.clone()));
    let dropped = [("a/x".to_owned(), 3)].into();
    says(&mut h, b, on_b, DaemonMessage::TapEnd { dropped });
    assert_eq!(
        replies(&mut client),
        [
            ControlReply::Tapped {
                machine: "b".into(),
                batch
            },
            ControlReply::TapEnd {
                dropped: [("a/x".to_owned(), 5)].into()
            }
        ]
    );
}
