use std::sync::Arc;

use adora_core::Descriptor;
use adora_message::{
    cli_to_coordinator::{ControlRequest, StartDataflow},
    control::{ControlError, ErrorKind, RunningDataflow},
    coordinator_to_cli::ControlReply,
    coordinator_to_daemon::DaemonCommand,
    daemon_to_coordinator::DaemonMessage,
    relocation::{RelocateStep, Relocation},
};
use adora_store::{MemoryStore, Store};
use uuid::Uuid;

use crate::{actor::ConnId, testkit::*};

/// `sender` pinned to `a`, `relay` placed by label `role: relay` (on `b`, the first with it).
fn chain() -> StartDataflow {
    let yaml = "nodes:\n  - id: sender\n    path: ./s\n    outputs: [x]\n    _unstable_deploy: { machine: a }\n  - id: relay\n    path: ./r\n    inputs:\n      x: sender/x\n    _unstable_deploy: { labels: { role: relay } }\n";
    StartDataflow {
        descriptor: Descriptor::parse(yaml, "d.yml".as_ref()).unwrap(),
        ..two_machine_start()
    }
}

fn register(
    h: &mut Harness,
    machine: &str,
    relay: bool,
    running: Vec<RunningDataflow>,
) -> (ConnId, DaemonRx) {
    let labels = if relay {
        [("role".to_owned(), "relay".to_owned())].into()
    } else {
        Default::default()
    };
    h.register_labelled(machine, labels, running)
}

fn relocations(rx: &mut DaemonRx) -> Vec<(String, RelocateStep)> {
    commands(rx)
        .into_iter()
        .filter_map(|c| match c {
            DaemonCommand::Relocate(Relocation { node, step, .. }) => {
                Some((node.to_string(), step))
            }
            _ => None,
        })
        .collect()
}

fn step_names(rx: &mut DaemonRx) -> Vec<&'static str> {
    relocations(rx).iter().map(|(_, s)| s.name()).collect()
}

fn relocated(step: &str, result: Result<(), &str>, id: Uuid) -> DaemonMessage {
    DaemonMessage::Relocated {
        dataflow: id,
        node: "relay".into(),
        step: step.into(),
        result: result.map_err(ControlError::daemon),
        cut: Default::default(),
    }
}

struct Running {
    h: Harness,
    id: Uuid,
    b: (ConnId, DaemonRx),
    c: (ConnId, DaemonRx),
    store: Arc<MemoryStore>,
}

/// Daemons a, b, c (b and c with `role: relay`), the chain running with `relay` on b.
async fn running_chain() -> Running {
    let store = Arc::new(MemoryStore::new());
    let mut h = Harness::new(store.clone()).await;
    let (a, _) = register(&mut h, "a", false, vec![]);
    let b = register(&mut h, "b", true, vec![]);
    let c = register(&mut h, "c", true, vec![]);
    let mut client = h.request(ControlRequest::Start(chain()));
    let id = *h.c.flows.keys().next().unwrap();
    h.daemon_says(a, spawned(id));
    h.daemon_says(b.0, spawned(id));
    assert!(matches!(
        replies(&mut client)[..],
        [ControlReply::Started { .. }]
    ));
    assert_eq!(
        h.c.flows[&id].record.placement[&adora_core::NodeId::from("relay")],
        "b"
    );
    Running { h, id, b, c, store }
}

fn stored_placement(store: &MemoryStore, id: Uuid) -> String {
    let record = store
        .dataflows()
        .unwrap()
        .into_iter()
        .find(|r| r.id == id)
        .unwrap();
    record.placement[&adora_core::NodeId::from("relay")].clone()
}

