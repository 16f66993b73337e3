//! Router tests without a socket (`oneshot`) and protocol tests over a loopback socket, each
//! with its own coordinator on port 0 (no global state, every await under a timeout).

use std::{future::Future, time::Duration};

use adora_client::{ClientError, Connection};
use adora_message::{
    cli_to_coordinator::ControlRequest,
    coordinator_to_cli::ControlReply,
    daemon_to_coordinator::{DaemonMessage, DaemonRegistration},
    envelope::{Envelope, Hello},
};
use adora_store::MemoryStore;
use axum::{body::Body, http::Request};
use tower::ServiceExt;
use uuid::Uuid;

use super::*;

/// Upper bound for every await in these tests.
const T: Duration = Duration::from_secs(10);

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(T, f).await.expect("timed out")
}

fn token() -> Token {
    Token::new("test-token").unwrap()
}

fn state() -> AppState {
    start(
        Arc::new(MemoryStore::new()),
        CoordinatorConfig::new(token()),
        CancellationToken::new(),
    )
}

async fn get(path: &str, auth: Option<&str>) -> (u16, String) {
    let mut req = Request::get(path)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let response = within(router(state()).oneshot(req.body(Body::empty()).unwrap()))
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = within(axum::body::to_bytes(response.into_body(), 1 << 20))
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn health_needs_no_token_and_reports_the_version() {
    let (status, body) = get("/api/health", None).await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""status":"ok""#), "{body}");
    assert!(body.contains(adora_message::ADORA_VERSION), "{body}");
}

#[tokio::test]
async fn websockets_refuse_missing_and_wrong_tokens() {
    for path in ["/api/v1/control", "/api/v1/daemon"] {
        for auth in [None, Some("Bearer wrong"), Some("test-token")] {
            let (status, body) = get(path, auth).await;
            assert_eq!(status, 401, "{path} with {auth:?}");
            assert!(body.contains("authentication failed"), "{body}");
        }
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    // The token is needed (401 without it; `--metrics-public` opts out).
    let (status, _) = get("/metrics", None).await;
    assert_eq!(status, 401);
    let (status, body) = get("/metrics", Some("Bearer test-token")).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("adora_daemons{state=\"connected\"} 0"),
        "{body}"
    );
    assert!(
        body.contains("adora_dataflows{status=\"running\"} 0"),
        "{body}"
    );
}

/// A coordinator on 127.0.0.1:0; returns its address.
async fn serve() -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let shutdown = CancellationToken::new();
    let config = CoordinatorConfig::new(token());
    tokio::spawn(run(
        listener,
        Arc::new(MemoryStore::new()),
        config,
        shutdown.clone(),
    ));
    (addr, shutdown)
}

/// Plain-HTTP client settings with `token` (this crate's tests serve without TLS).
fn plain(token: Option<&str>) -> adora_client::Auth {
    adora_client::Auth::plaintext(token.map(|t| Token::new(t).expect("non-empty token")))
}

async fn client(addr: &str, token: Option<&str>) -> Result<Connection, ClientError> {
    within(Connection::connect(
        addr,
        "/api/v1/control",
        &plain(token),
        Hello::current(),
    ))
    .await
}

async fn call(conn: &mut Connection, request: ControlRequest) -> ControlReply {
    within(conn.send(&Envelope::new(1, request))).await.unwrap();
    within(conn.recv::<Envelope<ControlReply>>())
        .await
        .unwrap()
        .body
}

