//! Zenoh over mutual TLS (QUIC, or TLS over TCP) between daemons: two daemons with certificates
//! of one cluster CA exchange data; a session without a certificate, or with one of another CA, gets no link to a
//! daemon (it can neither read nor inject). Loopback only.

use std::time::Duration;

use adora_message::{daemon_to_daemon::encode_header, Metadata};
use adora_pki::{ClusterCa, Identity};

use crate::config::SecureTransport;

use super::*;

const TIMEOUT: Duration = Duration::from_secs(20);
/// How long an intruder gets to connect, read and inject before the test concludes it cannot.
const INTRUDER_WINDOW: Duration = Duration::from_secs(4);

fn data() -> RemoteKind {
    RemoteKind::Data {
        metadata: Metadata::new(uhlc::HLC::default().new_timestamp()),
    }
}

/// A daemon identity for `machine` issued by `ca`, saved in a temp dir.
fn identity(ca: &ClusterCa, machine: &str) -> (tempfile::TempDir, ZenohTls) {
    let (key_pem, spki) = adora_pki::new_key().expect("a key");
    let issued = ca.issue_daemon(machine, &spki).expect("issued");
    let dir = tempfile::tempdir().expect("a temp dir");
    Identity {
        machine_id: machine.to_owned(),
        ca_pem: ca.cert_pem().to_owned(),
        cert_pem: issued.cert_pem,
        key_pem,
    }
    .save(dir.path())
    .expect("saved");
    let tls = ZenohTls::from_identity_dir(dir.path());
    (dir, tls)
}

async fn open(tls: &ZenohTls, peers: &[String]) -> Arc<RemoteDataPlane> {
    let plane = tokio::time::timeout(
        TIMEOUT,
        RemoteDataPlane::open("tcp/127.0.0.1:0", peers, Some(tls), Tasks::default()),
    )
    .await
    .expect("opened in time")
    .expect("opens");
    Arc::new(plane)
}

