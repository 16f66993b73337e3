//! Data links on loopback: a link opened when asked carries the data, closing it stops it, and
//! with a router daemons linked directly get every message once while the others get it
//! through the router.

use std::time::Duration;

use adora_message::{data_links::DataPeer, Metadata};
use tokio::sync::mpsc;

use super::*;

const TIMEOUT: Duration = Duration::from_secs(20);

async fn plane(peers: &[String]) -> Arc<RemoteDataPlane> {
    let plane = RemoteDataPlane::open("tcp/127.0.0.1:0", peers, None, Tasks::default())
        .await
        .expect("open");
    Arc::new(plane)
}

fn peer(name: &str, plane: &RemoteDataPlane) -> DataPeer {
    DataPeer {
        machine: name.into(),
        endpoints: plane.locators().to_vec(),
    }
}

/// Runs the links of `plane`, returning its reports.
fn run_links(plane: &RemoteDataPlane) -> mpsc::UnboundedReceiver<Envelope<DaemonMessage>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let tasks = Tasks::default();
    tasks.spawn("the data links", plane.links().clone().run(tx, None));
    rx
}

use adora_message::{daemon_to_coordinator::DaemonMessage, envelope::Envelope};

/// Waits for a report where the links are exactly `expected` (peer, up).
async fn links_become(
    reports: &mut mpsc::UnboundedReceiver<Envelope<DaemonMessage>>,
    expected: &[(&str, bool)],
) {
    let wait = async {
        while let Some(report) = reports.recv().await {
            if let DaemonMessage::DataLinks { links } = report.body {
                let got: Vec<(&str, bool)> =
                    links.iter().map(|l| (l.peer.as_str(), l.up)).collect();
                if got == expected {
                    return;
                }
            }
        }
        panic!("reports ended");
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| panic!("links never became {expected:?}"));
}

fn data() -> RemoteKind {
    RemoteKind::Data {
        metadata: Metadata::new(uhlc::HLC::default().new_timestamp()),
    }
}

/// Publishes `n` numbered messages from `from` once a subscriber matched.
async fn publish(from: &Arc<RemoteDataPlane>, dataflow: Uuid, n: u8) {
    let (node, output) = (NodeId::from("cam"), DataId::from("frame"));
    let (publisher, queue) = mpsc::channel(PUBLISH_QUEUE);
    let (matched_tx, mut matched_rx) = mpsc::channel(1);
    let matched = Some((matched_tx, ()));
    from.spawn_publisher((dataflow, &node, &output), queue, matched, None);
    tokio::time::timeout(TIMEOUT, matched_rx.recv())
        .await
        .expect("matched in time");
    for i in 0..n {
        publisher
            .send((data(), Sequence::default(), vec![i], None))
            .await
            .expect("queue");
    }
    // Keep the publisher until the messages are out.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Every payload received within `wait`.
async fn received(rx: &mut mpsc::Receiver<RemoteSample>, wait: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(sample)) = tokio::time::timeout(wait, rx.recv()).await {
        out.extend(sample.payload.to_vec());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_is_opened_when_asked_and_closed_when_no_longer_needed() {
    let (a, b) = (plane(&[]).await, plane(&[]).await);
    let dataflow = Uuid::new_v4();
    let (tx, mut rx) = mpsc::channel::<RemoteSample>(64);
    let _sub = b.spawn_subscriber(dataflow, &"cam".into(), &"frame".into(), tx);
    let mut reports = run_links(&b);
    links_become(&mut reports, &[]).await;
    // Subscribed before the link exists: declared on it once it opens.
    b.links().set_peers(vec![peer("a", &a)]);
    links_become(&mut reports, &[("a", true)]).await;
    publish(&a, dataflow, 5).await;
    assert_eq!(
        received(&mut rx, Duration::from_secs(2)).await,
        [0, 1, 2, 3, 4]
    );
    // A coordinator that does not know `a`'s endpoints (it just restarted) keeps the link.
    let unknown = DataPeer {
        machine: "a".into(),
        endpoints: Vec::new(),
    };
    b.links().set_peers(vec![unknown]);
    tokio::time::sleep(topology::LINK_POLL * 2).await;
    assert_eq!(b.links().linked(), ["a"]);
    // No longer needed: the link closes, nothing arrives any more.
    b.links().set_peers(Vec::new());
    links_become(&mut reports, &[]).await;
    let (node, output) = (NodeId::from("cam"), DataId::from("frame"));
    let (publisher, queue) = mpsc::channel(PUBLISH_QUEUE);
    a.spawn_publisher::<()>((dataflow, &node, &output), queue, None, None);
    publisher
        .send((data(), Sequence::default(), vec![9], None))
        .await
        .expect("queue");
    assert!(received(&mut rx, Duration::from_secs(1)).await.is_empty());
    a.close();
    b.close();
}

/// A router listening on loopback and connecting to `connect`; its locators.
async fn router(connect: &[String]) -> (zenoh::Session, Vec<String>) {
    let config = crate::router::RouterConfig {
        listen: "tcp/127.0.0.1:0".into(),
        connect: connect
            .iter()
            .map(|l| l.trim_start_matches("tcp/").to_owned())
            .collect(),
        tls: None,
        site: None,
    };
    let router = zenoh::open(crate::router::router_config(&config).expect("config"))
        .await
        .expect("router");
    let at = crate::remote::locators(&router).await;
    (router, at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_sites_through_two_routers_every_message_arrives_once() {
    // Site 1: `a` and `b` (linked directly) behind router 1; site 2: `c` behind router 2.
    let (r1, r1_at) = router(&[]).await;
    let (r2, r2_at) = router(&r1_at).await;
    let a = plane(&r1_at).await;
    let b = plane(&r1_at).await;
    let c = plane(&r2_at).await;
    let dataflow = Uuid::new_v4();
    let (b_tx, mut b_rx) = mpsc::channel::<RemoteSample>(64);
    let _b_sub = b.spawn_subscriber(dataflow, &"cam".into(), &"frame".into(), b_tx);
    let (c_tx, mut c_rx) = mpsc::channel::<RemoteSample>(64);
    let _c_sub = c.spawn_subscriber(dataflow, &"cam".into(), &"frame".into(), c_tx);
    let mut b_reports = run_links(&b);
    b.links().set_peers(vec![peer("a", &a)]);
    links_become(&mut b_reports, &[("a", true), (r1_at[0].as_str(), true)]).await;
    let mut c_reports = run_links(&c);
    links_become(&mut c_reports, &[(r2_at[0].as_str(), true)]).await;
    // Both subscriptions reach `a` (the publisher waits for the first only).
    tokio::time::sleep(Duration::from_secs(1)).await;
    publish(&a, dataflow, 20).await;
    let expected: Vec<u8> = (0..20).collect();
    let (got_b, got_c) = (
        received(&mut b_rx, Duration::from_secs(2)).await,
        received(&mut c_rx, Duration::from_secs(2)).await,
    );
    assert_eq!((got_b, got_c), (expected.clone(), expected));
    for p in [a, b, c] {
        p.close();
    }
    let _ = r1.close().await;
    let _ = r2.close().await;
}
