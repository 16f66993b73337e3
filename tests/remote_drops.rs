//! Messages that go missing between machines are counted, never lost silently: a fast sender on
//! one test host, a receiver with a one-message queue on another. And the receiving daemon's
//! copies of large messages go back to its pool, also when their receiver dies holding them.

use std::time::Duration;

use adora_test_support::{
    adora, require_hosts, run_with_timeout, services::Coordinator, temp_dir, wait_until, ChildGuard,
};

const TIMEOUT: Duration = Duration::from_secs(180);

/// The number after `key=` in `text`.
fn field(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn a_remote_receiver_counts_every_message_it_did_not_get() {
    // 40 000 messages of 2 KiB (80 MB) back to back: more than the receiver's one-message queue
    // takes, and usually more than the link does (the sending daemon's publish queue for the
    // link fills up and drops).
    flood_to_a_one_message_queue("remote_drops", 40_000, 2048);
}

/// The same with 64 KiB messages: each arrives in a sample of the receiving daemon's pool that
/// the receiver's lane holds, and a full lane's dropped samples go back to the pool: the daemon
/// keeps reusing a few samples instead of making one per message.
#[test]
fn a_remote_receiver_of_large_messages_counts_them_and_its_daemon_reuses_their_samples() {
    flood_to_a_one_message_queue("remote_drops_large", 4_000, 65_536);
}

/// Shared-memory segments of daemons' pools of remote copies (`…~remote-N`).
fn remote_copies() -> usize {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().contains("~remote-"))
                .count()
        })
        .unwrap_or(0)
}

