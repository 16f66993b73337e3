use std::time::Duration;

use adora_message::Metadata;

use super::*;

const TIMEOUT: Duration = Duration::from_secs(20);

fn data() -> RemoteKind {
    RemoteKind::Data {
        metadata: Metadata::new(uhlc::HLC::default().new_timestamp()),
    }
}

#[test]
fn the_listen_endpoint_takes_the_link_address_for_an_unspecified_ip() {
    let link = Some("10.1.2.3".parse().expect("an ip"));
    assert_eq!(
        listen_endpoint("tcp/0.0.0.0:0", link, None).expect("valid"),
        "tcp/10.1.2.3:0"
    );
    assert_eq!(
        listen_endpoint("tcp/127.0.0.1:7447", link, None).expect("kept"),
        "tcp/127.0.0.1:7447"
    );
    assert_eq!(
        listen_endpoint("tcp/0.0.0.0:7447", None, None).expect("kept"),
        "tcp/0.0.0.0:7447"
    );
    assert!(matches!(
        listen_endpoint("udp/1.2.3.4:5", link, None),
        Err(RemoteError::Endpoint(_))
    ));
    // With the cluster identity the same address is served over QUIC (and TLS, see
    // `session_config`).
    let tls = ZenohTls::from_identity_dir(std::path::Path::new("/id"));
    assert_eq!(
        listen_endpoint("tcp/0.0.0.0:0", link, Some(&tls)).expect("valid"),
        "quic/10.1.2.3:0"
    );
    assert_eq!(
        listen_endpoint("quic/127.0.0.1:7447", None, None).expect("valid"),
        "tcp/127.0.0.1:7447"
    );
    assert_eq!(
        listen_endpoint("tls/127.0.0.1:7447", None, None).expect("valid"),
        "tcp/127.0.0.1:7447"
    );
    assert!(matches!(
        parse_listen("tcp/nonsense"),
        Err(RemoteError::Endpoint(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zenoh_binds_port_zero_itself_and_reports_the_port() {
    let plane = RemoteDataPlane::open("tcp/127.0.0.1:0", &[], None, Tasks::default())
        .await
        .expect("open");
    let locators = plane.locators();
    assert_eq!(locators.len(), 1, "{locators:?}");
    let addr = parse_listen(&locators[0]).expect("a tcp locator");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0, "{locators:?}");
    // The port is really bound: a second bind of it fails.
    assert!(std::net::TcpListener::bind(addr).is_err());
}

/// Queues `payload` as message `n` (stream 1) for a publisher.
async fn publish(publisher: &mpsc::Sender<Outgoing>, n: usize, payload: Vec<u8>) {
    let sequence = Sequence {
        stream: 1,
        seq: n as u64,
        dropped: 0,
    };
    publisher
        .send((data(), sequence, payload, None))
        .await
        .expect("queue");
}

/// Two daemons' planes on loopback (plain TCP), `b` connected to `a`.
async fn connected_pair() -> (Arc<RemoteDataPlane>, Arc<RemoteDataPlane>) {
    let a = Arc::new(
        RemoteDataPlane::open("tcp/127.0.0.1:0", &[], None, Tasks::default())
            .await
            .expect("open a"),
    );
    let b = Arc::new(
        RemoteDataPlane::open("tcp/127.0.0.1:0", a.locators(), None, Tasks::default())
            .await
            .expect("open b"),
    );
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_between_two_daemons_in_order_up_to_64_mib() {
    let (a, b) = connected_pair().await;
    let dataflow = Uuid::new_v4();
    let (node, output) = (NodeId::from("camera"), DataId::from("frames"));

    let (tx, mut rx) = mpsc::channel::<RemoteSample>(16);
    let _sub = b.spawn_subscriber(dataflow, &node, &output, tx);
    let (publisher, queue) = mpsc::channel(PUBLISH_QUEUE);
    let (matched_tx, mut matched_rx) = mpsc::channel(1);
    let matched = Some((matched_tx, "matched"));
    a.spawn_publisher((dataflow, &node, &output), queue, matched, None);
    // Nothing is sent before the subscriber on the other daemon matched: nothing is lost.
    let matched = tokio::time::timeout(TIMEOUT, matched_rx.recv())
        .await
        .expect("matched in time");
    assert_eq!(matched, Some("matched"));

    let sizes = [0usize, 8, 64 * 1024, 4 << 20, 64 << 20];
    for (i, size) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..*size).map(|j| (j as u8) ^ (i as u8)).collect();
        publish(&publisher, i, payload).await;
    }
    let end = Sequence {
        stream: 1,
        seq: sizes.len() as u64,
        dropped: 0,
    };
    publisher
        .send((RemoteKind::Closed, end, Vec::new(), None))
        .await
        .expect("queue");
    for (i, size) in sizes.iter().enumerate() {
        let sample = tokio::time::timeout(TIMEOUT, rx.recv())
            .await
            .expect("in time")
            .expect("open");
        assert_eq!(
            (sample.node.as_str(), sample.output.as_str()),
            ("camera", "frames")
        );
        assert!(matches!(sample.kind, RemoteKind::Data { .. }));
        assert_eq!(sample.sequence.map(|s| s.seq), Some(i as u64));
        assert_eq!(sample.payload.len(), *size, "message {i} in order");
        assert!(sample
            .payload
            .to_vec()
            .iter()
            .enumerate()
            .all(|(j, b)| *b == (j as u8) ^ (i as u8)));
    }
    let closed = tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(closed.kind, RemoteKind::Closed);
    assert_eq!(closed.sequence, Some(end));
    a.close();
    b.close();
}

/// What a subscription hands over, as the daemon's actor gets it: one sample or a batch, and
/// counts of missing messages (from a feed).
#[derive(Debug)]
enum Got {
    One(Box<RemoteSample>),
    Batch(Vec<Got>),
    Missing(feed::Missing),
}

impl From<RemoteSample> for Got {
    fn from(sample: RemoteSample) -> Self {
        Got::One(Box::new(sample))
    }
}

impl FromRemote for Got {
    fn batch(_dataflow: Uuid, samples: Vec<Self>) -> Vec<Self> {
        vec![Got::Batch(samples)]
    }

    fn missing(_: Uuid, _: NodeId, _: DataId, missing: feed::Missing) -> Option<Self> {
        Some(Got::Missing(missing))
    }
}

/// A publisher of `node/output` on `a` (dataflow nil), once a subscriber matched it.
async fn matched_publisher(
    a: &Arc<RemoteDataPlane>,
    node: &NodeId,
    output: &DataId,
) -> mpsc::Sender<Outgoing> {
    let (publisher, queue) = mpsc::channel(PUBLISH_QUEUE);
    let (matched_tx, mut matched_rx) = mpsc::channel(1);
    let matched = Some((matched_tx, ()));
    a.spawn_publisher((Uuid::nil(), node, output), queue, matched, None);
    tokio::time::timeout(TIMEOUT, matched_rx.recv())
        .await
        .expect("matched in time");
    publisher
}

/// Publishes `count` messages of `size` bytes (byte `i` of message `n` is `n ^ i`) from `a` to
/// a subscriber on `b` whose receiver reads nothing until all are published, then returns what
/// it received, as handed over.
async fn burst(count: usize, size: usize) -> Vec<Got> {
    let (a, b) = connected_pair().await;
    let (node, output) = (NodeId::from("lidar"), DataId::from("points"));
    let (tx, mut rx) = mpsc::channel::<Got>(1);
    let _sub = b.spawn_subscriber(Uuid::nil(), &node, &output, tx);
    let publisher = matched_publisher(&a, &node, &output).await;
    for n in 0..count {
        let payload = (0..size).map(|i| (n ^ i) as u8).collect();
        publish(&publisher, n, payload).await;
    }
    // Let the messages pile up in the subscription while its receiver reads nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut got = Vec::new();
    let mut samples = 0;
    while samples < count {
        let mut next = tokio::time::timeout(TIMEOUT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {samples} of {count} message(s) arrived in time"))
            .expect("open");
        // Their share of the receive budget comes back, as once the daemon copied them.
        samples += match &mut next {
            Got::One(s) => {
                s._budget = None;
                1
            }
            Got::Batch(batch) => {
                for g in batch.iter_mut() {
                    if let Got::One(s) = g {
                        s._budget = None;
                    }
                }
                batch.len()
            }
            Got::Missing(m) => panic!("a subscription without a feed counted {m:?}"),
        };
        got.push(next);
    }
    a.close();
    b.close();
    got
}

/// The samples of `got` in order, checked against what [`burst`] sent.
fn flatten_checked(got: Vec<Got>, size: usize) -> Vec<RemoteSample> {
    let mut flat = Vec::new();
    got.into_iter().for_each(|g| flatten(g, &mut flat));
    let samples: Vec<RemoteSample> = flat
        .into_iter()
        .map(|g| match g {
            Got::One(s) => *s,
            other => panic!("not a sample: {other:?}"),
        })
        .collect();
    for (n, sample) in samples.iter().enumerate() {
        assert_eq!(sample.sequence.map(|s| s.seq), Some(n as u64), "in order");
        assert_eq!(sample.payload.len(), size);
        let bytes = sample.payload.to_vec();
        assert!(bytes.iter().enumerate().all(|(i, b)| *b == (n ^ i) as u8));
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_waiting_together_are_handed_over_as_one_batch_in_order() {
    let got = burst(300, 8).await;
    let batches: Vec<usize> = got
        .iter()
        .filter_map(|g| match g {
            Got::Batch(batch) => Some(batch.len()),
            _ => None,
        })
        .collect();
    assert!(!batches.is_empty(), "300 waiting messages came one by one");
    assert!(
        batches.iter().all(|&n| (2..=RECEIVE_BATCH).contains(&n)),
        "batch sizes {batches:?}"
    );
    assert_eq!(flatten_checked(got, 8).len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_never_waits_for_the_receive_budget_it_holds_itself() {
    // 40 × 8 MiB waiting is more than the whole receive budget (256 MiB) and fewer than a full
    // batch: a batch that kept its samples while waiting for more budget would wait forever.
    let size = 8 << 20;
    let count = RECEIVE_BUDGET / size + 8;
    assert!(count < RECEIVE_BATCH);
    let got = burst(count, size).await;
    assert_eq!(flatten_checked(got, size).len(), count);
}

#[tokio::test]
async fn byte_budget_bounds_what_is_held_and_lets_oversized_messages_pass_alone() {
    let budget = ByteBudget::new(4 << 20);
    let a = budget.try_acquire(3 << 20).expect("fits");
    assert!(budget.try_acquire(2 << 20).is_none(), "only 1 MiB left");
    let b = budget.try_acquire(1 << 20).expect("exactly fits");
    drop(a);
    // Larger than the whole budget: waits until everything else is returned, then passes alone.
    let waiting = tokio::spawn({
        let budget = budget.clone();
        async move { budget.acquire(64 << 20).await.is_some() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "1 MiB is still held");
    drop(b);
    assert!(tokio::time::timeout(TIMEOUT, waiting)
        .await
        .expect("in time")
        .expect("joins"));
}

fn flatten(got: Got, out: &mut Vec<Got>) {
    match got {
        Got::Batch(all) => all.into_iter().for_each(|g| flatten(g, out)),
        other => out.push(other),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fed_subscription_writes_into_the_lanes_and_tells_the_daemon_only_what_it_must_know() {
    let (a, b) = connected_pair().await;
    let (node, output) = (NodeId::from("imu"), DataId::from("accel"));
    let fixture = feed::tests::fixture(1);
    let feed = fixture.feed;
    let (tx, mut rx) = mpsc::channel::<Got>(16);
    let _sub = b.spawn_fed_subscriber(Uuid::nil(), (&node, &output), tx, Some(feed));
    let publisher = matched_publisher(&a, &node, &output).await;
    // 0 and 2 are small (message 1 never sent: lost on the way), 3 is 64 KiB, 4 is small
    // again, then the end.
    for (n, size) in [(0, 8), (2, 100), (3, 64 << 10), (4, 8)] {
        publish(&publisher, n, vec![n as u8; size]).await;
    }
    let end = Sequence {
        stream: 1,
        seq: 5,
        dropped: 0,
    };
    publisher
        .send((RemoteKind::Closed, end, Vec::new(), None))
        .await
        .expect("queue");

    let mut got = Vec::new();
    while got.len() < 2 {
        let next = tokio::time::timeout(TIMEOUT, rx.recv())
            .await
            .expect("in time")
            .expect("open");
        flatten(next, &mut got);
    }
    // The 64 KiB message is in a sample of the daemon's pool that the lane alone holds (its
    // holder bit): the daemon hears nothing of it, nor of the small ones.
    let [Got::Missing(missing), Got::One(closed)] = &got[..] else {
        panic!("expected the missing count and the end: {got:?}");
    };
    assert_eq!(
        missing[1],
        (adora_message::stats::RemoteDropReason::Link, 1)
    );
    assert_eq!((&closed.kind, closed.sequence), (&RemoteKind::Closed, None));
    // The lane has all four, in order, numbered 1 to 4.
    assert_eq!(
        feed::tests::taken(&fixture.lanes[0]),
        [(1, 0, 8), (2, 2, 100), (3, 3, 64 << 10), (4, 4, 8)]
    );
    a.close();
    b.close();
}
