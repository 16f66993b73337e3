//! Join codes, enrollment and revocation, driven through the actor (fake clients and daemons)
//! and, for the HTTP mapping, through the router without a socket.

use std::{sync::Arc, time::Duration};

use adora_message::{
    cli_to_coordinator::ControlRequest,
    control::{ErrorKind, Labels},
    coordinator_to_cli::ControlReply,
    enroll::{
        CreateJoinCode, EnrollRefusalReason as Reason, EnrollRequest, JoinCodeState, MachineRevoked,
    },
};
use adora_pki::{ClusterCa, JoinCode};
use adora_store::{now_ms, JoinCodeRecord, MemoryStore, Store};
use axum::{body::Body, http::Request};
use tokio::sync::oneshot;
use tower::ServiceExt;

use super::EnrollResult;
use crate::{
    actor::{Event, Outgoing},
    testkit::{ClientRx, Harness},
    CoordinatorConfig, Token,
};

/// Upper bound for every await in these tests.
const T: Duration = Duration::from_secs(10);

fn config(ca: Option<Arc<ClusterCa>>) -> CoordinatorConfig {
    let mut config = CoordinatorConfig::new(Token::new("test-token").expect("valid token"));
    config.ca = ca;
    config
}

fn new_ca() -> Arc<ClusterCa> {
    Arc::new(ClusterCa::generate().expect("a CA"))
}

async fn harness(store: &Arc<MemoryStore>, ca: &Arc<ClusterCa>) -> Harness {
    Harness::with_config(config(Some(ca.clone())), store.clone()).await
}

/// The first message on a client's reply stream (replies that wait for the store come later).
async fn answer(rx: &mut ClientRx) -> ControlReply {
    match tokio::time::timeout(T, rx.recv()).await {
        Ok(Some(Outgoing::Message(envelope))) => envelope.body,
        other => panic!("no answer: {other:?}"),
    }
}

async fn call(h: &mut Harness, request: ControlRequest) -> ControlReply {
    let mut rx = h.request(request);
    answer(&mut rx).await
}

fn create_request(uses: u32, machine: Option<&str>, labels: &[(&str, &str)]) -> ControlRequest {
    ControlRequest::CreateJoinCode(CreateJoinCode {
        ttl: Duration::from_secs(1800),
        uses,
        machine: machine.map(str::to_owned),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    })
}

async fn create(h: &mut Harness, uses: u32, machine: Option<&str>) -> JoinCode {
    match call(h, create_request(uses, machine, &[])).await {
        ControlReply::JoinCodeCreated(created) => {
            let code: JoinCode = created.code.parse().expect("a join code");
            assert_eq!(code.id, created.id);
            code
        }
        other => panic!("not created: {other:?}"),
    }
}

