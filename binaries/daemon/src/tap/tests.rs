use std::time::Duration;

use adora_message::Metadata;

use super::*;

const TIMEOUT: Duration = Duration::from_secs(5);

fn metadata() -> Metadata {
    Metadata::new(uhlc::HLC::default().new_timestamp())
}

fn outputs(list: &[(&str, &str)]) -> Option<BTreeSet<(NodeId, DataId)>> {
    Some(
        list.iter()
            .map(|(n, o)| ((*n).into(), (*o).into()))
            .collect(),
    )
}

async fn send(taps: &Taps, df: Uuid, node: &str, output: &str, payload: &[u8]) {
    let data = DataRef::Inline(payload.to_vec());
    let mut regions = None;
    let (node, output) = (node.into(), output.into());
    tokio::time::timeout(
        TIMEOUT,
        taps.copy(df, &node, &output, &metadata(), &data, &mut regions),
    )
    .await
    .expect("a copy with room does not wait");
}

#[tokio::test]
async fn only_tapped_outputs_of_the_tapped_dataflow_are_copied() {
    let taps = Taps::default();
    let df = Uuid::new_v4();
    assert!(taps.matching(df, &"a".into(), &"out".into()).is_empty());
    let (tap, mut rx) = Tap::new(df, outputs(&[("a", "out")]), false);
    let id = taps.add(tap);
    send(&taps, df, "a", "out", b"one").await;
    send(&taps, df, "a", "other", b"no").await;
    send(&taps, Uuid::new_v4(), "a", "out", b"no").await;
    let (got, _) = rx.try_recv().expect("one copy");
    assert_eq!(
        (got.topic(), got.data),
        ("a/out".to_owned(), b"one".to_vec())
    );
    assert!(rx.try_recv().is_err(), "nothing else was copied");
    taps.remove(id);
    assert!(taps.matching(df, &"a".into(), &"out".into()).is_empty());
    assert!(rx.recv().await.is_none(), "a removed tap ends its receiver");
}

#[tokio::test]
async fn a_full_lossless_tap_makes_the_sender_wait_and_a_lossy_one_counts_drops() {
    let taps = Taps::default();
    let df = Uuid::new_v4();
    let (tap, mut rx) = Tap::new(df, None, false);
    taps.add(tap);
    for _ in 0..TAP_BUFFER_MESSAGES {
        send(&taps, df, "a", "out", b"x").await;
    }
    let data = DataRef::Inline(b"late".to_vec());
    let mut regions = None;
    let (node, output, meta) = ("a".into(), "out".into(), metadata());
    let blocked = taps.copy(df, &node, &output, &meta, &data, &mut regions);
    tokio::pin!(blocked);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut blocked)
            .await
            .is_err(),
        "the sender waits while the tap is full"
    );
    rx.recv().await.expect("a copy");
    tokio::time::timeout(TIMEOUT, blocked)
        .await
        .expect("room again: it goes on");

    let taps = Taps::default();
    let (tap, _rx) = Tap::new(df, None, true);
    let counts = tap.clone();
    taps.add(tap);
    for _ in 0..TAP_BUFFER_MESSAGES + 5 {
        send(&taps, df, "a", "out", b"x").await;
    }
    assert_eq!(counts.dropped(), [("a/out".to_owned(), 5)].into());
}

#[tokio::test]
async fn forwarding_stops_at_the_window_until_credit_comes_and_ends_with_the_tap() {
    let taps = Taps::default();
    let df = Uuid::new_v4();
    let (tap, rx) = Tap::new(df, None, false);
    let (reports, mut out) = mpsc::unbounded_channel();
    let forwarder = tokio::spawn(taps.forward(9, tap, rx, reports));
    // Each message costs about a quarter of the window: three fit, the next ones wait.
    let big = vec![7u8; (TAP_WINDOW / 4) as usize];
    for _ in 0..3 {
        send(&taps, df, "a", "out", &big).await;
    }
    let (mut got, mut cost) = (0, 0);
    while got < 3 {
        let envelope = tokio::time::timeout(TIMEOUT, out.recv())
            .await
            .expect("in time")
            .expect("open");
        assert_eq!(envelope.id, 9);
        let DaemonMessage::Tapped(batch) = envelope.body else {
            panic!("{:?}", envelope.body);
        };
        got += batch.messages.len();
        cost += batch.cost();
    }
    send(&taps, df, "a", "out", &big).await;
    send(&taps, df, "a", "out", &big).await;
    let waiting = tokio::time::timeout(Duration::from_millis(200), out.recv()).await;
    assert!(waiting.is_err(), "no credit left: {waiting:?}");
    taps.credit(9, cost);
    let envelope = tokio::time::timeout(TIMEOUT, out.recv())
        .await
        .expect("credit")
        .expect("open");
    assert!(matches!(envelope.body, DaemonMessage::Tapped(_)));
    taps.end_dataflow(df);
    taps.untap(9);
    tokio::time::timeout(TIMEOUT, forwarder)
        .await
        .expect("ends")
        .expect("no panic");
    let last = std::iter::from_fn(|| out.try_recv().ok())
        .last()
        .expect("TapEnd");
    assert!(
        matches!(last.body, DaemonMessage::TapEnd { .. }),
        "{:?}",
        last.body
    );
}

