//! Faults of Adora's own parts while a 3-host dataflow runs (DESIGN.md, "State, failure and
//! recovery"): coordinator `kill -9` and restart on the same store, daemon `kill -9` and
//! restart (auto-recovery), a 20 s network cut, and a damaged store file.
//!
//! The dataflow is the sender (a) → relay (b) → sink (c) chain of the test node: the sink
//! checks that sequence numbers only grow (a restarted sender would start again at 0 and fail
//! it), prints every gap, and a final `done received=R lost=L next=N` line. Each test prints a
//! `RESULT` line with the time to recover and what was lost.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use adora_test_support::{
    adora, bin, process_alive, require_hosts, run_with_timeout,
    services::{chain, Coordinator},
    temp_dir, wait_until, ChildGuard,
};
use nix::sys::signal::Signal;

/// Longest any single command or wait takes.
const TIMEOUT: Duration = Duration::from_secs(180);
/// The coordinator must list a reclaimed dataflow as running within this after its restart.
const RECLAIM_WITHIN: Duration = Duration::from_secs(10);

/// Runs `adora <args>` against the test's coordinator.
fn cli(state: &Path, args: &[&str]) -> adora_test_support::Output {
    let mut cmd = adora(state);
    cmd.args(args);
    run_with_timeout(cmd, Duration::from_secs(30))
}

