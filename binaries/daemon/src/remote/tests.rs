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
fn resolve_listen_picks_a_free_port() {
    let resolved = resolve_listen("tcp/127.0.0.1:0").expect("resolves");
    assert!(resolved.starts_with("tcp/127.0.0.1:"), "{resolved}");
    assert_ne!(resolved, "tcp/127.0.0.1:0");
    assert_eq!(
        resolve_listen("tcp/127.0.0.1:7447").expect("kept"),
        "tcp/127.0.0.1:7447"
    );
    assert!(matches!(
        resolve_listen("udp/1.2.3.4:5"),
        Err(RemoteError::Endpoint(_))
    ));
    assert!(matches!(
        resolve_listen("tcp/nonsense"),
        Err(RemoteError::Endpoint(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_between_two_daemons_in_order_up_to_64_mib() {
    let a_listen = resolve_listen("tcp/127.0.0.1:0").expect("port");
    let b_listen = resolve_listen("tcp/127.0.0.1:0").expect("port");
    let a = Arc::new(RemoteDataPlane::open(&a_listen, &[]).await.expect("open a"));
    let b = Arc::new(
        RemoteDataPlane::open(&b_listen, &[a_listen.clone()])
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
        publisher.send((data(), payload)).await.expect("queue");
    }
    publisher
        .send((RemoteKind::Closed, Vec::new()))
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
    a.close();
    b.close();
}
