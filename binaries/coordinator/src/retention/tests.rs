use std::{sync::Arc, time::Duration};

use adora_message::{
    cli_to_coordinator::ControlRequest, control::DataflowStatus, coordinator_to_cli::ControlReply,
};
use adora_store::{
    now_ms,
    retention::{BUILD_RETENTION, REQUEST_RETENTION},
    BuildRecord, DataflowRecord, MemoryStore, Retention, Store,
};
use uuid::Uuid;

use crate::{testkit::*, CoordinatorConfig, Token};

const HOUR: Duration = Duration::from_secs(3600);

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// A dataflow that ended at `ended_ms`.
fn finished(name: &str, ended_ms: u64) -> DataflowRecord {
    let start = two_machine_start();
    let mut record = DataflowRecord::new(
        Uuid::new_v4(),
        name.into(),
        start.descriptor,
        start.working_dir,
        Default::default(),
    );
    record.status = DataflowStatus::Finished;
    record.created_at_ms = ended_ms;
    record.updated_at_ms = ended_ms;
    record
}

fn names(h: &Harness) -> Vec<String> {
    let mut names: Vec<String> = h.c.flows.values().map(|f| f.record.name.clone()).collect();
    names.sort();
    names
}

fn stored_names(store: &MemoryStore) -> Vec<String> {
    let mut names: Vec<String> = store
        .dataflows()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn finished_dataflows_are_forgotten_by_count_and_by_age_in_memory_and_in_the_store() {
    let store = Arc::new(MemoryStore::new());
    let now = now_ms();
    // Five runs that ended 30 to 34 hours ago, and one still running.
    for i in 0..5u64 {
        let record = finished(&format!("old{i}"), now - ms(HOUR) * (30 + i));
        store.put_dataflow(&record).unwrap();
    }
    let mut running = finished("running", now);
    running.status = DataflowStatus::Running;
    store.put_dataflow(&running).unwrap();

    let mut config = CoordinatorConfig::new(Token::new("test-token").unwrap());
    config.finished_dataflows = Retention {
        keep_last: 3,
        keep_for: 24 * HOUR,
    };
    // By count, at load: the latest three of the old runs stay.
    let mut h = Harness::with_config(config, store.clone()).await;
    let expected = ["old0", "old1", "old2", "running"];
    assert_eq!(names(&h), expected);
    assert_eq!(stored_names(&store), expected);

    // By age: four runs that ended just now all stay, whatever the count; the old ones go.
    for i in 0..4u64 {
        let record = finished(&format!("new{i}"), now + i);
        store.put_dataflow(&record).unwrap();
        h.c.insert_flow(record);
    }
    h.c.prune(now + 10);
    let expected = ["new0", "new1", "new2", "new3", "running"];
    assert_eq!(names(&h), expected);
    assert_eq!(stored_names(&store), expected);

    // A day later only the latest three are left; the running one is never forgotten.
    h.c.prune(now + ms(25 * HOUR));
    let expected = ["new1", "new2", "new3", "running"];
    assert_eq!(names(&h), expected);
    assert_eq!(stored_names(&store), expected);
}

#[tokio::test]
async fn answered_requests_and_expired_builds_are_forgotten() {
    let store = Arc::new(MemoryStore::new());
    let mut h = Harness::new(store.clone()).await;
    let (a, _a_rx) = h.register("a", vec![]);
    let (b, _b_rx) = h.register("b", vec![]);
    let request = ControlRequest::Idempotent {
        request_id: Uuid::new_v4(),
        request: Box::new(ControlRequest::Start(two_machine_start())),
    };
    let mut client = h.request(request);
    let id = *h.c.flows.keys().next().unwrap();
    h.daemon_says(a, spawned(id));
    h.daemon_says(b, spawned(id));
    assert!(matches!(
        &stored_replies(&mut client).await[..],
        [ControlReply::Started { .. }]
    ));
    let build = BuildRecord {
        id: Uuid::new_v4(),
        artifacts: Default::default(),
        placement: Default::default(),
        created_at_ms: now_ms(),
    };
    store.put_build(&build).unwrap();
    h.c.builds.insert(build.id, build);

    // Still within both limits.
    h.c.prune(now_ms() + ms(HOUR));
    assert_eq!(h.c.requests.len(), 1);
    assert_eq!(h.c.builds.len(), 1);

    h.c.prune(now_ms() + ms(REQUEST_RETENTION + HOUR));
    assert_eq!(h.c.requests.len(), 0);
    assert!(store.requests().unwrap().is_empty());
    assert_eq!(h.c.builds.len(), 1);

    h.c.prune(now_ms() + ms(BUILD_RETENTION + HOUR));
    assert!(h.c.builds.is_empty());
    assert!(store.builds().unwrap().is_empty());
    // The running dataflow is kept through all of it.
    assert_eq!(h.c.flows.len(), 1);
}
