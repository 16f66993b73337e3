use std::{sync::Arc, time::Duration};

use adora_message::{
    cli_to_coordinator::ControlRequest, control::DataflowStatus, coordinator_to_cli::ControlReply,
    coordinator_to_daemon::DaemonCommand, daemon_to_coordinator::DaemonMessage,
};
use adora_store::MemoryStore;
use uuid::Uuid;

use crate::testkit::*;

/// Starts `demo` on daemons a and b; returns the harness, the dataflow id and b's connection.
async fn started(store: Arc<MemoryStore>) -> (Harness, Uuid, u64, DaemonRx) {
    let mut h = Harness::new(store).await;
    let (a, _a_rx) = h.register("a", vec![]);
    let (b, mut b_rx) = h.register("b", vec![]);
    let mut client = h.request(ControlRequest::Start(two_machine_start()));
    assert_eq!(spawns(&commands(&mut b_rx)), 1);
    let id = *h.c.flows.keys().next().unwrap();
    h.daemon_says(a, spawned(id));
    h.daemon_says(b, spawned(id));
    assert!(matches!(
        replies(&mut client)[..],
        [ControlReply::Started { .. }]
    ));
    (h, id, b, b_rx)
}

#[tokio::test(start_paused = true)]
async fn a_restarted_daemon_gets_its_nodes_back_at_most_once_per_backoff() {
    let (mut h, id, b, _) = started(Arc::new(MemoryStore::new())).await;

    // Daemon b restarts: it registers without the dataflow and gets its node re-spawned.
    h.gone(b);
    let (b, mut b_rx) = h.register("b", vec![]);
    let got = commands(&mut b_rx);
    assert_eq!(spawns(&got), 1, "{got:?}");
    let DaemonCommand::Spawn(spawn) = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(spawn.id, id);
    assert_eq!(spawn.nodes, ["b".into()].into());
    assert_eq!(h.c.flows[&id].record.generation, 2);

    // It crashes again right away: no second re-spawn inside the window.
    h.gone(b);
    let (_b, mut b_rx) = h.register("b", vec![]);
    assert_eq!(spawns(&commands(&mut b_rx)), 0);
    tokio::time::advance(Duration::from_secs(29)).await;
    h.c.recovery_tick();
    assert_eq!(spawns(&commands(&mut b_rx)), 0);
    // Once the window has passed, the tick retries.
    tokio::time::advance(Duration::from_secs(2)).await;
    h.c.recovery_tick();
    assert_eq!(spawns(&commands(&mut b_rx)), 1);
    assert_eq!(h.c.flows[&id].record.status, DataflowStatus::Running);
}

#[tokio::test(start_paused = true)]
async fn the_backoff_clears_once_the_daemon_reports_the_dataflow_running() {
    let (mut h, id, b, _) = started(Arc::new(MemoryStore::new())).await;
    h.gone(b);
    let (b, mut b_rx) = h.register("b", vec![]);
    assert_eq!(spawns(&commands(&mut b_rx)), 1);
    // A reconnect (network blip) reporting it running: nothing to do, backoff cleared.
    h.gone(b);
    let (b, mut b_rx) = h.register("b", vec![running(id, "b")]);
    assert_eq!(spawns(&commands(&mut b_rx)), 0);
    // A restart right after is recovered at once.
    h.gone(b);
    let (_b, mut b_rx) = h.register("b", vec![]);
    assert_eq!(spawns(&commands(&mut b_rx)), 1);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_coordinator_reclaims_without_respawning_and_fails_what_does_not_return() {
    let store = Arc::new(MemoryStore::new());
    let (h, id, _, _) = started(store.clone()).await;
    drop(h); // the coordinator dies; its store remains

    let mut h = Harness::new(store.clone()).await;
    assert_eq!(h.c.flows[&id].record.status, DataflowStatus::Running);
    // Daemon a comes back still running its node: reclaimed, nothing spawned.
    let (_a, mut a_rx) = h.register("a", vec![running(id, "a")]);
    assert_eq!(spawns(&commands(&mut a_rx)), 0);
    tokio::time::advance(Duration::from_secs(59)).await;
    h.c.recovery_tick();
    assert_eq!(h.c.flows[&id].record.status, DataflowStatus::Running);
    // Daemon b never comes back: after the reclaim timeout the dataflow fails, with the reason.
    tokio::time::advance(Duration::from_secs(2)).await;
    h.c.recovery_tick();
    let record = &h.c.flows[&id].record;
    assert_eq!(record.status, DataflowStatus::Failed);
    let reason = record.failure.clone().unwrap();
    assert!(
        reason.contains("`b` did not reconnect within 60s"),
        "{reason}"
    );
    // The reason is in the result of b's node, as users see it (`Finished`, `stop`).
    assert!(matches!(
        &record.outcome.nodes[&adora_core::NodeId::from("b")],
        adora_message::control::NodeResult::Failed { reason: r, .. } if *r == reason
    ));
    // ... and what still runs of it on a is stopped.
    let got = commands(&mut a_rx);
    assert!(
        got.iter()
            .any(|c| matches!(c, DaemonCommand::Stop { dataflow, .. } if *dataflow == id)),
        "{got:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn after_a_coordinator_restart_every_daemon_back_in_time_keeps_it_running() {
    let store = Arc::new(MemoryStore::new());
    let (h, id, _, _) = started(store.clone()).await;
    drop(h);
    let mut h = Harness::new(store).await;
    let (_a, _) = h.register("a", vec![running(id, "a")]);
    let (_b, _) = h.register("b", vec![running(id, "b")]);
    tokio::time::advance(Duration::from_secs(120)).await;
    h.c.recovery_tick();
    assert_eq!(h.c.flows[&id].record.status, DataflowStatus::Running);
    assert_eq!(
        h.c.flows[&id].record.generation, 1,
        "no node was re-spawned"
    );
    // The machines are known from the store too.
    assert_eq!(h.c.daemons.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_node_that_crashes_right_after_its_respawn_is_not_respawned_in_a_loop() {
    let (mut h, id, b, _) = started(Arc::new(MemoryStore::new())).await;
    h.gone(b);
    let (b, mut b_rx) = h.register("b", vec![]);
    assert_eq!(spawns(&commands(&mut b_rx)), 1);
    h.daemon_says(b, spawned(id));
    let crashed = adora_message::control::NodeResult::Failed {
        reason: "exit status 9".into(),
        stderr_tail: Vec::new(),
    };
    h.daemon_says(
        b,
        DaemonMessage::Finished {
            dataflow: id,
            nodes: [("b".into(), crashed)].into(),
        },
    );
    for _ in 0..4 {
        tokio::time::advance(Duration::from_secs(30)).await;
        h.c.recovery_tick();
    }
    // Restarting crashed nodes is their restart policy's job (on the daemon), not recovery's.
    assert_eq!(spawns(&commands(&mut b_rx)), 0);
}
