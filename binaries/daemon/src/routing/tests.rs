use std::{path::Path, time::Duration};

use crate::remote::feed::RemotePool;
use adora_message::{Metadata, SegmentFile, SharedRef};

use super::*;

fn descriptor(yaml: &str) -> Descriptor {
    Descriptor::parse(yaml, Path::new("test.yml")).expect("valid descriptor")
}

fn metadata() -> Metadata {
    Metadata::new(uhlc::HLC::default().new_timestamp())
}

fn shared(token: u64) -> DataRef {
    DataRef::Shared(SharedRef {
        os_id: format!("adora-test-routing-{token}"),
        len: 4096,
        token,
        file: SegmentFile { dev: 0, ino: token },
    })
}

const FAN_OUT: &str = r#"
nodes:
  - id: src
    path: src
    outputs: [out]
  - id: a
    path: a
    inputs: { x: src/out }
  - id: b
    path: b
    inputs: { y: { source: src/out, queue_size: 2 } }
"#;

fn poll(r: &mut Routing, node: &str) -> Option<DaemonReply> {
    let (tx, mut rx) = oneshot::channel();
    r.next_events(&node.into(), tx);
    rx.try_recv().ok()
}

fn poll_freed(r: &mut Routing, node: &str) -> Option<Vec<u64>> {
    let (tx, mut rx) = oneshot::channel();
    r.next_freed(&node.into(), tx);
    match rx.try_recv().ok()? {
        DaemonReply::FreedSamples(t) => Some(t),
        other => panic!("unexpected {other:?}"),
    }
}

fn poll_released(r: &mut Routing, node: &str) -> Option<Vec<(String, u64)>> {
    let (tx, mut rx) = oneshot::channel();
    r.next_freed(&node.into(), tx);
    match rx.try_recv().ok()? {
        DaemonReply::LanesReleased(lanes) => Some(lanes),
        other => panic!("unexpected {other:?}"),
    }
}

fn inputs(reply: Option<DaemonReply>) -> Vec<String> {
    match reply {
        Some(DaemonReply::Events { events, .. }) => events
            .into_iter()
            .map(|e| match e {
                NodeEvent::Input { id, data, .. } => format!("{id}:{}", data.len()),
                NodeEvent::InputClosed { id } => format!("closed:{id}"),
                NodeEvent::Stop => "stop".into(),
                other => format!("{other:?}"),
            })
            .collect(),
        other => panic!("expected events, got {other:?}"),
    }
}

#[test]
fn fans_out_in_order_and_waits_when_empty() {
    let mut r = Routing::new(&descriptor(FAN_OUT));
    assert!(
        poll(&mut r, "a").is_none(),
        "no event yet: the request stays pending"
    );
    // The pending waiter was replaced by the poll above; deliver to it now.
    let (tx, mut rx) = oneshot::channel();
    r.next_events(&"a".into(), tx);
    r.send_output(
        &"src".into(),
        &"out".into(),
        metadata(),
        DataRef::Inline(vec![1]),
    );
    assert_eq!(inputs(rx.try_recv().ok()), vec!["x:1"]);
    r.send_output(
        &"src".into(),
        &"out".into(),
        metadata(),
        DataRef::Inline(vec![1, 2]),
    );
    r.send_output(
        &"src".into(),
        &"out".into(),
        metadata(),
        DataRef::Inline(vec![1, 2, 3]),
    );
    assert_eq!(inputs(poll(&mut r, "a")), vec!["x:2", "x:3"]);
}

