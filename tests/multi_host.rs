//! Cross-machine dataflows on real (namespaced) test hosts: a coordinator in the test's network
//! namespace, one daemon per host, node outputs crossing hosts over Zenoh.

use std::time::Duration;

use adora_test_support::{
    adora, require_hosts, run_with_timeout,
    services::{chain, Coordinator},
    temp_dir, wait_until, ChildGuard,
};

const TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn three_hosts_deliver_every_message_in_order_including_4_mib_payloads() {
    let hosts = require_hosts!("three_hosts_in_order", 3);
    let state = temp_dir();
    let coordinator = Coordinator::start(state.path(), &hosts.gateway_ip().to_string());
    let _daemons = coordinator.daemons_on(&hosts, &["a", "b", "c"]);

    let dataflow = state.path().join("chain.yml");
    std::fs::write(&dataflow, chain(40, 4 << 20, 50, 10)).unwrap();
    let mut cmd = adora(state.path());
    cmd.args([
        "start",
        dataflow.to_str().unwrap(),
        "--attach",
        "--name",
        "chain",
    ]);
    let out = run_with_timeout(cmd, TIMEOUT);
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains("sender | source sent=40"), "{out}");
    assert!(out.stdout.contains("relay  | relay forwarded=40"), "{out}");
    // Every 4 MiB message arrived, in order, with the right length and content.
    assert!(
        out.stdout
            .contains("sink   | seq-sink done received=40 lost=0 next=40"),
        "{out}"
    );
    assert!(out.all().contains("finished successfully"), "{out}");
}

#[test]
fn a_network_cut_of_the_middle_host_loses_nothing_and_kills_nothing() {
    let hosts = require_hosts!("cut_middle_host", 3);
    let state = temp_dir();
    let coordinator = Coordinator::start(state.path(), &hosts.gateway_ip().to_string());
    let _daemons = coordinator.daemons_on(&hosts, &["a", "b", "c"]);

    // 300 messages, one every 20 ms (6 s): the cut of 3 s falls in the middle of the stream.
    let dataflow = state.path().join("chain.yml");
    std::fs::write(&dataflow, chain(300, 1024, 20, 10)).unwrap();
    let mut cmd = adora(state.path());
    cmd.args([
        "start",
        dataflow.to_str().unwrap(),
        "--attach",
        "--name",
        "cut",
    ]);
    let mut run = ChildGuard::spawn(cmd, state.path(), "start");
    let stdout = state.path().join("start.out");
    let progress = |n: u64| {
        let text = std::fs::read_to_string(&stdout).unwrap_or_default();
        text.contains(&format!("seq-sink progress received={n} "))
    };
    assert!(
        wait_until(Duration::from_secs(60), || progress(50)),
        "the stream did not start"
    );
    let relay_pid = hosts.host(1).pids();

    hosts.host(1).cut();
    std::thread::sleep(Duration::from_secs(3));
    hosts.host(1).restore();
    // Right after the cut (the stream still runs): the relay host's processes (daemon, node)
    // are the same ones as before it, all alive.
    let still = hosts.host(1).pids();
    let replaced: Vec<&u32> = relay_pid
        .iter()
        .filter(|p| !still.contains(p) || !adora_test_support::process_alive(**p))
        .collect();
    assert!(
        !relay_pid.is_empty() && replaced.is_empty(),
        "processes of the relay host gone or replaced by the cut: {replaced:?} (before {relay_pid:?}, after {still:?})"
    );

    let status = run.wait_timeout(TIMEOUT).expect("the dataflow finishes");
    let out = std::fs::read_to_string(&stdout).unwrap();
    let err = std::fs::read_to_string(state.path().join("start.err")).unwrap();
    assert!(status.success(), "{out}\n{err}");
    // A cut shorter than Zenoh's lease (10 s) keeps the link: the messages sent meanwhile wait
    // in TCP and publisher buffers (150 here, under the 256-message publish queue) and arrive
    // after the restore, in order. Nothing is lost, no node restarted (sequence never reset).
    assert!(
        out.contains("sink   | seq-sink done received=300 lost=0 next=300"),
        "{out}\n{err}"
    );
    assert!(out.contains("relay  | relay forwarded=300"), "{out}");
    assert!(!out.contains("seq-sink gap"), "{out}");
}
