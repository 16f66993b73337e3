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
    let a = RemoteDataPlane::open(&a_listen, &[]).await.expect("open a");
    let b = RemoteDataPlane::open(&b_listen, &[a_listen.clone()])
        .await
        .expect("open b");
    let dataflow = Uuid::new_v4();
    let (node, output) = (NodeId::from("camera"), DataId::from("frames"));

    let (tx, mut rx) = mpsc::channel(16);
    let _sub = b
        .subscribe(dataflow, &node, &output, tx)
        .await
        .expect("subscribe");
    let publisher = a.publish(dataflow, &node, &output).await.expect("publish");

    // Wait until the subscription has propagated: send probes until one arrives.
    let probe = tokio::time::timeout(TIMEOUT, async {
        loop {
            publisher
                .send((data(), b"probe".to_vec()))
                .await
                .expect("queue");
            if let Ok(Some(s)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                return s;
            }
        }
    })
    .await
    .expect("the subscription reached the publisher");
    assert_eq!(probe.payload, b"probe");
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {}

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
