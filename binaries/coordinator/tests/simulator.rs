//! The simulated daemons of `adora-test-support` against an in-process coordinator: they
//! register, heartbeat, spawn and stop like real daemons. Lives here, not in the test-support
//! crate, because that crate must not depend on a binary crate.

use std::{future::Future, sync::Arc, time::Duration};

use adora_client::{Connection, CONTROL_PATH};
use adora_coordinator::{CoordinatorConfig, Token};
use adora_message::{
    cli_to_coordinator::{ControlRequest, StartDataflow},
    control::DataflowStatus,
    coordinator_to_cli::ControlReply,
    envelope::{Envelope, Hello},
    stats::NodeStatus,
};
use adora_store::MemoryStore;
use adora_test_support::simulator::{machine_ids, SimulatedFleet, SIMULATED_NODE_RSS};
use tokio_util::sync::CancellationToken;

/// Upper bound for every await in these tests.
const T: Duration = Duration::from_secs(20);

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(T, f).await.expect("timed out")
}

async fn call(client: &mut Connection, id: u64, request: ControlRequest) -> ControlReply {
    within(client.send(&Envelope::new(id, request)))
        .await
        .expect("send");
    loop {
        let reply: Envelope<ControlReply> = within(client.recv()).await.expect("reply");
        if reply.id == id {
            return reply.body;
        }
    }
}

#[tokio::test]
async fn simulated_daemons_register_heartbeat_spawn_and_stop() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let shutdown = CancellationToken::new();
    let config = CoordinatorConfig::new(Token::new("sim-token").unwrap());
    let server = tokio::spawn(adora_coordinator::run(
        listener,
        Arc::new(MemoryStore::new()),
        config,
        shutdown.clone(),
    ));

    let fleet = within(SimulatedFleet::start(
        &addr,
        &plain(),
        machine_ids("sim", 3),
    ))
    .await
    .expect("the fleet connects");
    assert_eq!(fleet.connected(), 3);
    let mut client = within(Connection::connect(
        &addr,
        CONTROL_PATH,
        &plain(),
        Hello::current(),
    ))
    .await
    .expect("the control client connects");
    let ControlReply::Status(status) = call(&mut client, 1, ControlRequest::Status).await else {
        panic!("not a status");
    };
    let ids: Vec<_> = status
        .daemons
        .iter()
        .filter(|d| d.connected)
        .filter_map(|d| d.machine_id.clone())
        .collect();
    assert_eq!(ids, ["sim-000", "sim-001", "sim-002"]);

    let yaml = "nodes:\n  - id: a\n    path: /bin/true\n    _unstable_deploy: { machine: sim-001 }\n  - id: b\n    path: /bin/true\n    _unstable_deploy: { machine: sim-002 }\n";
    let descriptor = adora_core::Descriptor::parse(yaml, std::path::Path::new("sim.yml")).unwrap();
    let start = StartDataflow {
        descriptor,
        name: Some("sim".into()),
        working_dir: "/".into(),
        attach: false,
        artifacts: Default::default(),
        build: false,
        build_id: None,
    };
    let reply = call(&mut client, 2, ControlRequest::Start(start)).await;
    assert!(matches!(reply, ControlReply::Started { .. }), "{reply:?}");
    assert_eq!(fleet.activity().spawns, 2);

    // The heartbeats after the spawn carry the simulated nodes' figures.
    let running = within(async {
        loop {
            let nodes = ControlRequest::Nodes {
                dataflow: Some("sim".into()),
            };
            if let ControlReply::Nodes(nodes) = call(&mut client, 3, nodes).await {
                if nodes.len() == 2 && nodes.iter().all(|n| n.status == NodeStatus::Running) {
                    return nodes;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(running[0].machine, "sim-001");
    assert!(running.iter().all(|n| n.rss_bytes == SIMULATED_NODE_RSS));

    let stop = ControlRequest::Stop {
        dataflow: "sim".into(),
        grace: None,
    };
    let ControlReply::Stopped { outcome, .. } = call(&mut client, 4, stop).await else {
        panic!("not stopped");
    };
    assert_eq!(outcome.nodes.len(), 2);
    assert!(outcome.is_success());
    let ControlReply::List(list) = call(&mut client, 5, ControlRequest::List).await else {
        panic!("not a list");
    };
    assert_eq!(list[0].status, DataflowStatus::Finished);
    let activity = fleet.activity();
    assert_eq!(activity.stops, 2);
    assert!(activity.heartbeats >= 3, "{activity:?}");

    within(fleet.shutdown())
        .await
        .expect("no simulated daemon failed");
    shutdown.cancel();
    within(server).await.unwrap().unwrap();
}

/// Plain-HTTP settings with the test's token (the coordinator runs in-process without TLS).
fn plain() -> adora_client::Auth {
    adora_client::Auth::plaintext(Some(
        adora_client::Token::new("sim-token").expect("non-empty"),
    ))
}
