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