fn enroll_request(code: &JoinCode, machine: Option<&str>) -> EnrollRequest {
    let (_key, spki) = adora_pki::new_key().expect("a key");
    EnrollRequest {
        code_id: code.id.clone(),
        secret: code.secret().to_owned(),
        machine_id: machine.map(str::to_owned),
        labels: Labels::new(),
        public_key_der: spki.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

async fn enroll(h: &mut Harness, request: EnrollRequest) -> EnrollResult {
    let (reply, rx) = oneshot::channel();
    h.c.dispatch(Event::Enroll { request, reply });
    tokio::time::timeout(T, rx)
        .await
        .expect("answered in time")
        .expect("answered")
}

async fn refused(h: &mut Harness, request: EnrollRequest) -> (Reason, String) {
    let refusal = enroll(h, request).await.expect_err("refused");
    (refusal.reason, refusal.error)
}

fn fingerprint(cert_pem: &str) -> String {
    let certs = adora_pki::certs_from_pem("issued", cert_pem).expect("a certificate");
    adora_pki::fingerprint(&certs[0])
}

async fn code_state(h: &mut Harness, id: &str) -> (JoinCodeState, u32) {
    let ControlReply::JoinCodes(codes) = call(h, ControlRequest::ListJoinCodes).await else {
        panic!("not a list");
    };
    let code = codes.iter().find(|c| c.id == id).expect("listed");
    (code.state, code.uses)
}

#[tokio::test]
async fn an_enrolled_daemon_gets_a_certificate_for_its_machine_with_the_codes_labels() {
    let (store, ca) = (Arc::new(MemoryStore::new()), new_ca());
    let mut h = harness(&store, &ca).await;
    let created = call(&mut h, create_request(1, None, &[("gpu", "true")])).await;
    let ControlReply::JoinCodeCreated(created) = created else {
        panic!("{created:?}");
    };
    let code: JoinCode = created.code.parse().expect("a join code");
    assert_eq!(code.ca_hash, ca.hash(), "the code pins the cluster CA");
    assert_eq!(
        code_state(&mut h, &code.id).await,
        (JoinCodeState::Valid, 0)
    );
    let stored = store.join_codes().expect("read");
    assert_eq!(stored[0].secret_hash, code.secret_hash());
    assert!(
        !format!("{stored:?}").contains(code.secret()),
        "no secret stored"
    );

    let mut request = enroll_request(&code, Some("robot-1"));
    request.labels = [("gpu", "false"), ("arch", "arm64")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    let response = enroll(&mut h, request).await.expect("enrolled");
    assert_eq!(response.machine_id, "robot-1");
    assert_eq!(response.ca_pem, ca.cert_pem());
    let expected: Labels = [("arch", "arm64"), ("gpu", "true")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    assert_eq!(response.labels, expected, "the code's labels win");
    let fp = fingerprint(&response.cert_pem);
    let entry = h.c.enrollment.registry.lookup(&fp).expect("registered");
    assert_eq!(
        (entry.machine_id.as_str(), entry.revoked),
        ("robot-1", false)
    );
    let certs = store.certs().expect("read");
    assert_eq!(certs.len(), 1);
    assert_eq!(
        (certs[0].fingerprint.as_str(), certs[0].join_code.as_str()),
        (fp.as_str(), code.id.as_str())
    );
    assert_eq!(store.join_codes().expect("read")[0].uses, 1);

    // Single use: the second daemon is refused, and the list says why.
    assert_eq!(code_state(&mut h, &code.id).await, (JoinCodeState::Used, 1));
    let (reason, message) = refused(&mut h, enroll_request(&code, Some("robot-2"))).await;
    assert_eq!(reason, Reason::Used, "{message}");
    assert!(message.contains("already used"), "{message}");
}

#[tokio::test]
async fn every_refusal_says_why() {
    let (store, ca) = (Arc::new(MemoryStore::new()), new_ca());
    let now = now_ms();
    let expired = JoinCode::generate(&ca.hash());
    store
        .put_join_code(&JoinCodeRecord {
            id: expired.id.clone(),
            secret_hash: expired.secret_hash(),
            created_ms: now - 10_000,
            expires_ms: now - 1,
            uses_allowed: 1,
            uses: 0,
            machine: None,
            labels: Labels::new(),
            revoked: false,
        })
        .expect("put");
    let mut h = harness(&store, &ca).await;
    let code = create(&mut h, 1, None).await;

    let mut unknown = enroll_request(&code, Some("r"));
    unknown.code_id = "00000000".into();
    let mut wrong = enroll_request(&code, Some("r"));
    wrong.secret = "0".repeat(32);
    let mut not_hex = enroll_request(&code, Some("r"));
    not_hex.public_key_der = "zz".into();
    let mut not_a_key = enroll_request(&code, Some("r"));
    not_a_key.public_key_der = "0001".into();
    for (request, want, says) in [
        (unknown, Reason::Unknown, "no join code with id `00000000`"),
        (wrong, Reason::WrongSecret, "secret"),
        (
            enroll_request(&expired, Some("r")),
            Reason::Expired,
            "expired",
        ),
        (
            enroll_request(&code, None),
            Reason::InvalidMachineId,
            "--machine-id",
        ),
        (
            enroll_request(&code, Some("a\nb")),
            Reason::InvalidMachineId,
            "control",
        ),
        (not_hex, Reason::InvalidPublicKey, "not hex"),
        (not_a_key, Reason::InvalidPublicKey, "public key"),
    ] {
        let (reason, message) = refused(&mut h, request).await;
        assert_eq!(reason, want, "{message}");
        assert!(message.contains(says), "{want:?}: {message}");
    }
    // No refused attempt took the code's one use.
    assert_eq!(
        code_state(&mut h, &code.id).await,
        (JoinCodeState::Valid, 0)
    );
    assert!(store.certs().expect("read").is_empty());

    let reply = call(
        &mut h,
        ControlRequest::RevokeJoinCode {
            id: code.id.clone(),
        },
    )
    .await;
    assert_eq!(
        reply,
        ControlReply::JoinCodeRevoked {
            id: code.id.clone()
        }
    );
    let (reason, message) = refused(&mut h, enroll_request(&code, Some("r"))).await;
    assert_eq!(reason, Reason::Revoked, "{message}");
    assert_eq!(code_state(&mut h, &code.id).await.0, JoinCodeState::Revoked);
    assert!(store.join_codes().expect("read").iter().any(|c| c.revoked));
    let reply = call(&mut h, ControlRequest::RevokeJoinCode { id: "nope".into() }).await;
    assert!(
        matches!(&reply, ControlReply::Error(e) if e.kind == ErrorKind::NotFound),
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_code_bound_to_a_machine_enrolls_only_that_machine_as_often_as_allowed() {
    let (store, ca) = (Arc::new(MemoryStore::new()), new_ca());
    let mut h = harness(&store, &ca).await;
    let code = create(&mut h, 2, Some("robot-7")).await;
    let (reason, message) = refused(&mut h, enroll_request(&code, Some("other"))).await;
    assert_eq!(reason, Reason::MachineMismatch, "{message}");
    assert!(message.contains("`robot-7`, not `other`"), "{message}");
    let first = enroll(&mut h, enroll_request(&code, None))
        .await
        .expect("ok");
    assert_eq!(first.machine_id, "robot-7", "the code's machine by default");
    let second = enroll(&mut h, enroll_request(&code, Some("robot-7")))
        .await
        .expect("ok");
    assert_eq!(second.machine_id, "robot-7");
    assert_ne!(fingerprint(&first.cert_pem), fingerprint(&second.cert_pem));
    assert_eq!(code_state(&mut h, &code.id).await, (JoinCodeState::Used, 2));
    let (reason, _) = refused(&mut h, enroll_request(&code, None)).await;
    assert_eq!(reason, Reason::Used);
}

#[tokio::test]
async fn revoking_a_machine_revokes_its_certificates_and_disconnects_its_daemon() {
    let (store, ca) = (Arc::new(MemoryStore::new()), new_ca());
    let mut h = harness(&store, &ca).await;
    let code = create(&mut h, 3, None).await;
    let mut fps = Vec::new();
    for machine in ["robot", "robot", "server"] {
        let issued = enroll(&mut h, enroll_request(&code, Some(machine)))
            .await
            .expect("ok");
        fps.push(fingerprint(&issued.cert_pem));
    }
    let (_conn, mut daemon) = h.register("robot", Vec::new());
    let reply = call(
        &mut h,
        ControlRequest::RevokeMachine {
            machine: "robot".into(),
        },
    )
    .await;
    let expected = MachineRevoked {
        machine: "robot".into(),
        certificates: 2,
        disconnected: true,
    };
    assert_eq!(reply, ControlReply::MachineRevoked(expected));
    let mut closed = None;
    while let Ok(out) = daemon.try_recv() {
        if let Outgoing::Close(reason) = out {
            closed = Some(reason);
        }
    }
    let closed = closed.expect("the daemon's connection was closed");
    assert!(closed.contains("revoked"), "{closed}");
    let registry = &h.c.enrollment.registry;
    assert!(registry.lookup(&fps[0]).expect("issued").revoked);
    assert!(registry.lookup(&fps[1]).expect("issued").revoked);
    assert!(!registry.lookup(&fps[2]).expect("issued").revoked);
    let stored = store.certs().expect("read");
    let revoked = |m: &str| {
        stored
            .iter()
            .filter(|c| c.machine_id == m && c.revoked_ms.is_some())
            .count()
    };
    assert_eq!((revoked("robot"), revoked("server")), (2, 0));
    let ControlReply::Certificates(listed) = call(&mut h, ControlRequest::ListCertificates).await
    else {
        panic!("not a list");
    };
    assert_eq!(listed.len(), 3);
    assert_eq!(listed.iter().filter(|c| c.revoked_ms.is_some()).count(), 2);

    // Again: nothing left to revoke, nobody to disconnect; an unknown machine is an error.
    let reply = call(
        &mut h,
        ControlRequest::RevokeMachine {
            machine: "robot".into(),
        },
    )
    .await;
    let expected = MachineRevoked {
        machine: "robot".into(),
        certificates: 0,
        disconnected: false,
    };
    assert_eq!(reply, ControlReply::MachineRevoked(expected));
    let reply = call(
        &mut h,
        ControlRequest::RevokeMachine {
            machine: "ghost".into(),
        },
    )
    .await;
    assert!(
        matches!(&reply, ControlReply::Error(e) if e.kind == ErrorKind::NotFound),
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_restarted_coordinator_knows_its_codes_and_certificates() {
    let (store, ca) = (Arc::new(MemoryStore::new()), new_ca());
    let (code, fp) = {
        let mut h = harness(&store, &ca).await;
        let code = create(&mut h, 2, None).await;
        let issued = enroll(&mut h, enroll_request(&code, Some("robot")))
            .await
            .expect("ok");
        let reply = call(
            &mut h,
            ControlRequest::RevokeMachine {
                machine: "robot".into(),
            },
        )
        .await;
        assert!(
            matches!(reply, ControlReply::MachineRevoked(_)),
            "{reply:?}"
        );
        (code, fingerprint(&issued.cert_pem))
    };
    let mut h = harness(&store, &ca).await;
    let entry = h.c.enrollment.registry.lookup(&fp).expect("loaded");
    assert!(entry.revoked);
    assert_eq!(
        code_state(&mut h, &code.id).await,
        (JoinCodeState::Valid, 1)
    );
    let again = enroll(&mut h, enroll_request(&code, Some("robot")))
        .await
        .expect("ok");
    let fresh =
        h.c.enrollment
            .registry
            .lookup(&fingerprint(&again.cert_pem));
    assert!(
        !fresh.expect("issued").revoked,
        "a new certificate is not revoked"
    );
}

#[tokio::test]
async fn creating_checks_its_parameters_and_needs_a_ca() {
    let (store, ca) = (Arc::new(MemoryStore::new()), new_ca());
    let mut h = harness(&store, &ca).await;
    let mut zero_ttl = create_request(1, None, &[]);
    if let ControlRequest::CreateJoinCode(c) = &mut zero_ttl {
        c.ttl = Duration::ZERO;
    }
    for (request, says) in [
        (create_request(0, None, &[]), "at least 1 use"),
        (zero_ttl, "time to live"),
        (create_request(1, Some(""), &[]), "machine id is empty"),
        (create_request(1, None, &[(" ", "x")]), "empty"),
    ] {
        let reply = call(&mut h, request).await;
        assert!(
            matches!(&reply, ControlReply::Error(e) if e.kind == ErrorKind::InvalidRequest && e.message.contains(says)),
            "{says}: {reply:?}"
        );
    }
    // The answer holds the secret: never as an idempotent (stored) request.
    let idempotent = ControlRequest::Idempotent {
        request_id: uuid::Uuid::new_v4(),
        request: Box::new(create_request(1, None, &[])),
    };
    let mut rx = h.request(idempotent);
    h.c.forward_answers();
    let reply = answer(&mut rx).await;
    assert!(
        matches!(&reply, ControlReply::Error(e) if e.message.contains("idempotent")),
        "{reply:?}"
    );
    assert!(store.join_codes().expect("read").is_empty());

    let mut h = Harness::with_config(config(None), store.clone()).await;
    let reply = call(&mut h, create_request(1, None, &[])).await;
    assert!(
        matches!(&reply, ControlReply::Error(e) if e.message.contains("no cluster CA")),
        "{reply:?}"
    );
    let code = JoinCode::generate(&ca.hash());
    let (reason, _) = refused(&mut h, enroll_request(&code, Some("r"))).await;
    assert_eq!(reason, Reason::NoCa);
}

/// POSTs `body` to the enrollment route of a coordinator on `store`; returns the status and
/// the JSON answer.
async fn post(
    store: Arc<MemoryStore>,
    ca: Option<Arc<ClusterCa>>,
    body: String,
) -> (u16, serde_json::Value) {
    let state = crate::start(
        store,
        config(ca),
        tokio_util::sync::CancellationToken::new(),
    );
    let request = Request::post(adora_message::enroll::ENROLL_PATH)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a request");
    let response = tokio::time::timeout(T, crate::router(state).oneshot(request))
        .await
        .expect("in time")
        .expect("infallible");
    let status = response.status().as_u16();
    let bytes = tokio::time::timeout(T, axum::body::to_bytes(response.into_body(), 1 << 20))
        .await
        .expect("in time")
        .expect("a body");
    (status, serde_json::from_slice(&bytes).expect("JSON"))
}

#[tokio::test]
async fn the_enroll_route_answers_json_with_http_statuses() {
    let (store, ca) = (Arc::new(MemoryStore::new()), new_ca());
    let code = JoinCode::generate(&ca.hash());
    let mut record = JoinCodeRecord {
        id: code.id.clone(),
        secret_hash: code.secret_hash(),
        created_ms: now_ms(),
        expires_ms: now_ms() + 60_000,
        uses_allowed: 1,
        uses: 0,
        machine: Some("robot".into()),
        labels: Labels::new(),
        revoked: false,
    };
    store.put_join_code(&record).expect("put");
    let body = serde_json::to_string(&enroll_request(&code, None)).expect("JSON");
    let (status, json) = post(store.clone(), Some(ca.clone()), body.clone()).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["machine_id"], "robot");
    assert!(json["cert_pem"]
        .as_str()
        .expect("PEM")
        .contains("BEGIN CERTIFICATE"));
    assert_eq!(json["ca_pem"].as_str(), Some(ca.cert_pem()));

    record.expires_ms = now_ms() - 1;
    record.uses = 0;
    store.put_join_code(&record).expect("put");
    let (status, json) = post(store.clone(), Some(ca.clone()), body.clone()).await;
    assert_eq!(status, 403, "{json}");
    assert_eq!(json["reason"], "expired");
    assert!(
        json["error"].as_str().expect("text").contains("expired"),
        "{json}"
    );

    let (status, json) = post(store.clone(), Some(ca), "{\"code\": 1}".into()).await;
    assert_eq!(
        (status, &json["reason"]),
        (400, &"malformed".into()),
        "{json}"
    );
    let (status, json) = post(store, None, body).await;
    assert_eq!((status, &json["reason"]), (503, &"no_ca".into()), "{json}");
}
