use std::sync::Arc;

use adora_message::{
    cli_to_coordinator::ControlRequest, coordinator_to_cli::ControlReply,
    daemon_to_coordinator::DaemonMessage,
};
use adora_store::MemoryStore;
use uuid::Uuid;

use crate::testkit::*;

fn idempotent(request_id: Uuid, request: ControlRequest) -> ControlRequest {
    ControlRequest::Idempotent {
        request_id,
        request: Box::new(request),
    }
}

#[tokio::test]
async fn a_retried_start_is_answered_not_started_twice_even_across_a_restart() {
    let store = Arc::new(MemoryStore::new());
    let mut h = Harness::new(store.clone()).await;
    let (a, mut a_rx) = h.register("a", vec![]);
    let (b, mut b_rx) = h.register("b", vec![]);
    let rid = Uuid::new_v4();
    let start = || idempotent(rid, ControlRequest::Start(two_machine_start()));

    let mut first = h.request(start());
    // Retried while the first is in progress (its connection dropped): waits for the answer.
    let mut retry = h.request(start());
    let id = *h.c.flows.keys().next().unwrap();
    h.daemon_says(a, spawned(id));
    h.daemon_says(b, spawned(id));
    let answer = stored_replies(&mut first).await;
    assert!(
        matches!(&answer[..], [ControlReply::Started { id: got, .. }] if *got == id),
        "{answer:?}"
    );
    assert_eq!(replies(&mut retry), answer);

    // Retried after it was answered.
    let mut late = h.request(start());
    assert_eq!(replies(&mut late), answer);
    assert_eq!(spawns(&commands(&mut a_rx)), 1);
    assert_eq!(spawns(&commands(&mut b_rx)), 1);
    assert_eq!(h.c.flows.len(), 1);

    // Retried after a coordinator restart: answered from the store.
    drop(h);
    let mut h = Harness::new(store).await;
    let (_a, mut a_rx) = h.register("a", vec![running(id, "a")]);
    let mut after = h.request(start());
    assert_eq!(replies(&mut after), answer);
    assert_eq!(spawns(&commands(&mut a_rx)), 0);
    assert_eq!(h.c.flows.len(), 1);

    // A different request id is a different request.
    let mut other = h.request(idempotent(
        Uuid::new_v4(),
        ControlRequest::Start(two_machine_start()),
    ));
    let got = stored_replies(&mut other).await;
    assert!(
        matches!(&got[..], [ControlReply::Error(_)]),
        "duplicate name: {got:?}"
    );
}

#[tokio::test]
async fn a_retried_attached_start_streams_the_logs_on_the_new_connection() {
    let mut h = Harness::new(Arc::new(MemoryStore::new())).await;
    let (a, mut a_rx) = h.register("a", vec![]);
    let (b, _b_rx) = h.register("b", vec![]);
    let rid = Uuid::new_v4();
    let mut start = two_machine_start();
    start.attach = true;
    let request = || idempotent(rid, ControlRequest::Start(start.clone()));
    let _first = h.request(request());
    let id = *h.c.flows.keys().next().unwrap();
    h.daemon_says(a, spawned(id));
    h.daemon_says(b, spawned(id));
    commands(&mut a_rx);

    let mut retry = h.request(request());
    assert!(matches!(
        &replies(&mut retry)[..],
        [ControlReply::Started { .. }]
    ));
    let line = adora_message::control::NodeLogLine {
        dataflow: id,
        node: "a".into(),
        stream: adora_message::control::LogStream::Stdout,
        line: "hello".into(),
    };
    h.daemon_says(a, DaemonMessage::Log(line));
    assert!(matches!(&replies(&mut retry)[..], [ControlReply::Log(l)] if l.line == "hello"));
    let watch = commands(&mut a_rx);
    assert!(
        watch.iter().any(|c| matches!(
            c,
            adora_message::coordinator_to_daemon::DaemonCommand::WatchLogs { watch: true, .. }
        )),
        "{watch:?}"
    );
}