#[test]
fn full_queue_drops_oldest_and_reports_count() {
    let mut r = Routing::new(&descriptor(FAN_OUT));
    for len in 1..=5 {
        r.send_output(
            &"src".into(),
            &"out".into(),
            metadata(),
            DataRef::Inline(vec![0; len]),
        );
    }
    match poll(&mut r, "b") {
        Some(DaemonReply::Events {
            events,
            drop_counts,
        }) => {
            assert_eq!(events.len(), 2);
            assert_eq!(drop_counts.get(&DataId::from("y")), Some(&3));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.counters()[&NodeId::from("b")].dropped[&DataId::from("y")],
        3
    );
}

#[test]
fn shared_sample_freed_after_every_receiver_dropped_it() {
    let mut r = Routing::new(&descriptor(FAN_OUT));
    r.send_output(&"src".into(), &"out".into(), metadata(), shared(7));
    assert_eq!(r.samples_in_flight(), 1);
    assert!(poll_freed(&mut r, "src").is_none());
    // Pending freed-request for src:
    let (tx, mut freed) = oneshot::channel();
    r.next_freed(&"src".into(), tx);
    inputs(poll(&mut r, "a"));
    inputs(poll(&mut r, "b"));
    r.report_dropped(&"a".into(), vec![7]);
    assert!(freed.try_recv().is_err(), "b still holds the sample");
    r.report_dropped(&"b".into(), vec![7]);
    assert_eq!(
        freed.try_recv().ok(),
        Some(DaemonReply::FreedSamples(vec![7]))
    );
    assert_eq!(r.samples_in_flight(), 0);
}

#[test]
fn evicted_and_exited_receivers_release_samples() {
    let mut r = Routing::new(&descriptor(FAN_OUT));
    for t in 1..=3 {
        r.send_output(&"src".into(), &"out".into(), metadata(), shared(t));
    }
    // b's queue (size 2) evicted sample 1; `a` exits holding nothing but with all three queued.
    r.node_exited(&"a".into());
    assert_eq!(poll_freed(&mut r, "src"), Some(vec![1]));
    inputs(poll(&mut r, "b"));
    r.node_exited(&"b".into());
    // Held samples are released in no particular order.
    let mut freed = poll_freed(&mut r, "src").expect("freed");
    freed.sort();
    assert_eq!(freed, vec![2, 3]);
}

#[test]
fn closing_outputs_closes_inputs_and_ends_streams() {
    let mut r = Routing::new(&descriptor(FAN_OUT));
    r.send_output(
        &"src".into(),
        &"out".into(),
        metadata(),
        DataRef::Inline(vec![9]),
    );
    r.node_exited(&"src".into());
    assert_eq!(inputs(poll(&mut r, "a")), vec!["x:1", "closed:x"]);
    // All inputs closed and nothing queued: the stream ends (empty batch).
    assert_eq!(inputs(poll(&mut r, "a")), Vec::<String>::new());
}

#[test]
fn stop_is_delivered_after_queued_inputs_then_stream_ends() {
    let mut r = Routing::new(&descriptor(FAN_OUT));
    r.send_output(
        &"src".into(),
        &"out".into(),
        metadata(),
        DataRef::Inline(vec![9]),
    );
    assert_eq!(r.stop_all(), 3);
    assert_eq!(inputs(poll(&mut r, "a")), vec!["x:1", "stop"]);
    assert_eq!(inputs(poll(&mut r, "a")), Vec::<String>::new());
    assert_eq!(inputs(poll(&mut r, "src")), vec!["stop"]);
    assert_eq!(r.stop_all(), 0, "stop is queued once");
}

#[test]
fn timers_reach_subscribers() {
    let mut r = Routing::new(&descriptor(
        "nodes:\n  - id: n\n    path: n\n    inputs: { tick: adora/timer/millis/10, slow: dora/timer/secs/1 }\n",
    ));
    let intervals = r.timer_intervals();
    assert_eq!(intervals.len(), 2);
    r.timer_tick(std::time::Duration::from_millis(10), metadata());
    assert_eq!(inputs(poll(&mut r, "n")), vec!["tick:0"]);
}

#[test]
fn remote_nodes_only_send_and_their_samples_return_to_the_daemon() {
    // `src` runs on another machine: its messages arrive over Zenoh, copied into samples the
    // daemon owns; only local nodes (`a`, `b`) receive.
    let d = descriptor(FAN_OUT);
    let mut r = Routing::with_locality(&d, |n| n.as_str() != "src");
    r.send_remote_output(&"src".into(), &"out".into(), (metadata(), shared(5)), &[]);
    assert_eq!(inputs(poll(&mut r, "a")), vec!["x:4096"]);
    assert_eq!(inputs(poll(&mut r, "b")), vec!["y:4096"]);
    r.report_dropped(&"a".into(), vec![5]);
    assert!(r.take_daemon_freed().is_empty(), "b still holds it");
    r.report_dropped(&"b".into(), vec![5]);
    assert_eq!(r.take_daemon_freed(), vec![5]);
    assert_eq!(
        r.stop_all(),
        2,
        "the remote node is stopped by its own daemon"
    );
    assert!(!r.counters().contains_key(&NodeId::from("src")));

    // A local node's output with only remote receivers reaches no local queue.
    let mut r = Routing::with_locality(&d, |n| n.as_str() == "src");
    r.send_output(
        &"src".into(),
        &"out".into(),
        metadata(),
        DataRef::Inline(vec![1]),
    );
    assert_eq!(
        r.close_outputs(&"src".into(), &["out".into(), "nope".into()]),
        vec![DataId::from("out")]
    );
}

#[test]
fn drop_counts_travel_again_only_when_they_grew() {
    let mut r = Routing::new(&descriptor(FAN_OUT));
    let send = |r: &mut Routing| {
        r.send_output(
            &"src".into(),
            &"out".into(),
            metadata(),
            DataRef::Inline(vec![1]),
        )
    };
    let counts = |reply: Option<DaemonReply>| match reply {
        Some(DaemonReply::Events { drop_counts, .. }) => drop_counts,
        other => panic!("{other:?}"),
    };
    for _ in 0..3 {
        send(&mut r); // queue_size 2: one dropped
    }
    assert_eq!(counts(poll(&mut r, "b")).get(&DataId::from("y")), Some(&1));
    send(&mut r);
    assert!(
        counts(poll(&mut r, "b")).is_empty(),
        "unchanged: not repeated"
    );
    for _ in 0..3 {
        send(&mut r);
    }
    assert_eq!(counts(poll(&mut r, "b")).get(&DataId::from("y")), Some(&2));

    // A restarted instance starts without counts: it gets them with its first reply.
    r.node_restarting(&"b".into());
    send(&mut r);
    assert_eq!(counts(poll(&mut r, "b")).get(&DataId::from("y")), Some(&2));
}

#[test]
fn a_held_batch_reaches_a_waiting_receiver_in_one_reply() {
    let mut r = Routing::new(&descriptor(FAN_OUT));
    let (tx, mut rx) = oneshot::channel();
    r.next_events(&"a".into(), tx);
    r.hold_wakes();
    for byte in 1..=3 {
        r.send_output(
            &"src".into(),
            &"out".into(),
            metadata(),
            DataRef::Inline(vec![byte; byte as usize]),
        );
    }
    assert!(rx.try_recv().is_err(), "held until the batch is routed");
    r.release_wakes();
    assert_eq!(inputs(rx.try_recv().ok()), vec!["x:1", "x:2", "x:3"]);
    // Later messages are answered at once again.
    let (tx, mut rx) = oneshot::channel();
    r.next_events(&"a".into(), tx);
    r.send_output(
        &"src".into(),
        &"out".into(),
        metadata(),
        DataRef::Inline(vec![4]),
    );
    assert_eq!(inputs(rx.try_recv().ok()), vec!["x:1"]);
}

#[test]
fn a_shared_sample_without_receivers_goes_straight_back() {
    let yaml = "nodes:\n  - id: src\n    path: src\n    outputs: [out, unused]\n  - id: a\n    path: a\n    inputs: { x: src/out }\n";
    let mut r = Routing::new(&descriptor(yaml));
    r.send_output(&"src".into(), &"unused".into(), metadata(), shared(7));
    assert_eq!(poll_freed(&mut r, "src"), Some(vec![7]));
    assert_eq!(r.samples_in_flight(), 0);
}

#[test]
fn an_input_without_messages_for_its_timeout_closes_and_a_fed_one_stays_open() {
    let mut r = Routing::new(&descriptor(
        r#"
nodes:
  - id: src
    path: src
    outputs: [out]
  - id: a
    path: a
    inputs:
      quiet: { source: src/out, input_timeout: 1s }
      plain: src/out
"#,
    ));
    assert_eq!(r.shortest_input_timeout(), Some(Duration::from_secs(1)));
    let start = std::time::Instant::now();
    r.start_input_clocks(start);
    assert!(r
        .expire_inputs(start + Duration::from_millis(999))
        .is_empty());
    let expired = r.expire_inputs(start + Duration::from_secs(1));
    assert_eq!(
        expired,
        [("a".into(), "quiet".into(), Duration::from_secs(1))]
    );
    match poll(&mut r, "a") {
        Some(DaemonReply::Events { events, .. }) => assert!(
            matches!(&events[..], [NodeEvent::InputClosed { id }] if id.as_str() == "quiet"),
            "{events:?}"
        ),
        other => panic!("expected InputClosed, got {other:?}"),
    }
    // Closed once: later checks find nothing more, and messages now reach only `plain`.
    assert!(r.expire_inputs(start + Duration::from_secs(5)).is_empty());
    r.send_output(
        &"src".into(),
        &"out".into(),
        metadata(),
        DataRef::Inline(vec![1]),
    );
    match poll(&mut r, "a") {
        Some(DaemonReply::Events { events, .. }) => assert!(
            matches!(&events[..], [NodeEvent::Input { id, .. }] if id.as_str() == "plain"),
            "{events:?}"
        ),
        other => panic!("expected one input, got {other:?}"),
    }
}

#[test]
fn a_message_restarts_the_input_clock() {
    let mut r = Routing::new(&descriptor(
        "nodes:\n  - id: src\n    path: src\n    outputs: [out]\n  - id: a\n    path: a\n    \
         inputs:\n      in: { source: src/out, input_timeout: 10s }\n",
    ));
    let start = std::time::Instant::now();
    r.start_input_clocks(start);
    r.send_output(
        &"src".into(),
        &"out".into(),
        metadata(),
        DataRef::Inline(vec![1]),
    );
    // The message arrived after `start`: ten seconds after `start` the input is still fresh.
    assert!(r.expire_inputs(start + Duration::from_secs(10)).is_empty());
    assert_eq!(
        r.expire_inputs(std::time::Instant::now() + Duration::from_secs(10))
            .len(),
        1
    );
}

#[test]
fn with_exit_when_nodes_finish_timers_close_after_the_data_inputs() {
    let yaml = "nodes:\n  - id: src\n    path: src\n    outputs: [out]\n  - id: a\n    path: a\n    \
                inputs:\n      data: src/out\n      tick: adora/timer/millis/10\n  - id: clock\n    \
                path: c\n    inputs:\n      tick: adora/timer/millis/10\n";
    for (flag, expected) in [
        ("", vec!["data"]),
        ("exit_when_nodes_finish: true\n", vec!["data", "tick"]),
    ] {
        let mut r = Routing::new(&descriptor(&format!("{flag}{yaml}")));
        r.close_outputs(&"src".into(), &["out".into()]);
        let closed: Vec<String> = match poll(&mut r, "a") {
            Some(DaemonReply::Events { events, .. }) => events
                .iter()
                .filter_map(|e| match e {
                    NodeEvent::InputClosed { id } => Some(id.to_string()),
                    _ => None,
                })
                .collect(),
            other => panic!("expected InputClosed, got {other:?}"),
        };
        assert_eq!(closed, expected, "{flag}");
        // A node fed only by timers is a source: it keeps its clock.
        r.timer_tick(Duration::from_millis(10), metadata());
        assert!(
            matches!(poll(&mut r, "clock"), Some(DaemonReply::Events { events, .. }) if events.len() == 1)
        );
    }
}

/// The routing of [`FAN_OUT`] with lanes (segments named after this test, removed on drop).
struct WithLanes {
    r: Routing,
    prefix: String,
}

impl WithLanes {
    fn new(test: &str) -> Self {
        Self::tapped(test, |_, _| false)
    }

    /// [`FAN_OUT`] with `src` on another machine: the lanes of `a` and `b` are fed by its
    /// subscription.
    fn remote(test: &str) -> Self {
        Self::elsewhere(test, FAN_OUT, "src")
    }

    /// The dataflow `yaml` with node `remote` on another machine.
    fn elsewhere(test: &str, yaml: &str, remote: &str) -> Self {
        let prefix = format!("adora-test-lanes-{}-{test}-", std::process::id());
        let d = descriptor(yaml);
        let mut r = Routing::with_locality(&d, |n| n.as_str() != remote);
        r.open_lanes(&d, &prefix, |_, _| false);
        Self { r, prefix }
    }

    fn tapped(test: &str, tapped: impl Fn(&NodeId, &DataId) -> bool) -> Self {
        let prefix = format!("adora-test-lanes-{}-{test}-", std::process::id());
        let d = descriptor(FAN_OUT);
        let mut r = Routing::new(&d);
        r.open_lanes(&d, &prefix, tapped);
        Self { r, prefix }
    }
}

impl Drop for WithLanes {
    fn drop(&mut self) {
        let _ = adora_shm::unlink_all(&self.prefix);
    }
}

fn both() -> Vec<(NodeId, DataId)> {
    vec![("a".into(), "x".into()), ("b".into(), "y".into())]
}

#[test]
fn nodes_are_told_their_lanes_and_bells() {
    let l = WithLanes::new("config");
    let src = l.r.node_lanes(&"src".into());
    let out = &src.outputs[&DataId::from("out")];
    assert_eq!(out.lanes.len(), 2);
    assert!(!out.daemon_copy);
    let a = l.r.node_lanes(&"a".into());
    assert_eq!(a.inputs[&DataId::from("x")].sender, NodeId::from("src"));
    assert_eq!(
        Some(&out.lanes[0].bell),
        a.bell.as_ref(),
        "the sender rings the receiver's bell"
    );
    assert!(out.lanes.iter().all(|l| l.lane.contains("~lane-")));
    // Each receiver knows its lane's place in the sender's list: the holder bit it clears.
    for (i, lane) in out.lanes.iter().enumerate() {
        let receiver = l.r.node_lanes(&lane.receiver);
        assert_eq!(receiver.inputs[&lane.input].bit, Some(i as u32), "{lane:?}");
    }
}

#[test]
fn a_local_senders_sample_the_lanes_took_is_not_held_by_the_daemon() {
    let mut l = WithLanes::new("freed");
    let (tx, mut freed) = oneshot::channel();
    l.r.next_freed(&"src".into(), tx);
    let served = both();
    let msg = (metadata(), shared(7));
    l.r.send_output_direct(&"src".into(), &"out".into(), msg, (&served, true));
    assert!(
        poll(&mut l.r, "a").is_none(),
        "the lanes took it: nothing queued here"
    );
    // Its lanes hold it through the sample's holder words: the daemon, which routed it to
    // nobody else, is done with it at once, whatever the receivers do.
    assert_eq!(
        freed.try_recv().ok(),
        Some(DaemonReply::FreedSamples(vec![7]))
    );
    assert_eq!(l.r.samples_in_flight(), 0);
}

#[test]
fn an_ended_receiver_instance_releases_what_it_took_from_a_feeds_lanes() {
    let mut l = WithLanes::remote("feed-held");
    let pool = RemotePool::new(format!("{}~remote-", l.prefix));
    let feed = (l.r.remote_feed(&"src".into(), &"out".into(), pool.clone())).expect("a feed");
    // Each receiver clears its lane's bit in the feed's samples, as for a local sender's.
    for (node, input, bit) in [("a", "x", 0), ("b", "y", 1)] {
        let config = l.r.node_lanes(&node.into());
        assert_eq!(config.inputs[&DataId::from(input)].bit, Some(bit), "{node}");
    }
    let kind = adora_message::daemon_to_daemon::RemoteKind::Data {
        metadata: metadata(),
    };
    let payload = crate::remote::Payload::from(vec![7u8; 4096]);
    let send = || {
        let fed = feed.feed(&kind, None, &payload).fed;
        assert_eq!(
            fed,
            crate::remote::feed::Fed::Lanes,
            "held by the lanes alone"
        );
    };
    // `a` takes two, a third waits in its lane; `b` takes none.
    let a_lane =
        adora_shm::Lane::open(&l.r.node_lanes(&"a".into()).inputs[&DataId::from("x")].lane)
            .expect("a's lane");
    send();
    send();
    assert_eq!(a_lane.pop_all(&mut Vec::new()), 2);
    send();
    assert_eq!(pool.in_flight(), 3);
    // `a` dies holding what it took (a new instance follows); `b` is gone for good.
    l.r.node_restarting(&"a".into());
    l.r.node_exited(&"b".into());
    let ended = l.r.take_remote_taken();
    assert_eq!(ended.len(), 2, "{ended:?}");
    assert!(
        ended.iter().any(|(_, before)| *before == 2),
        "a stopped after two"
    );
    assert!(
        ended.iter().any(|(_, before)| *before == u64::MAX),
        "b for good"
    );
    pool.release_taken(ended);
    // What `a`'s lane still queues is kept for its next instance.
    assert_eq!(pool.in_flight(), 1);
}

#[test]
fn an_ended_receiver_instance_tells_its_sender_where_it_stopped_taking() {
    let mut l = WithLanes::new("exit");
    let config = l.r.node_lanes(&"src".into());
    let lane_of = |receiver: &str| {
        let lanes = &config.outputs[&DataId::from("out")].lanes;
        let l = lanes.iter().find(|l| l.receiver.as_str() == receiver);
        l.expect("a lane").lane.clone()
    };
    let (lane_a, lane_b) = (lane_of("a"), lane_of("b"));
    // `b` took two entries; a third waits in its lane for its next instance.
    let sender = adora_shm::Lane::open(&lane_b).expect("open");
    let receiver = adora_shm::Lane::open(&lane_b).expect("open");
    for t in [1, 2] {
        sender.push(b"m", Some(t), t);
    }
    assert_eq!(receiver.pop_all(&mut Vec::new()), 2);
    sender.push(b"m", Some(3), 3);
    l.r.node_restarting(&"b".into());
    assert_eq!(poll_released(&mut l.r, "src"), Some(vec![(lane_b, 2)]));
    // Gone for good: everything its lanes had, taken or queued.
    l.r.node_exited(&"a".into());
    assert_eq!(
        poll_released(&mut l.r, "src"),
        Some(vec![(lane_a, u64::MAX)])
    );
}

#[test]
fn a_tap_keeps_the_lanes_open_and_asks_their_sender_for_copies_until_it_ends() {
    // Tapped from the start (`start --record`): the lanes exist and want copies.
    let mut l = WithLanes::tapped("tapped", |n, o| n.as_str() == "src" && o.as_str() == "out");
    let r = &mut l.r;
    let config = r.node_lanes(&"src".into());
    let out = &config.outputs[&DataId::from("out")];
    assert_eq!(out.lanes.len(), 2, "a tapped output keeps its lanes");
    let lanes: Vec<_> = (out.lanes.iter())
        .map(|l| adora_shm::Lane::open(&l.lane).expect("open the lane"))
        .collect();
    assert!(lanes.iter().all(|l| l.copy_wanted() && !l.is_closed()));
    // The tap ends: no more copies; another starts: copies again, and nothing was closed.
    r.watch_lanes(|_, _| false);
    assert!(lanes.iter().all(|l| !l.copy_wanted()));
    r.watch_lanes(|n, _| n.as_str() == "src");
    assert!(lanes.iter().all(|l| l.copy_wanted() && !l.is_closed()));
}

#[test]
fn a_move_closes_lanes_and_the_output_goes_through_the_daemon() {
    let mut l = WithLanes::new("close");
    let config = l.r.node_lanes(&"src".into());
    let lane = adora_shm::Lane::open(&config.outputs[&DataId::from("out")].lanes[0].lane)
        .expect("open the lane");
    assert!(!lane.is_closed());
    l.r.close_lanes(|n, o| n.as_str() == "src" && o.as_str() == "out");
    assert!(lane.is_closed());
    assert_eq!(lane.push(b"late", None, 1), adora_shm::Pushed::Closed);
    // What the sender then sends goes through the daemon to every receiver.
    l.r.send_output(
        &"src".into(),
        &"out".into(),
        metadata(),
        DataRef::Inline(vec![1]),
    );
    assert_eq!(inputs(poll(&mut l.r, "a")), vec!["x:1"]);
}

#[test]
fn an_input_from_another_machine_gets_a_lane_its_subscription_feeds() {
    // `src` runs on another machine; `a` reads it through a lane, `b` cannot (`input_timeout`).
    let yaml = FAN_OUT.replace("queue_size: 2", "input_timeout: 5s");
    let mut l = WithLanes::elsewhere("remote", &yaml, "src");
    let prefix = l.prefix.clone();
    let r = &mut l.r;
    let a = r.node_lanes(&"a".into());
    assert_eq!(a.inputs[&DataId::from("x")].sender, NodeId::from("src"));
    assert!(a.bell.is_some());
    assert!(r.node_lanes(&"b".into()).inputs.is_empty());
    let pool = || RemotePool::new(format!("{prefix}~remote-"));
    let feed = r
        .remote_feed(&"src".into(), &"out".into(), pool())
        .expect("a feed");
    assert_eq!(feed.lanes(), 1);
    // `b` has no lane: every message also goes to the daemon, the lane's receiver named.
    let metadata = metadata();
    let kind = adora_message::daemon_to_daemon::RemoteKind::Data { metadata };
    let payload = crate::remote::Payload::from(vec![1u8; 8]);
    let served = vec![(NodeId::from("a"), DataId::from("x"))];
    assert_eq!(
        feed.feed(&kind, None, &payload).fed,
        crate::remote::feed::Fed::Daemon { served }
    );
    // A move closes the lanes: a feed made then writes into none.
    r.close_lanes(|_, _| true);
    assert!(r
        .remote_feed(&"src".into(), &"out".into(), pool())
        .is_none());
}

#[test]
fn an_output_read_on_another_machine_gets_a_publish_lane_instead_of_the_daemons_copy() {
    // `b` runs on another machine: `src` pushes into `a`'s lane and into its publisher's.
    let mut l = WithLanes::elsewhere("publish", FAN_OUT, "b");
    let r = &mut l.r;
    let (src, out) = (NodeId::from("src"), DataId::from("out"));
    let config = r.node_lanes(&src);
    let lanes = &config.outputs[&out];
    let receivers: Vec<&str> = lanes.lanes.iter().map(|l| l.receiver.as_str()).collect();
    assert_eq!(receivers, ["a", "~publish/src/out"]);
    // Nothing goes through the daemon's actor any more.
    assert!(!lanes.daemon_copy);
    let publish = r.publish_lane(&src, &out, 7).expect("a publish lane");
    assert_eq!((publish.stream, publish.bit), (7, Some(1)));
    assert_eq!(publish.lane.os_id(), lanes.lanes[1].lane);
    assert_eq!(publish.bell, lanes.lanes[1].bell);
    // Until its publisher took what the sender pushed, the dataflow is still publishing.
    assert!(!r.publishing());
    assert!(matches!(
        publish.lane.push(b"entry", None, 1),
        adora_shm::Pushed::Queued { .. }
    ));
    assert!(r.publishing());
    publish.lane.pop_all(&mut Vec::new());
    assert!(!r.publishing());
    publish
        .busy
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(r.publishing());
    // A move closes it: the publisher gets none, the sender uses the daemon from then on.
    r.close_lanes(|_, _| true);
    assert!(r.publish_lane(&src, &out, 7).is_none());
}
