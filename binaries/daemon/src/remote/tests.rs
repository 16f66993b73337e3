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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_between_two_daemons_in_order_up_to_64_mib() {
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
    let dataflow = Uuid::new_v4();
    let (node, output) = (NodeId::from("camera"), DataId::from("frames"));

    let (tx, mut rx) = mpsc::channel::<RemoteSample>(16);
    let _sub = b.spawn_subscriber(dataflow, &node, &output, tx);
    let (publisher, queue) = mpsc::channel(PUBLISH_QUEUE);
    let (matched_tx, mut matched_rx) = mpsc::channel(1);
    a.spawn_publisher(
        dataflow,
        &node,
        &output,
        queue,
        Some((matched_tx, "matched")),
    );
    // Nothing is sent before the subscriber on the other daemon matched: nothing is lost.
    let matched = tokio::time::timeout(TIMEOUT, matched_rx.recv())
        .await
        .expect("matched in time");
    assert_eq!(matched, Some("matched"));

    let sizes = [0usize, 8, 64 * 1024, 4 << 20, 64 << 20];
    for (i, size) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..*size).map(|j| (j as u8) ^ (i as u8)).collect();
        let sequence = Sequence {
            stream: 1,
            seq: i as u64,
            dropped: 0,
        };
        publisher
            .send((data(), sequence, payload, None))
            .await
            .expect("queue");
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