#[tokio::test]
async fn a_move_commits_the_placement_only_once_the_new_instance_delivers() {
    let Running {
        mut h,
        id,
        mut b,
        mut c,
        store,
    } = running_chain().await;
    let mut client = h.request(ControlRequest::MoveNode {
        dataflow: "demo".into(),
        node: "relay".into(),
        to: None,
    });
    assert_eq!(step_names(&mut b.1), ["expect"]);
    let spawn = relocations(&mut c.1);
    let [(node, RelocateStep::Spawn(spawn))] = &spawn[..] else {
        panic!("{spawn:?}")
    };
    assert_eq!(
        (node.as_str(), spawn.nodes.len()),
        ("relay", 1),
        "c had no part: the relay alone"
    );

    h.daemon_says(c.0, relocated("spawn", Ok(()), id));
    assert!(
        step_names(&mut c.1).is_empty(),
        "no switch before the source expects the move"
    );
    h.daemon_says(b.0, relocated("expect", Ok(()), id));
    assert_eq!(step_names(&mut c.1), ["switch"]);
    assert_eq!(
        stored_placement(&store, id),
        "b",
        "not committed before the switch"
    );

    // The target's cut goes with the source's `Leave`.
    let cut: adora_message::relocation::Cut =
        [("in".into(), uhlc::HLC::default().new_timestamp())].into();
    let mut switched = relocated("switch", Ok(()), id);
    if let DaemonMessage::Relocated { cut: c, .. } = &mut switched {
        *c = cut.clone();
    }
    h.daemon_says(c.0, switched);
    assert_eq!(
        stored_placement(&store, id),
        "c",
        "committed and stored at the switch"
    );
    let leave: Vec<Relocation> = commands(&mut b.1)
        .into_iter()
        .filter_map(|c| match c {
            DaemonCommand::Relocate(r) => Some(r),
            _ => None,
        })
        .collect();
    assert!(
        matches!(&leave[..], [r] if r.step == RelocateStep::Leave && r.cut == cut),
        "{leave:?}"
    );
    assert!(
        !h.c.flows[&id].parts.contains_key("b"),
        "b's part had only the relay"
    );

    h.daemon_says(b.0, relocated("leave", Ok(()), id));
    assert_eq!(
        step_names(&mut c.1),
        ["settle"],
        "the target settles after the source left"
    );
    let got = replies(&mut client);
    let progress = got
        .iter()
        .filter(|r| matches!(r, ControlReply::MoveProgress(_)))
        .count();
    assert_eq!(progress, 3, "{got:?}");
    let Some(ControlReply::Moved(report)) = got.last() else {
        panic!("{got:?}")
    };
    assert_eq!((report.from.as_str(), report.to.as_str()), ("b", "c"));
    assert!(h.c.moves.is_empty());

    // A re-registration of b still reporting the relay (its `Leave` was cut off): told to
    // leave again, the placement stays.
    h.gone(b.0);
    let mut b = register(&mut h, "b", true, vec![running(id, "relay")]);
    assert_eq!(step_names(&mut b.1), ["leave"]);
    assert_eq!(
        h.c.flows[&id].record.placement[&adora_core::NodeId::from("relay")],
        "c"
    );
}

#[tokio::test]
async fn a_failed_spawn_aborts_the_move_and_keeps_the_old_instance() {
    let Running {
        mut h,
        id,
        mut b,
        mut c,
        store,
    } = running_chain().await;
    let mut client = h.request(ControlRequest::MoveNode {
        dataflow: "demo".into(),
        node: "relay".into(),
        to: Some("c".into()),
    });
    relocations(&mut b.1);
    relocations(&mut c.1);
    h.daemon_says(
        c.0,
        relocated("spawn", Err("node `relay`: executable `./r` not found"), id),
    );
    assert_eq!(step_names(&mut b.1), ["abort"]);
    assert_eq!(step_names(&mut c.1), ["abort"]);
    assert_eq!(stored_placement(&store, id), "b");
    let got = replies(&mut client);
    let Some(ControlReply::Error(e)) = got.last() else {
        panic!("{got:?}")
    };
    assert!(
        e.message.contains("not found") && e.message.contains("still runs on `b`"),
        "{e}"
    );
    assert!(h.c.moves.is_empty());

    // A target lost before the commit aborts too.
    let _client = h.request(ControlRequest::MoveNode {
        dataflow: "demo".into(),
        node: "relay".into(),
        to: None,
    });
    relocations(&mut b.1);
    h.gone(c.0);
    assert_eq!(step_names(&mut b.1), ["abort"]);
    assert!(h.c.moves.is_empty());
}

#[tokio::test]
async fn pinned_nodes_and_impossible_targets_are_refused() {
    let Running { mut h, .. } = running_chain().await;
    let refused = |h: &mut Harness, node: &str, to: Option<&str>| {
        let mut client = h.request(ControlRequest::MoveNode {
            dataflow: "demo".into(),
            node: node.into(),
            to: to.map(Into::into),
        });
        match replies(&mut client).pop() {
            Some(ControlReply::Error(e)) => e,
            other => panic!("{other:?}"),
        }
    };
    let e = refused(&mut h, "sender", None);
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    assert!(e.message.contains("pinned to machine `a`"), "{e}");
    let e = refused(&mut h, "relay", Some("a"));
    assert_eq!(e.kind, ErrorKind::Placement);
    assert!(e.message.contains("cannot run on `a`"), "{e}");
    let e = refused(&mut h, "relay", Some("nowhere"));
    assert!(e.message.contains("no connected daemon `nowhere`"), "{e}");
    let e = refused(&mut h, "relay", Some("b"));
    assert!(e.message.contains("already runs on `b`"), "{e}");
    let e = refused(&mut h, "ghost", None);
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(h.c.moves.is_empty());
}