/// Removes the test's segments, also when it panics.
struct Segments(String);

impl Drop for Segments {
    fn drop(&mut self) {
        let _ = adora_shm::unlink_all(&self.0);
    }
}

#[tokio::test]
async fn a_taps_lane_is_read_up_to_a_mark_until_its_message_is_read() {
    let segments = Segments(format!("adora-test-taps-{}-order-", std::process::id()));
    let lane = Arc::new(Lane::create(&format!("{}lane", segments.0), 16).expect("create"));
    let taps = Taps::default();
    let df = Uuid::new_v4();
    let (tap, mut rx) = Tap::new(df, None, false);
    taps.add(tap);
    let node: NodeId = "a".into();
    let copy = |payload: &[u8]| {
        let entry = adora_message::LaneEntry {
            metadata: metadata(),
            data: DataRef::Inline(payload.to_vec()),
        };
        TapCopy::encode(&"out".into(), &entry.encode().expect("encode")).expect("encode")
    };
    // What a sender writes around a shared sample ("3") that it sends on its socket.
    assert!(lane.try_push(&copy(b"1"), 1));
    assert!(lane.try_push(&copy(b"2"), 2));
    assert!(lane.try_push(&[], 3)); // the mark of "3"
    assert!(lane.try_push(&copy(b"4"), 4));
    let mut copies = CopiesLane::new(lane.clone());
    let mut regions = None;
    let mut received = || {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|(m, _)| String::from_utf8(m.data).expect("text"))
            .collect::<Vec<_>>()
    };

    copies.deliver(&taps, (df, &node), None).await;
    assert_eq!(received(), ["1", "2"], "a periodic read stops at the mark");
    copies.deliver(&taps, (df, &node), None).await;
    assert!(received().is_empty(), "still waiting for the socket");
    assert!(copies.has_copies());

    // The socket's message says 3 entries precede it: those go first, then the message.
    copies.deliver(&taps, (df, &node), Some(3)).await;
    let (shared, output) = (DataRef::Inline(b"3".to_vec()), "out".into());
    taps.copy(df, &node, &output, &metadata(), &shared, &mut regions)
        .await;
    copies.deliver(&taps, (df, &node), None).await;
    assert_eq!(received(), ["3", "4"]);
    assert!(!copies.has_copies());

    // A malformed entry is skipped with a warning; the next one still arrives.
    assert!(lane.try_push(b"garbage", 5));
    assert!(lane.try_push(&copy(b"6"), 6));
    copies.deliver(&taps, (df, &node), None).await;
    assert_eq!(received(), ["6"]);
}

fn numbered(node: &str, count: u32) -> Vec<TappedMessage> {
    (0..count)
        .map(|i| TappedMessage {
            node: node.into(),
            output: "out".into(),
            metadata: metadata(),
            data: i.to_le_bytes().to_vec(),
        })
        .collect()
}

#[tokio::test]
async fn copies_in_bulk_wait_for_room_in_order_or_are_counted_when_lossy() {
    let taps = Taps::default();
    let df = Uuid::new_v4();
    let (tap, mut rx) = Tap::new(df, None, false);
    taps.add(tap);
    let count = 3 * TAP_BUFFER_MESSAGES as u32;
    let sender = {
        let taps = taps.clone();
        tokio::spawn(async move { taps.copy_many(df, &"a".into(), numbered("a", count)).await })
    };
    let mut got = Vec::new();
    while got.len() < count as usize {
        let (message, _budget) = tokio::time::timeout(TIMEOUT, rx.recv())
            .await
            .expect("copies keep coming as the receiver takes them")
            .expect("the tap is open");
        got.push(u32::from_le_bytes(
            message.data.try_into().expect("4 bytes"),
        ));
    }
    assert_eq!(got, (0..count).collect::<Vec<_>>());
    tokio::time::timeout(TIMEOUT, sender)
        .await
        .expect("the sender went on")
        .expect("no panic");
    assert!(rx.try_recv().is_err());

    let taps = Taps::default();
    let (tap, mut rx) = Tap::new(df, outputs(&[("a", "out")]), true);
    let counts = tap.clone();
    taps.add(tap);
    taps.copy_many(
        df,
        &"a".into(),
        numbered("a", TAP_BUFFER_MESSAGES as u32 + 7),
    )
    .await;
    taps.copy_many(df, &"b".into(), numbered("b", 3)).await; // not tapped
    assert_eq!(counts.dropped(), [("a/out".to_owned(), 7)].into());
    let queued = std::iter::from_fn(|| rx.try_recv().ok()).count();
    assert_eq!(queued, TAP_BUFFER_MESSAGES);
}
