//! Secure by default, end to end with the real binary on loopback: a daemon joins with a
//! one-time join code, keeps its identity across a kill -9, and is locked out once its machine
//! is revoked; used, expired, revoked and wrong-cluster codes are refused with the reason; a
//! client without credentials gets nothing.

use std::{path::Path, process::Command, time::Duration};

use adora_test_support::{
    bin, https, run_with_timeout, services::Coordinator, temp_dir, wait_until, ChildGuard, Output,
};

/// Upper bound of one CLI command.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for a condition to become true.
const WAIT: Duration = Duration::from_secs(30);

/// `adora cluster join-code create <args>`: the code printed.
fn create_code(coordinator: &Coordinator, args: &[&str]) -> String {
    let mut cmd = coordinator.cli();
    cmd.args(["cluster", "join-code", "create"]).args(args);
    let out = run_with_timeout(cmd, TIMEOUT);
    assert!(out.status.success(), "{out}");
    out.stdout.trim().to_owned()
}

/// `adora daemon` for `machine` with its own state directory `state` (no token, no CA there),
/// with `code` in `ADORA_JOIN_CODE` when given.
fn daemon_command(
    coordinator: &Coordinator,
    state: &Path,
    machine: &str,
    code: Option<&str>,
) -> Command {
    let mut cmd = Command::new(bin("adora"));
    cmd.env("ADORA_STATE_DIR", state)
        .env_remove("ADORA_TOKEN")
        .env("RUST_LOG", "info")
        .args(["daemon", "--machine-id", machine])
        .args(["--coordinator-addr", "127.0.0.1", "--coordinator-port"])
        .arg(coordinator.port());
    if let Some(code) = code {
        cmd.env("ADORA_JOIN_CODE", code);
    }
    cmd
}

/// A daemon that must be refused: it exits with an error saying `why`.
fn assert_refused(coordinator: &Coordinator, machine: &str, code: &str, why: &str) -> Output {
    let state = temp_dir();
    let out = run_with_timeout(
        daemon_command(coordinator, state.path(), machine, Some(code)),
        TIMEOUT,
    );
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains(why), "expected `{why}`:\n{out}");
    println!("refused ({why}): {}", out.stderr.trim());
    assert!(
        !state
            .path()
            .join("identity")
            .join(machine)
            .join("daemon.pem")
            .exists(),
        "a refused daemon kept an identity"
    );
    out
}

/// The `adora status --json` entry of the connected daemon of `machine`.
fn daemon_status(coordinator: &Coordinator, machine: &str) -> Option<serde_json::Value> {
    let mut cmd = coordinator.cli();
    cmd.args(["status", "--json"]);
    let out = run_with_timeout(cmd, TIMEOUT);
    let status = serde_json::from_str::<serde_json::Value>(&out.stdout).ok()?;
    status["daemons"]
        .as_array()?
        .iter()
        .find(|d| d["machine_id"] == machine && d["connected"] == true)
        .cloned()
}

fn connected(coordinator: &Coordinator, machine: &str) -> bool {
    daemon_status(coordinator, machine).is_some()
}

