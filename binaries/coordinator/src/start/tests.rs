use std::sync::Arc;

use adora_core::Descriptor;
use adora_message::{
    cli_to_coordinator::{ControlRequest, StartDataflow},
    control::DataflowStatus,
    coordinator_to_cli::ControlReply,
    coordinator_to_daemon::DaemonCommand,
    daemon_to_coordinator::DaemonMessage,
};
use adora_store::MemoryStore;

use crate::testkit::*;

/// Node `a` (a plain binary) on machine `a`, node `b` (`distribute: http`) on machine `b`.
fn http_start() -> StartDataflow {
    let yaml = "nodes:\n  - id: a\n    path: ./a\n    outputs: [x]\n    _unstable_deploy: { machine: a }\n  - id: b\n    path: ./b\n    inputs:\n      x: a/x\n    _unstable_deploy: { machine: b, distribute: http }\n";
    let mut start = two_machine_start();
    start.descriptor = Descriptor::parse(yaml, "d.yml".as_ref()).unwrap();
    start.artifacts = [(
        "b".into(),
        adora_message::distribute::NodeArtifact::Uploaded {
            build_id: uuid::Uuid::new_v4(),
            sha256: "0f".repeat(32),
        },
    )]
    .into();
    start
}

fn prepares(commands: &[DaemonCommand]) -> usize {
    commands
        .iter()
        .filter(|c| matches!(c, DaemonCommand::Prepare(_)))
        .count()
}

#[tokio::test]
async fn a_failed_preparation_spawns_nothing_anywhere() {
    let mut h = Harness::new(Arc::new(MemoryStore::new())).await;
    let (_a, mut a_rx) = h.register("a", vec![]);
    let (b, mut b_rx) = h.register("b", vec![]);
    let mut client = h.request(ControlRequest::Start(http_start()));

    // Only b has work to do; nobody spawns while it prepares.
    let (got_a, got_b) = (commands(&mut a_rx), commands(&mut b_rx));
    assert_eq!((spawns(&got_a), prepares(&got_a)), (0, 0), "{got_a:?}");
    assert_eq!((spawns(&got_b), prepares(&got_b)), (0, 1), "{got_b:?}");
    let id = *h.c.flows.keys().next().unwrap();
    assert_eq!(h.c.flows[&id].record.status, DataflowStatus::Preparing);

    let problem = "node `b` on machine `b` (distribute: http): checksum mismatch";
    h.daemon_says(
        b,
        DaemonMessage::Prepared {
            dataflow: id,
            result: Err(adora_message::control::ControlError::daemon(problem)),
        },
    );
    let (got_a, got_b) = (commands(&mut a_rx), commands(&mut b_rx));
    assert_eq!(spawns(&got_a) + spawns(&got_b), 0, "{got_a:?} {got_b:?}");
    assert!(
        got_b.contains(&DaemonCommand::Discard { dataflow: id }),
        "{got_b:?}"
    );
    let [ControlReply::Error(e)] = &replies(&mut client)[..] else {
        panic!("no error reply");
    };
    assert!(e.message.contains("nothing was started"), "{e:?}");
    assert!(e.message.contains(problem), "{e:?}");
    assert_eq!(h.c.flows[&id].record.status, DataflowStatus::Failed);
}

#[tokio::test]
async fn every_daemon_spawns_once_all_are_prepared() {
    let mut h = Harness::new(Arc::new(MemoryStore::new())).await;
    let (a, mut a_rx) = h.register("a", vec![]);
    let (b, mut b_rx) = h.register("b", vec![]);
    let mut client = h.request(ControlRequest::Start(http_start()));
    let id = *h.c.flows.keys().next().unwrap();
    assert_eq!(prepares(&commands(&mut b_rx)), 1);
    assert_eq!(spawns(&commands(&mut a_rx)), 0);

    let ok = |dataflow| DaemonMessage::Prepared {
        dataflow,
        result: Ok(()),
    };
    h.daemon_says(b, ok(id));
    // A repeated answer changes nothing.
    h.daemon_says(b, ok(id));
    assert_eq!(spawns(&commands(&mut a_rx)), 1);
    assert_eq!(spawns(&commands(&mut b_rx)), 1);
    assert_eq!(h.c.flows[&id].record.status, DataflowStatus::Running);
    assert!(replies(&mut client).is_empty());
    for d in [a, b] {
        h.daemon_says(d, spawned(id));
    }
    assert!(matches!(
        replies(&mut client)[..],
        [ControlReply::Started { .. }]
    ));
}

#[tokio::test]
async fn a_dataflow_without_preparation_is_spawned_right_away() {
    let mut h = Harness::new(Arc::new(MemoryStore::new())).await;
    let (_a, mut a_rx) = h.register("a", vec![]);
    let (_b, mut b_rx) = h.register("b", vec![]);
    let _client = h.request(ControlRequest::Start(two_machine_start()));
    let (got_a, got_b) = (commands(&mut a_rx), commands(&mut b_rx));
    assert_eq!((spawns(&got_a), prepares(&got_a)), (1, 0), "{got_a:?}");
    assert_eq!((spawns(&got_b), prepares(&got_b)), (1, 0), "{got_b:?}");
}

#[tokio::test]
async fn stopping_a_dataflow_being_prepared_spawns_nothing() {
    let mut h = Harness::new(Arc::new(MemoryStore::new())).await;
    let (_a, mut a_rx) = h.register("a", vec![]);
    let (_b, mut b_rx) = h.register("b", vec![]);
    let mut start = h.request(ControlRequest::Start(http_start()));
    let id = *h.c.flows.keys().next().unwrap();
    let mut stop = h.request(ControlRequest::Stop {
        dataflow: id.to_string(),
        grace: None,
    });
    assert!(matches!(replies(&mut start)[..], [ControlReply::Error(_)]));
    assert!(matches!(
        replies(&mut stop)[..],
        [ControlReply::Stopped { .. }]
    ));
    let (got_a, got_b) = (commands(&mut a_rx), commands(&mut b_rx));
    assert_eq!(spawns(&got_a) + spawns(&got_b), 0, "{got_a:?} {got_b:?}");
    assert!(got_b.contains(&DaemonCommand::Discard { dataflow: id }));
}

#[tokio::test]
async fn a_start_being_prepared_is_failed_by_a_coordinator_restart() {
    let store = Arc::new(MemoryStore::new());
    let id = {
        let mut h = Harness::new(store.clone()).await;
        let _a = h.register("a", vec![]);
        let _b = h.register("b", vec![]);
        let _client = h.request(ControlRequest::Start(http_start()));
        let id = *h.c.flows.keys().next().unwrap();
        assert_eq!(h.c.flows[&id].record.status, DataflowStatus::Preparing);
        id
    };
    let mut h = Harness::new(store).await;
    assert_eq!(h.c.flows[&id].record.status, DataflowStatus::Failed);
    // Daemon b comes back: it is told to throw its preparation away, and spawns nothing.
    let (_b, mut b_rx) = h.register("b", vec![]);
    let got = commands(&mut b_rx);
    assert_eq!(got, vec![DaemonCommand::Discard { dataflow: id }]);
}