#[tokio::test]
async fn wrong_token_is_a_clear_client_error() {
    let (addr, shutdown) = serve().await;
    for token in [None, Some("nope")] {
        let err = client(&addr, token).await.err().expect("refused");
        assert!(
            matches!(err, ClientError::AuthenticationFailed { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("authentication failed"), "{err}");
    }
    assert!(client(&addr, Some("test-token")).await.is_ok());
    shutdown.cancel();
}

#[tokio::test]
async fn protocol_version_mismatch_is_rejected_with_both_versions() {
    let (addr, shutdown) = serve().await;
    let hello = Hello {
        protocol_version: 999,
        adora_version: "9.9.9".into(),
    };
    let result = within(Connection::connect(
        &addr,
        "/api/v1/daemon",
        &plain(Some("test-token")),
        hello,
    ))
    .await;
    let err = result.err().expect("rejected");
    let text = err.to_string();
    assert!(matches!(err, ClientError::Rejected { .. }), "{text}");
    assert!(text.contains("protocol version mismatch"), "{text}");
    assert!(text.contains("999") && text.contains("9.9.9"), "{text}");
    shutdown.cancel();
}

#[tokio::test]
async fn malformed_frame_closes_only_that_connection() {
    let (addr, shutdown) = serve().await;
    let mut bad = client(&addr, Some("test-token")).await.unwrap();
    let mut good = client(&addr, Some("test-token")).await.unwrap();
    within(bad.send_raw("{\"id\": 1, \"body\": {\"Launch\": {}}}"))
        .await
        .unwrap();
    let err = within(bad.recv::<Envelope<ControlReply>>())
        .await
        .expect_err("closed");
    assert!(err.to_string().contains("malformed"), "{err}");
    let reply = call(&mut good, ControlRequest::List).await;
    assert_eq!(reply, ControlReply::List(Vec::new()));
    shutdown.cancel();
}

fn registration(machine: &str, instance: Uuid) -> Envelope<DaemonMessage> {
    Envelope::new(
        0,
        DaemonMessage::Register(DaemonRegistration {
            machine_id: Some(machine.into()),
            labels: Default::default(),
            hostname: "host".into(),
            zenoh_locators: vec!["tcp/10.9.8.7:7447".into()],
            running: Vec::new(),
            adora_version: "0.1.0-test".into(),
            instance: Some(instance),
            systemd_unit: None,
            locks: Vec::new(),
            limits: Default::default(),
            site: None,
        }),
    )
}

/// Connects a daemon to the coordinator at `addr` (handshake done, nothing sent).
async fn daemon_connection(addr: &str) -> Connection {
    within(Connection::connect(
        addr,
        "/api/v1/daemon",
        &plain(Some("test-token")),
        Hello::current(),
    ))
    .await
    .unwrap()
}

#[tokio::test]
async fn a_reconnect_of_the_same_daemon_replaces_its_stale_connection() {
    let (addr, shutdown) = serve().await;
    let instance = Uuid::new_v4();
    let mut first = daemon_connection(&addr).await;
    within(first.send(&registration("robot", instance)))
        .await
        .unwrap();
    let mut second = daemon_connection(&addr).await;
    within(second.send(&registration("robot", instance)))
        .await
        .unwrap();
    use adora_message::coordinator_to_daemon::DaemonCommand;
    // Every registration is first told the Zenoh endpoints of the other daemons.
    let peers = within(first.recv::<Envelope<DaemonCommand>>())
        .await
        .unwrap();
    assert_eq!(
        peers.body,
        DaemonCommand::Peers {
            endpoints: Vec::new()
        }
    );
    // A reconnecting daemon's session is open: it is told its data links (none).
    let links = within(first.recv::<Envelope<DaemonCommand>>()).await;
    let err = match links {
        Ok(links) => {
            assert_eq!(links.body, DaemonCommand::DataLinks { peers: Vec::new() });
            within(first.recv::<Envelope<DaemonCommand>>())
                .await
                .expect_err("the stale connection is closed")
        }
        Err(err) => err,
    };
    assert!(err.to_string().contains("replaced"), "{err}");
    let mut cli = client(&addr, Some("test-token")).await.unwrap();
    let ControlReply::Status(status) = call(&mut cli, ControlRequest::Status).await else {
        panic!("expected a status");
    };
    assert_eq!(status.daemons.len(), 1);
    assert!(status.daemons[0].connected);
    assert_eq!(status.daemons[0].machine_id.as_deref(), Some("robot"));
    // The version the daemon registered with is reported (`cluster upgrade` waits for it).
    assert_eq!(status.daemons[0].adora_version, "0.1.0-test");
    shutdown.cancel();
}

#[tokio::test]
async fn a_second_daemon_for_a_connected_machine_is_refused() {
    use adora_message::coordinator_to_daemon::{DaemonCommand, RegistrationRefused};
    let (addr, shutdown) = serve().await;
    let mut first = daemon_connection(&addr).await;
    within(first.send(&registration("robot", Uuid::new_v4())))
        .await
        .unwrap();
    let peers = within(first.recv::<Envelope<DaemonCommand>>())
        .await
        .unwrap();
    assert!(matches!(peers.body, DaemonCommand::Peers { .. }));
    let mut second = daemon_connection(&addr).await;
    within(second.send(&registration("robot", Uuid::new_v4())))
        .await
        .unwrap();
    let answer = within(second.recv::<Envelope<DaemonCommand>>())
        .await
        .unwrap();
    let DaemonCommand::Refused(refused) = answer.body else {
        panic!("expected a refusal, got {:?}", answer.body);
    };
    let RegistrationRefused::MachineIdTaken {
        machine_id,
        hostname,
        address,
        ..
    } = &refused
    else {
        panic!("unexpected refusal {refused:?}");
    };
    assert_eq!(
        (machine_id.as_str(), hostname.as_str(), address.as_deref()),
        ("robot", "host", Some("10.9.8.7"))
    );
    within(second.recv::<Envelope<DaemonCommand>>())
        .await
        .expect_err("the newcomer's connection is closed");
    // The connected daemon keeps its connection: it still gets the coordinator's heartbeats.
    let mut cli = client(&addr, Some("test-token")).await.unwrap();
    let ControlReply::Status(status) = call(&mut cli, ControlRequest::Status).await else {
        panic!("expected a status");
    };
    assert_eq!(status.daemons.len(), 1);
    assert!(status.daemons[0].connected);
    within(first.send(&Envelope::new(
        0,
        DaemonMessage::Heartbeat {
            nodes: Vec::new(),
            machine: None,
        },
    )))
    .await
    .unwrap();
    let ControlReply::Status(status) = call(&mut cli, ControlRequest::Status).await else {
        panic!("expected a status");
    };
    assert!(status.daemons[0].connected, "{status:?}");
    shutdown.cancel();
}

#[tokio::test]
async fn placement_errors_reach_the_client_and_nothing_starts() {
    let (addr, shutdown) = serve().await;
    let mut cli = client(&addr, Some("test-token")).await.unwrap();
    let descriptor = adora_core::Descriptor::parse(
        "nodes:\n  - id: cam\n    path: ./cam\n    _unstable_deploy: { machine: robot }\n",
        "d.yml".as_ref(),
    )
    .unwrap();
    let start = adora_message::cli_to_coordinator::StartDataflow {
        descriptor,
        name: None,
        working_dir: "/".into(),
        attach: false,
        artifacts: Default::default(),
        build: false,
        build_id: None,
    };
    let ControlReply::Error(e) = call(&mut cli, ControlRequest::Start(start)).await else {
        panic!("expected an error");
    };
    assert!(
        e.message
            .contains("node `cam`: no matching daemon for machine id \"robot\""),
        "{e}"
    );
    assert_eq!(
        call(&mut cli, ControlRequest::List).await,
        ControlReply::List(Vec::new())
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_new_daemon_is_told_the_zenoh_endpoints_of_the_others() {
    use adora_message::coordinator_to_daemon::DaemonCommand;
    let (addr, shutdown) = serve().await;
    let register = |machine: &'static str, endpoint: &'static str| {
        let addr = addr.clone();
        async move {
            let mut conn = within(Connection::connect(
                &addr,
                "/api/v1/daemon",
                &plain(Some("test-token")),
                Hello::current(),
            ))
            .await
            .unwrap();
            let mut reg = registration(machine, Uuid::new_v4());
            if let DaemonMessage::Register(r) = &mut reg.body {
                r.zenoh_locators = vec![endpoint.into()];
            }
            within(conn.send(&reg)).await.unwrap();
            let peers = within(conn.recv::<Envelope<DaemonCommand>>())
                .await
                .unwrap();
            (conn, peers.body)
        }
    };
    let (_a, peers_a) = register("a", "tcp/10.1.0.1:7000").await;
    assert_eq!(peers_a, DaemonCommand::Peers { endpoints: vec![] });
    let (_b, peers_b) = register("b", "tcp/10.1.0.2:7000").await;
    assert_eq!(
        peers_b,
        DaemonCommand::Peers {
            endpoints: vec!["tcp/10.1.0.1:7000".into()]
        }
    );
    let (_c, peers_c) = register("c", "tcp/10.1.0.3:7000").await;
    assert_eq!(
        peers_c,
        DaemonCommand::Peers {
            endpoints: vec!["tcp/10.1.0.1:7000".into(), "tcp/10.1.0.2:7000".into()]
        }
    );
    shutdown.cancel();
}

#[tokio::test]
async fn run_returns_once_its_connections_and_actor_stopped() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let shutdown = CancellationToken::new();
    let config = CoordinatorConfig::new(token());
    let server = tokio::spawn(run(
        listener,
        Arc::new(MemoryStore::new()),
        config,
        shutdown.clone(),
    ));
    let mut conn = client(&addr, Some("test-token")).await.unwrap();
    assert_eq!(
        call(&mut conn, ControlRequest::List).await,
        ControlReply::List(Vec::new())
    );
    // A client's `ShutdownCoordinator` stops it (without cancelling the caller's token).
    let reply = call(&mut conn, ControlRequest::ShutdownCoordinator).await;
    assert!(
        matches!(reply, ControlReply::ShuttingDown { .. }),
        "{reply:?}"
    );
    within(server).await.unwrap().unwrap();
    assert!(!shutdown.is_cancelled());
    // Its connection was closed on the way out.
    assert!(within(conn.recv::<Envelope<ControlReply>>()).await.is_err());
}