async fn peer_count(session: &zenoh::Session) -> usize {
    session.info().peers_zid().await.count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_of_one_cluster_exchange_data_over_quic() {
    let ca = ClusterCa::generate().expect("a CA");
    let ((_da, tls_a), (_db, tls_b)) = (identity(&ca, "a"), identity(&ca, "b"));
    let a = open(&tls_a, &[]).await;
    // Both encrypted transports listen; b connects with QUIC.
    let schemes = |plane: &RemoteDataPlane| {
        let mut schemes: Vec<String> = plane
            .locators()
            .iter()
            .map(|l| {
                l.split_once("/127.0.0.1:")
                    .expect("on loopback")
                    .0
                    .to_owned()
            })
            .collect();
        schemes.sort();
        schemes
    };
    assert_eq!(schemes(&a), ["quic", "tls"], "{:?}", a.locators());
    let b = open(&tls_b, a.locators()).await;
    assert_eq!(schemes(&b), ["quic", "tls"]);

    exchange(&a, &b, b"over quic").await;
    assert_eq!(link_schemes(&b.session).await, ["quic"]);
    a.close();
    b.close();
}

/// The schemes of a session's links (`quic`, `tls`).
async fn link_schemes(session: &zenoh::Session) -> Vec<String> {
    session
        .info()
        .links()
        .await
        .map(|link| link.dst().protocol().as_str().to_owned())
        .collect()
}

/// `a` publishes `payload` and `b`, connected to it, receives it.
async fn exchange(a: &Arc<RemoteDataPlane>, b: &Arc<RemoteDataPlane>, payload: &[u8]) {
    let dataflow = Uuid::new_v4();
    let (node, output) = (NodeId::from("camera"), DataId::from("frames"));
    let (tx, mut rx) = mpsc::channel::<RemoteSample>(4);
    let _sub = b.spawn_subscriber(dataflow, &node, &output, tx);
    let (publisher, queue) = mpsc::channel(PUBLISH_QUEUE);
    let (matched_tx, mut matched_rx) = mpsc::channel(1);
    let matched = Some((matched_tx, ()));
    a.spawn_publisher((dataflow, &node, &output), queue, matched, None);
    tokio::time::timeout(TIMEOUT, matched_rx.recv())
        .await
        .expect("the subscriber matched");
    publisher
        .send((data(), Sequence::default(), payload.to_vec(), None))
        .await
        .expect("queued");
    let sample = tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .expect("in time")
        .expect("a sample");
    assert_eq!(sample.payload.to_vec(), payload);
    assert_eq!(peer_count(&a.session).await, 1);
}

/// Asserts that `intruder`, told to connect to `daemon`, gets no link: it receives nothing the
/// daemon publishes, and nothing it publishes reaches the daemon.
async fn assert_shut_out(daemon: &Arc<RemoteDataPlane>, intruder: &zenoh::Session) {
    let dataflow = Uuid::new_v4();
    let (node, output) = (NodeId::from("camera"), DataId::from("frames"));
    let key = output_key(dataflow, &node, &output);
    let (tx, mut injected) = mpsc::channel::<RemoteSample>(4);
    let _sub = daemon.spawn_subscriber(dataflow, &node, &output, tx);
    let stolen = intruder
        .declare_subscriber(key.clone())
        .await
        .expect("a local subscriber");
    let deadline = tokio::time::Instant::now() + INTRUDER_WINDOW;
    while tokio::time::Instant::now() < deadline {
        daemon
            .session
            .put(key.clone(), b"secret".to_vec())
            .attachment(encode_header(data(), Sequence::default()))
            .await
            .expect("put");
        intruder
            .put(key.clone(), b"injected".to_vec())
            .attachment(encode_header(data(), Sequence::default()))
            .await
            .expect("put");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each side also hears its own puts (local delivery); only the other side's count.
    while let Some(sample) = stolen.try_recv().expect("open") {
        let payload = sample.payload().to_bytes();
        assert_ne!(&payload[..], b"secret", "the intruder read data");
    }
    while let Ok(sample) = injected.try_recv() {
        assert_ne!(
            sample.payload.to_vec(),
            b"injected",
            "the intruder injected data"
        );
    }
    assert_eq!(
        peer_count(&daemon.session).await,
        0,
        "the daemon has a peer"
    );
    assert_eq!(peer_count(intruder).await, 0, "the intruder has a link");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_a_certificate_cannot_connect() {
    let ca = ClusterCa::generate().expect("a CA");
    let (_dir, tls) = identity(&ca, "a");
    let daemon = open(&tls, &[]).await;
    // It even trusts the cluster CA: only its missing client certificate keeps it out.
    let mut config = zenoh::Config::default();
    let ca_file = serde_json::to_string(&tls.ca.display().to_string()).expect("json");
    for (key, value) in [
        ("mode", "\"peer\"".to_owned()),
        ("listen/endpoints", "[]".to_owned()),
        (
            "connect/endpoints",
            serde_json::to_string(daemon.locators()).expect("json"),
        ),
        ("scouting/multicast/enabled", "false".to_owned()),
        ("connect/exit_on_failure", "false".to_owned()),
        ("transport/link/tls/root_ca_certificate", ca_file),
        (
            "transport/link/tls/verify_name_on_connect",
            "false".to_owned(),
        ),
    ] {
        config.insert_json5(key, &value).expect("valid config");
    }
    let intruder = tokio::time::timeout(TIMEOUT, zenoh::open(config))
        .await
        .expect("in time")
        .expect("opens (its link attempts fail in the background)");
    assert_shut_out(&daemon, &intruder).await;
    let _ = intruder.close().await;
    daemon.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_of_another_cluster_cannot_connect() {
    let (ca, other_ca) = (
        ClusterCa::generate().expect("a CA"),
        ClusterCa::generate().expect("another CA"),
    );
    let ((_da, tls), (_dx, foreign)) = (identity(&ca, "a"), identity(&other_ca, "a"));
    let daemon = open(&tls, &[]).await;
    // Over either transport.
    for transport in [SecureTransport::Quic, SecureTransport::Tls] {
        let foreign = ZenohTls {
            transport,
            ..foreign.clone()
        };
        let intruder = open(&foreign, daemon.locators()).await;
        assert_shut_out(&daemon, &intruder.session).await;
        intruder.close();
    }
    daemon.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_plain_daemons_do_not_dial_each_other() {
    let ca = ClusterCa::generate().expect("a CA");
    let (_dir, tls) = identity(&ca, "a");
    let peers = [
        "tcp/10.0.0.1:7447".to_owned(),
        "tls/10.0.0.2:7447".to_owned(),
    ];
    assert_eq!(
        session_config::usable_peers(&peers, Some(&tls)),
        ["tls/10.0.0.2:7447"]
    );
    assert_eq!(
        session_config::usable_peers(&peers, None),
        ["tcp/10.0.0.1:7447"]
    );
    assert!(session_config::usable_peers(&peers[..1], Some(&tls)).is_empty());
}

#[test]
fn a_peer_offering_both_encrypted_transports_is_reached_with_the_preferred_one() {
    let ca = ClusterCa::generate().expect("a CA");
    let (_dir, quic) = identity(&ca, "a");
    let both = [
        "tls/10.0.0.2:7447".to_owned(),
        "quic/10.0.0.2:7447".to_owned(),
    ];
    assert_eq!(
        session_config::usable_peers(&both, Some(&quic)),
        ["quic/10.0.0.2:7447"]
    );
    let tls = ZenohTls {
        transport: SecureTransport::Tls,
        ..quic.clone()
    };
    assert_eq!(
        session_config::usable_peers(&both, Some(&tls)),
        ["tls/10.0.0.2:7447"]
    );
    // A daemon of an older version offers only TLS: a QUIC daemon falls back to it.
    assert_eq!(
        session_config::usable_peers(&both[..1], Some(&quic)),
        ["tls/10.0.0.2:7447"]
    );
}

/// A daemon connecting with TLS (a network without UDP, or an older version) and one connecting
/// with QUIC exchange data: each listens on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_daemon_and_a_quic_daemon_exchange_data() {
    let ca = ClusterCa::generate().expect("a CA");
    let ((_da, quic), (_db, tls)) = (identity(&ca, "a"), identity(&ca, "b"));
    let tls = ZenohTls {
        transport: SecureTransport::Tls,
        ..tls
    };
    let a = open(&quic, &[]).await;
    let b = open(&tls, a.locators()).await;
    exchange(&a, &b, b"tls to quic").await;
    assert_eq!(link_schemes(&b.session).await, ["tls"]);
    a.close();
    b.close();
}

/// A link whose QUIC gets no answer (UDP dropped on the way; here the peer's QUIC locator is a
/// UDP port that reads nothing) is opened again over TLS after `TRANSPORT_FALLBACK`, and the
/// data flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_whose_quic_gets_no_answer_falls_back_to_tls() {
    let ca = ClusterCa::generate().expect("a CA");
    let ((_da, tls_a), (_db, tls_b)) = (identity(&ca, "a"), identity(&ca, "b"));
    let a = open(&tls_a, &[]).await;
    let b = open(&tls_b, &[]).await;
    let black_hole = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP port");
    let mut endpoints: Vec<String> = a
        .locators()
        .iter()
        .filter(|l| l.starts_with("tls/"))
        .cloned()
        .collect();
    endpoints.push(format!("quic/{}", black_hole.local_addr().expect("bound")));
    let (reports, _reports) = tokio::sync::mpsc::unbounded_channel();
    let tasks = Tasks::default();
    tasks.spawn("the data links", b.links().clone().run(reports, None));
    b.links()
        .set_peers(vec![adora_message::data_links::DataPeer {
            machine: "a".into(),
            endpoints,
        }]);
    // b reaches a only through its link session: the data arrives once it fell back to TLS.
    let started = std::time::Instant::now();
    exchange(&a, &b, b"after the fallback").await;
    assert!(
        started.elapsed() >= topology::TRANSPORT_FALLBACK,
        "the data came before the fallback: {:?}",
        started.elapsed()
    );
    a.close();
    b.close();
}