/// (uuid, status) of the dataflow `name` per `adora list --json`, if the coordinator answers.
fn listed(state: &Path, name: &str) -> Option<(String, String)> {
    let out = cli(state, &["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    rows.as_array()?
        .iter()
        .rfind(|r| r["name"] == name)
        .map(|r| {
            (
                r["id"].as_str().unwrap_or_default().to_owned(),
                r["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

/// How many daemons `adora status --json` shows connected.
fn connected_daemons(state: &Path) -> usize {
    let out = cli(state, &["status", "--json"]);
    let compact: String = out.stdout.split_whitespace().collect();
    compact.matches("\"connected\":true").count()
}

/// The log lines of `node` of dataflow `name` (from its daemon, via the coordinator).
fn node_log(state: &Path, name: &str, node: &str) -> String {
    cli(state, &["logs", name, node]).stdout
}

/// The highest `received=` of the sink's progress lines so far.
fn sink_received(state: &Path, name: &str) -> u64 {
    node_log(state, name, "sink")
        .lines()
        .filter_map(|l| l.split("progress received=").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Starts `name` from a chain of `count` messages (one per 20 ms) and waits until the sink
/// received 100; returns its uuid.
fn start_chain(state: &Path, name: &str, count: u64) -> String {
    let dataflow = state.join(format!("{name}.yml"));
    std::fs::write(&dataflow, chain(count, 1024, 20, 25)).unwrap();
    let out = cli(
        state,
        &[
            "start",
            dataflow.to_str().unwrap(),
            "--name",
            name,
            "--detach",
        ],
    );
    assert!(out.status.success(), "{out}");
    assert!(
        wait_until(Duration::from_secs(60), || sink_received(state, name)
            >= 100),
        "the stream did not start: {}",
        node_log(state, name, "sink")
    );
    listed(state, name).unwrap().0
}

/// Waits until `name` is done; returns its final status.
fn wait_done(state: &Path, name: &str) -> String {
    let mut status = String::new();
    let done = wait_until(TIMEOUT, || {
        status = listed(state, name).map(|l| l.1).unwrap_or_default();
        status == "finished" || status == "failed"
    });
    assert!(done, "`{name}` did not end (status {status})");
    status
}

/// `(received, lost, next)` of the sink's final line.
fn sink_done(log: &str) -> (u64, u64, u64) {
    let line = log
        .lines()
        .find(|l| l.contains("seq-sink done"))
        .unwrap_or_else(|| panic!("no final sink line in:\n{log}"));
    let field = |key: &str| -> u64 {
        line.split(&format!("{key}="))
            .nth(1)
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line}"))
    };
    (field("received"), field("lost"), field("next"))
}

fn start_daemons(
    coordinator: &Coordinator,
    hosts: &adora_test_support::hosts::TestHosts,
) -> Vec<ChildGuard> {
    coordinator.daemons_on_with(hosts, &["a", "b", "c"], ZENOH)
}

/// The daemons' Zenoh transport: the default (QUIC with mutual TLS). Until the daemons used
/// QUIC, these fault tests ran over plain TCP: Zenoh 1.10's TLS link resets itself now and then
/// (upstream eclipse-zenoh/zenoh#2557, see guide/src/security.md), which lost messages or, under
/// CPU load after a long cut, stopped a stream for good in about 1 run in 3.
const ZENOH: &[&str] = &[];

#[test]
fn coordinator_kill_9_reclaims_the_dataflow_without_restarting_or_losing_anything() {
    let hosts = require_hosts!("coordinator_kill", 3);
    let state = temp_dir();
    let state = state.path();
    let ip = hosts.gateway_ip().to_string();
    let mut coordinator = Coordinator::start(state, &ip);
    let port: u16 = coordinator.port().parse().unwrap();
    let _daemons = start_daemons(&coordinator, &hosts);
    assert!(
        state.join("coordinator.redb").exists(),
        "redb is the default store"
    );

    let count = 1500; // 30 s
    let id = start_chain(state, "chain", count);
    let node_pids: Vec<Vec<u32>> = (0..3).map(|i| hosts.host(i).pids()).collect();

    coordinator.kill();
    std::thread::sleep(Duration::from_secs(2));
    let coordinator = Coordinator::launch(
        &bin("adora"),
        state,
        &ip,
        port,
        &[],
        "coordinator-restarted",
    );
    let restarted = Instant::now();
    // Running again = every daemon reconnected and reported it (the stored record alone says
    // `running` from the first moment).
    let reclaimed = wait_until(RECLAIM_WITHIN, || {
        connected_daemons(state) == 3
            && listed(state, "chain") == Some((id.clone(), "running".into()))
    });
    let recover = restarted.elapsed();
    assert!(
        reclaimed,
        "not reclaimed within {RECLAIM_WITHIN:?}: {:?}",
        listed(state, "chain")
    );
    // Every process of every host (daemons, nodes) is still the same one.
    for (i, pids) in node_pids.iter().enumerate() {
        assert!(pids.iter().all(|p| process_alive(*p)), "host {i}: {pids:?}");
    }
    // `logs` works on the reclaimed dataflow.
    assert!(sink_received(state, "chain") >= 100);

    assert_eq!(wait_done(state, "chain"), "finished");
    let sink = node_log(state, "chain", "sink");
    // No node restarted (the sequence never went back) and nothing was lost.
    assert_eq!(sink_done(&sink), (count, 0, count), "{sink}");
    assert!(!sink.contains("gap"), "{sink}");
    assert!(node_log(state, "chain", "sender").contains(&format!("source sent={count}")));
    let log = std::fs::read_to_string(state.join("coordinator-restarted.err")).unwrap();
    assert!(!log.contains("auto-recovery"), "{log}");
    drop(coordinator);
    eprintln!(
        "RESULT coordinator kill -9 (down 2 s): listed running again {recover:?} after the restart; lost 0 of {count}"
    );
}

/// Lines of the coordinator log announcing an auto-recovery re-spawn.
fn respawns(state: &Path) -> usize {
    std::fs::read_to_string(state.join("coordinator.err"))
        .unwrap_or_default()
        .matches("auto-recovery: re-spawning")
        .count()
}

#[test]
fn daemon_kill_9_gets_its_nodes_respawned_once_per_backoff_and_the_stream_resumes() {
    let hosts = require_hosts!("daemon_kill", 3);
    let state = temp_dir();
    let state = state.path();
    let backoff = Duration::from_secs(8);
    let coordinator = Coordinator::launch(
        &bin("adora"),
        state,
        &hosts.gateway_ip().to_string(),
        0,
        &["--recovery-backoff", "8s"],
        "coordinator",
    );
    let mut daemons = start_daemons(&coordinator, &hosts);
    let count = 3000; // 60 s
    let id = start_chain(state, "chain", count);

    // kill -9 of b's daemon: its relay dies with it (parent-death signal).
    daemons[1].signal(Signal::SIGKILL);
    daemons[1].wait_timeout(TIMEOUT).unwrap();
    let killed = Instant::now();
    let before = sink_received(state, "chain");
    std::thread::sleep(Duration::from_secs(1));
    daemons[1] = coordinator.daemon_logged(hosts.host(1), "b", ZENOH, "daemon-b-2");
    assert!(wait_until(Duration::from_secs(30), || respawns(state) == 1));
    let first_respawn = Instant::now();
    assert!(
        wait_until(Duration::from_secs(60), || sink_received(state, "chain")
            >= before + 50),
        "the stream did not resume: {}",
        node_log(state, "chain", "sink")
    );
    let resumed = killed.elapsed();
    assert_eq!(listed(state, "chain"), Some((id.clone(), "running".into())));

    // Killed again right away: not re-spawned inside the backoff window, then once after it.
    daemons[1].signal(Signal::SIGKILL);
    daemons[1].wait_timeout(TIMEOUT).unwrap();
    daemons[1] = coordinator.daemon_logged(hosts.host(1), "b", ZENOH, "daemon-b-3");
    assert!(wait_until(Duration::from_secs(60), || respawns(state) == 2));
    let second_after = first_respawn.elapsed();
    assert!(
        second_after >= backoff,
        "re-spawned again after {second_after:?}, inside the {backoff:?} backoff"
    );
    assert_eq!(respawns(state), 2);

    assert_eq!(wait_done(state, "chain"), "finished");
    let sink = node_log(state, "chain", "sink");
    let (received, lost, next) = sink_done(&sink);
    assert_eq!(next, count, "{sink}");
    assert_eq!(received + lost, count, "{sink}");
    assert!(received > count / 2, "{sink}");
    assert!(node_log(state, "chain", "sender").contains(&format!("source sent={count}")));
    eprintln!(
        "RESULT daemon kill -9 (b, relay): stream resumed {resumed:?} after the kill; second kill re-spawned {second_after:?} after the first re-spawn (backoff {backoff:?}); lost {lost} of {count} (received {received}); {:?}",
        sink.lines().filter(|l| l.contains("gap")).collect::<Vec<_>>()
    );
}

#[test]
fn a_20_s_network_cut_keeps_the_nodes_running_and_the_daemon_reconnects() {
    let hosts = require_hosts!("cut_20s", 3);
    let state = temp_dir();
    let state = state.path();
    let coordinator = Coordinator::start(state, &hosts.gateway_ip().to_string());
    let _daemons = start_daemons(&coordinator, &hosts);
    let count = 2500; // 50 s
    let id = start_chain(state, "chain", count);
    let b_pids = hosts.host(1).pids();

    hosts.host(1).cut();
    std::thread::sleep(Duration::from_secs(20));
    hosts.host(1).restore();
    let restored = Instant::now();
    let before = sink_received(state, "chain");
    assert!(
        wait_until(Duration::from_secs(60), || sink_received(state, "chain")
            >= before + 50),
        "the stream did not resume: {}",
        node_log(state, "chain", "sink")
    );
    let resumed = restored.elapsed();
    // Nothing on b was restarted: its daemon and relay are the same processes.
    assert!(b_pids.iter().all(|p| process_alive(*p)), "{b_pids:?}");
    coordinator.wait_for_daemons(3);
    let reconnected = restored.elapsed();
    assert_eq!(listed(state, "chain"), Some((id, "running".into())));

    assert_eq!(wait_done(state, "chain"), "finished");
    let sink = node_log(state, "chain", "sink");
    let (received, lost, next) = sink_done(&sink);
    // Order preserved (the sink fails on a sequence going back), the end arrived.
    assert_eq!(next, count, "{sink}");
    assert_eq!(received + lost, count, "{sink}");
    let log = std::fs::read_to_string(state.join("coordinator.err")).unwrap();
    assert!(!log.contains("auto-recovery"), "{log}");
    eprintln!(
        "RESULT network cut of b for 20 s: stream resumed {resumed:?} after the restore, all daemons connected {reconnected:?} after; lost {lost} of {count} (gaps: {})",
        sink.matches("seq-sink gap").count()
    );
}

/// Starts a coordinator on `state` and sends it SIGTERM as soon as its address file appears:
/// it stops cleanly (exit 0) and removes the file, however early the signal comes.
fn stop_right_after_start(state: &Path) {
    let mut coordinator = Coordinator::start(state, "127.0.0.1");
    coordinator.process.signal(Signal::SIGTERM);
    let status = coordinator.process.wait_timeout(TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}: {}",
        std::fs::read_to_string(state.join("coordinator.err")).unwrap_or_default()
    );
    assert!(!state.join("coordinator.addr").exists());
}

#[test]
fn a_coordinator_stopped_the_moment_it_announces_its_address_stops_cleanly() {
    // The address file used to be written before the signal handlers were installed: a SIGTERM
    // in between killed the coordinator and left the file behind (seen once in CI).
    for _ in 0..50 {
        let state = temp_dir();
        stop_right_after_start(state.path());
    }
}

/// Runs `adora coordinator` on `state` and expects it to refuse the store file.
fn assert_refuses(state: &Path, file: &Path) {
    let before = std::fs::read(file).unwrap();
    let mut cmd = adora(state);
    cmd.args(["coordinator", "--port", "0"]);
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains(&file.display().to_string()), "{out}");
    assert!(
        out.stderr.contains("cannot be read and was left untouched"),
        "{out}"
    );
    assert!(out.stderr.contains("--reset-store"), "{out}");
    assert!(
        !state.join("coordinator.addr").exists(),
        "it started: {out}"
    );
    assert_eq!(
        std::fs::read(file).unwrap(),
        before,
        "the file was modified"
    );
}

#[test]
fn a_corrupted_or_truncated_store_file_is_refused_and_left_untouched() {
    let state = temp_dir();
    let state = state.path();
    let file = state.join("coordinator.redb");
    // A real store first (one coordinator run, stopped cleanly).
    stop_right_after_start(state);
    let valid = std::fs::read(&file).unwrap();
    assert!(valid.len() > 4096);

    std::fs::write(&file, &valid[..valid.len() / 3]).unwrap();
    assert_refuses(state, &file);
    let mut garbage = valid.clone();
    garbage[..512].fill(0x42);
    std::fs::write(&file, &garbage).unwrap();
    assert_refuses(state, &file);
    std::fs::write(&file, b"").unwrap();
    assert_refuses(state, &file);
}