#[test]
fn join_codes_identities_and_revocation() {
    let state = temp_dir();
    let coordinator = Coordinator::start(state.path(), "127.0.0.1");

    // Enroll with a single-use code bound to the machine.
    let code = create_code(&coordinator, &["--machine", "m1"]);
    assert!(code.starts_with("ADORA1."), "{code}");
    let m1 = temp_dir();
    let daemon = ChildGuard::spawn(
        daemon_command(&coordinator, m1.path(), "m1", Some(&code)),
        m1.path(),
        "daemon",
    );
    assert!(
        wait_until(WAIT, || connected(&coordinator, "m1")),
        "m1 did not join"
    );
    let identity = m1.path().join("identity/m1");
    let mode = std::fs::metadata(identity.join("daemon.key"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let cert = std::fs::read_to_string(identity.join("daemon.pem")).unwrap();
    assert!(!m1.path().join("token").exists());

    // The code is spent.
    assert_refused(&coordinator, "m1", &code, "used");

    // kill -9, then start again without a code: the same identity reconnects.
    let mut daemon = daemon;
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = daemon.wait_timeout(WAIT);
    assert!(
        wait_until(WAIT, || !connected(&coordinator, "m1")),
        "m1 still shown connected"
    );
    let mut daemon = ChildGuard::spawn(
        daemon_command(&coordinator, m1.path(), "m1", None),
        m1.path(),
        "daemon-restarted",
    );
    assert!(
        wait_until(WAIT, || connected(&coordinator, "m1")),
        "m1 did not come back"
    );
    assert_eq!(
        std::fs::read_to_string(identity.join("daemon.pem")).unwrap(),
        cert
    );

    // Expired, revoked and foreign codes: each refused with its reason.
    let short = create_code(&coordinator, &["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_refused(&coordinator, "m2", &short, "expired");
    let revoked = create_code(&coordinator, &[]);
    let id = revoked.split('.').nth(2).unwrap();
    let mut revoke = coordinator.cli();
    revoke.args(["cluster", "join-code", "revoke", id]);
    let out = run_with_timeout(revoke, TIMEOUT);
    assert!(out.status.success(), "{out}");
    assert_refused(&coordinator, "m3", &revoked, "revoked");
    let valid = create_code(&coordinator, &[]);
    let mut parts: Vec<&str> = valid.split('.').collect();
    let other_ca = "0".repeat(64);
    parts[1] = &other_ca;
    assert_refused(&coordinator, "m4", &parts.join("."), "presents the CA");
    let bound = create_code(&coordinator, &["--machine", "m5"]);
    assert_refused(&coordinator, "m6", &bound, "m5");

    // Labels a code assigns add to the daemon's own, and stay with its identity.
    let labelled = create_code(&coordinator, &["--labels", "zone=b"]);
    let m7 = temp_dir();
    let mut with_labels = daemon_command(&coordinator, m7.path(), "m7", Some(&labelled));
    with_labels.args(["--labels", "arch=x86"]);
    let mut m7_daemon = ChildGuard::spawn(with_labels, m7.path(), "daemon");
    let labels_of = || daemon_status(&coordinator, "m7").map(|d| d["labels"].clone());
    assert!(
        wait_until(WAIT, || labels_of().is_some()),
        "m7 did not join"
    );
    let labels = labels_of().unwrap();
    assert_eq!(
        (labels["zone"].as_str(), labels["arch"].as_str()),
        (Some("b"), Some("x86")),
        "{labels}"
    );
    m7_daemon.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = m7_daemon.wait_timeout(WAIT);
    assert!(wait_until(WAIT, || !connected(&coordinator, "m7")));
    let _m7_again = ChildGuard::spawn(
        daemon_command(&coordinator, m7.path(), "m7", None),
        m7.path(),
        "daemon-again",
    );
    assert!(
        wait_until(WAIT, || labels_of().is_some()),
        "m7 did not come back"
    );
    assert_eq!(labels_of().unwrap()["zone"], "b");

    // Without credentials: nothing (the CA is public, everything else is not).
    let ca = std::fs::read_to_string(state.path().join("ca.pem")).unwrap();
    let addr = format!("127.0.0.1:{}", coordinator.port());
    for path in [
        "/api/v1/daemon",
        "/api/v1/control",
        "/api/v1/artifacts/00000000-0000-0000-0000-000000000000/n",
        "/metrics",
    ] {
        let answer = https::request(&addr, &ca, None, "GET", path);
        assert_eq!(answer.status, 401, "{path}: {answer:?}");
    }
    let public = https::request(&addr, &ca, None, "GET", "/api/v1/ca");
    assert_eq!(public.status, 200);
    assert_eq!(public.body, ca);

    // Revoking the machine disconnects its daemon and keeps it out.
    let mut revoke = coordinator.cli();
    revoke.args(["cluster", "revoke", "m1", "--json"]);
    let out = run_with_timeout(revoke, TIMEOUT);
    assert!(out.status.success(), "{out}");
    assert!(
        wait_until(WAIT, || !connected(&coordinator, "m1")),
        "m1 still connected"
    );
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = daemon.wait_timeout(WAIT);
    let _locked_out = ChildGuard::spawn(
        daemon_command(&coordinator, m1.path(), "m1", None),
        m1.path(),
        "daemon-revoked",
    );
    let log = m1.path().join("daemon-revoked.err");
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("revoked"))),
        "the revoked daemon was not told why: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        !connected(&coordinator, "m1"),
        "a revoked daemon reconnected"
    );
}