fn flood_to_a_one_message_queue(test: &str, count: u64, size: usize) {
    let hosts = require_hosts!(test, 2);
    let state = temp_dir();
    let coordinator = Coordinator::start(state.path(), &hosts.gateway_ip().to_string());
    let _daemons = coordinator.daemons_on(&hosts, &["a", "b"]);

    let dataflow = state.path().join("flood.yml");
    let node = adora_test_support::bin("adora-test-node");
    std::fs::write(
        &dataflow,
        format!(
            r#"nodes:
  - id: sender
    path: {node}
    env: {{ MODE: flood, COUNT: {count}, SIZE: {size}, WAIT_RELEASED: 1 }}
    outputs: [data]
    deploy: {{ machine: a }}
  - id: sink
    path: {node}
    env: {{ MODE: recv, LINGER_MS: 8000 }}
    inputs: {{ data: {{ source: sender/data, queue_size: 1 }} }}
    deploy: {{ machine: b }}
"#,
            node = node.display()
        ),
    )
    .unwrap();
    let mut cmd = adora(state.path());
    cmd.args([
        "start",
        dataflow.to_str().unwrap(),
        "--attach",
        "--name",
        "flood",
    ]);
    let mut run = ChildGuard::spawn(cmd, state.path(), "start");
    let stdout = state.path().join("start.out");
    let summary = || {
        let text = std::fs::read_to_string(&stdout).unwrap_or_default();
        text.lines()
            .find(|l| l.contains("done received="))
            .map(str::to_owned)
    };
    assert!(
        wait_until(TIMEOUT, || summary().is_some()),
        "no summary from the sink"
    );
    let done = summary().expect("seen");
    let received = field(&done, "received=").expect("received");
    let dropped = field(&done, "dropped=data:").unwrap_or(0);
    println!("sent={count} received={received} dropped (node API)={dropped}");
    assert!(received > 0 && dropped > 0, "{done}");
    // The node API's drop count covers every message it did not get, wherever it was dropped.
    assert_eq!(received + dropped, count, "{done}");
    // Samples of large messages the receiver dropped or that its full lane evicted went back
    // to the daemon's pool (a leak would leave about one segment per message). Small messages
    // make none (this counts every daemon's, the other test's included).
    if size >= 4096 {
        let copies = remote_copies();
        println!("segments of remote copies: {copies}");
        assert!(
            copies <= 64,
            "{copies} segments of remote copies for {count} messages"
        );
        // The sender's own samples came back too: its daemon's publisher lent each to Zenoh
        // and gave it back once sent (or its full publish lane dropped it).
        let released = || {
            let text = std::fs::read_to_string(&stdout).unwrap_or_default();
            text.contains("flood released")
        };
        assert!(
            wait_until(TIMEOUT, released),
            "the sender's samples did not come back: {}",
            std::fs::read_to_string(&stdout).unwrap_or_default()
        );
    }

    // While the sink lingers: the part that went missing between the machines, per reason, in
    // `adora list --json` (from the daemons' heartbeats; one report after the last message) and
    // in `adora node info`. Which part that is depends on the run: the sending daemon drops for
    // a slow link (`sender_backlog`), messages lost on the way count as `link`, the rest were
    // dropped from the full queue of one.
    // Wait for the heartbeat after the last message: the node's figures then match its own.
    let info_json = || {
        let mut cmd = adora(state.path());
        cmd.args(["node", "info", "flood", "sink", "--json"]);
        let out = run_with_timeout(cmd, TIMEOUT);
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(10), || {
            let info = info_json();
            info["messages_received"] == received && info["dropped"] == dropped
        }),
        "the sink's figures never matched its own count: {}",
        info_json()
    );
    let mut cmd = adora(state.path());
    cmd.args(["list", "--json"]);
    let list = run_with_timeout(cmd, TIMEOUT);
    assert!(list.status.success(), "{list}");
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).expect("json");
    let remote = rows[0]["remote_dropped"]["sink"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let by = |reason: &str| {
        remote
            .iter()
            .filter(|d| d["input"] == "data" && d["reason"] == reason)
            .map(|d| d["count"].as_u64().expect("a count"))
            .sum::<u64>()
    };
    let (backlog, link) = (by("sender_backlog"), by("link"));
    println!("missing between machines: {backlog} sender backlog, {link} link");
    assert!(backlog + link <= dropped, "{remote:?}");

    let mut cmd = adora(state.path());
    cmd.args(["node", "info", "flood", "sink"]);
    let info = run_with_timeout(cmd, TIMEOUT);
    assert!(info.status.success(), "{info}");
    let parts: Vec<String> = [(backlog, "sender backlog"), (link, "link")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    let expected = if parts.is_empty() {
        "data <- sender/data\n".to_owned()
    } else {
        format!(
            "data <- sender/data   (missing between machines: {})",
            parts.join(", ")
        )
    };
    assert!(info.stdout.contains(&expected), "{expected:?} in\n{info}");
    let status = run.wait_timeout(TIMEOUT).expect("the dataflow finishes");
    assert!(status.success());
}

/// A receiver on another machine takes three 1 MiB messages and dies holding them (its daemon's
/// copies: their lane's holder bit stays set); gone for good or restarted, the daemon releases
/// what it took, while a second receiver of the same output on that machine still runs.
#[test]
fn a_remote_receiver_that_dies_holding_samples_gives_them_back_to_its_daemon() {
    let hosts = require_hosts!("remote_drops_held", 2);
    let state = temp_dir();
    let coordinator = Coordinator::start(state.path(), &hosts.gateway_ip().to_string());
    let _daemons = coordinator.daemons_on(&hosts, &["a", "b"]);
    for restarted in [false, true] {
        let once = state.path().join(format!("held-{restarted}"));
        let restart = match restarted {
            true => {
                "\n    restart_policy: on-failure\n    max_restarts: 1\n    restart_delay: 100ms"
            }
            false => "",
        };
        let yaml = r#"nodes:
  - id: flood
    path: {node}
    env: { MODE: flood, COUNT: 10, SIZE: 1048576, PACE_MS: 100 }
    outputs: [data]
    deploy: { machine: a }
  - id: holder
    path: {node}
    env: { MODE: hold, COUNT: 3, ONCE_FILE: "{once}" }{restart}
    inputs: { data: { source: flood/data, queue_size: 10 } }
    deploy: { machine: b }
  - id: counter
    path: {node}
    env: { MODE: count-pool, POOL_OF: "~remote", COUNT: 10, WAIT_MS: 2000 }
    inputs: { data: { source: flood/data, queue_size: 10 } }
    deploy: { machine: b }
"#
        .replace(
            "{node}",
            &adora_test_support::bin("adora-test-node")
                .display()
                .to_string(),
        )
        .replace("{once}", &once.display().to_string())
        .replace("{restart}", restart);
        let dataflow = state.path().join(format!("held-{restarted}.yml"));
        std::fs::write(&dataflow, yaml).unwrap();
        let mut cmd = adora(state.path());
        cmd.args(["start", dataflow.to_str().unwrap(), "--attach"]);
        let out = run_with_timeout(cmd, TIMEOUT);
        assert!(out.stdout.contains("holding 3"), "{out}");
        // Without the release, the three the dead instance held stay held.
        assert!(
            out.stdout.contains("remote copies held: 0"),
            "restarted={restarted}: {out}"
        );
    }
}
