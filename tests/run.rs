//! `adora run` end to end: the real binary, real node processes, real shared memory.

use std::{path::Path, process::Command, time::Duration};

use adora_test_support::{
    adora, bin, marked_left_after, pids_with_env, repo_root, run_with_timeout, shm_segments,
    temp_dir, wait_until, write_dataflow, ChildGuard, Output,
};

const TIMEOUT: Duration = Duration::from_secs(120);

fn run(state: &Path, args: &[&str]) -> Output {
    let mut cmd = adora(state);
    cmd.arg("run").args(args);
    run_with_timeout(cmd, TIMEOUT)
}

/// The dataflow id printed by `adora run` on its first stderr line.
fn dataflow_id(out: &Output) -> String {
    out.stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("dataflow ")
                .and_then(|r| r.split(':').next())
        })
        .unwrap_or_else(|| panic!("no dataflow id in output:\n{out}"))
        .to_owned()
}

fn shm_prefix(id: &str) -> String {
    format!("adora-{}-", &id.replace('-', "")[..12])
}

#[test]
fn rust_dataflow_example_delivers_every_message_in_order() {
    let state = temp_dir();
    let example = repo_root().join("examples/rust-dataflow/dataflow.yml");
    assert!(
        repo_root()
            .join("target/debug/rust-dataflow-sender")
            .exists(),
        "the example refers to target/debug/...; build it with `cargo build --workspace` \
         (with CARGO_TARGET_DIR elsewhere, link it to ./target)"
    );
    let out = run(
        state.path(),
        &[example.to_str().unwrap(), "--stop-after", "60s"],
    );
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout
            .contains("sink        | sink done: 100 messages received in order"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("transformer | transformer done: 100 messages forwarded"),
        "{out}"
    );
    assert!(!out.all().contains("out of order"), "{out}");
    assert!(out.stderr.contains("finished successfully"), "{out}");
}

#[test]
fn shared_sample_reaches_two_receivers_without_copy_and_is_reused() {
    let (state, dir) = (temp_dir(), temp_dir());
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: sender
    path: {node}
    env: { MODE: shm-send }
    outputs: [data]
  - id: left
    path: {node}
    env: { MODE: recv }
    inputs: { in: sender/data }
  - id: right
    path: {node}
    env: { MODE: recv }
    inputs: { in: sender/data }
"#,
    );
    let out = run(state.path(), &[dataflow.to_str().unwrap()]);
    assert!(out.status.success(), "{out}");
    let field = |line: &str, key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_owned)
    };
    let sent: Vec<String> = out
        .stdout
        .lines()
        .filter(|l| l.contains("sent round="))
        .map(|l| field(l, "shm=").unwrap())
        .collect();
    assert_eq!(sent.len(), 2, "{out}");
    // The sender's pool reused the first sample once both receivers released it.
    assert_eq!(
        sent[0], sent[1],
        "second sample did not reuse the first one's memory\n{out}"
    );
    for receiver in ["left ", "right"] {
        let got: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| l.starts_with(receiver) && l.contains("recv input=in"))
            .collect();
        assert_eq!(got.len(), 2, "{receiver}: {out}");
        for line in got {
            // Zero copy: the receiver reads through a mapping of the very segment the sender
            // wrote into (the name comes from the receiver's own mapping), and the bytes check out.
            assert!(
                line.contains(&format!("len=4194304 shm={} ok=true", sent[0])),
                "{line}\n{out}"
            );
        }
    }
    assert!(out.stdout.contains("released round=2"), "{out}");
    let id = dataflow_id(&out);
    assert_eq!(
        shm_segments(&shm_prefix(&id)),
        Vec::<String>::new(),
        "shared memory left behind"
    );
}

#[test]
fn failing_node_fails_the_run_and_is_named() {
    let (state, dir) = (temp_dir(), temp_dir());
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: broken
    path: {node}
    env: { MODE: fail, EXIT_CODE: 3 }
    outputs: [data]
  - id: downstream
    path: {node}
    env: { MODE: recv }
    inputs: { in: broken/data }
"#,
    );
    let out = run(state.path(), &[dataflow.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("node `broken` failed: exit status 3"),
        "{out}"
    );
    assert!(
        out.stderr.contains("    test-node: simulated failure"),
        "stderr tail missing\n{out}"
    );
    assert!(!out.stderr.contains("node `downstream` failed"), "{out}");
}

#[test]
fn full_queue_drops_oldest_and_reports_the_count() {
    let (state, dir) = (temp_dir(), temp_dir());
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: flood
    path: {node}
    env: { MODE: flood, COUNT: 300 }
    outputs: [data]
  - id: sink
    path: {node}
    env: { MODE: recv, SLEEP_MS: 20 }
    inputs:
      data: { source: flood/data, queue_size: 2 }
"#,
    );
    let out = run(state.path(), &[dataflow.to_str().unwrap()]);
    assert!(out.status.success(), "{out}");
    let done = out
        .stdout
        .lines()
        .find(|l| l.contains("done received="))
        .unwrap_or_else(|| panic!("{out}"));
    let num = |key: &str| -> u64 {
        done.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(|v| v.trim_start_matches("data:").parse().unwrap())
            .unwrap()
    };
    let (received, dropped) = (num("received="), num("dropped="));
    assert!(dropped > 0, "a 2-slot queue under a flood must drop\n{out}");
    assert_eq!(
        received + dropped,
        300,
        "every message is either delivered or counted as dropped\n{out}"
    );
    // Oldest dropped first: the newest message always survives.
    assert_eq!(num("last_seq="), 299, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "note: input `sink/data` dropped {dropped} message(s)"
        )),
        "{out}"
    );
}

#[test]
fn two_hundred_nodes_start_and_stop_cleanly() {
    let (state, dir) = (temp_dir(), temp_dir());
    let mut yaml = String::from("nodes:\n");
    for i in 0..200 {
        yaml.push_str(&format!(
            "  - id: n{i}\n    path: {{node}}\n    env: {{ MODE: idle }}\n"
        ));
    }
    let dataflow = write_dataflow(dir.path(), &yaml);
    let out = run(
        state.path(),
        &[dataflow.to_str().unwrap(), "--stop-after", "15s"],
    );
    assert!(out.status.success(), "{out}");
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.ends_with("| idle done"))
            .count(),
        200,
        "{out}"
    );
}

#[test]
fn env_from_yaml_and_command_line_reach_the_node() {
    let (state, dir) = (temp_dir(), temp_dir());
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: printer
    path: {node}
    env: { MODE: print-env, PRINT_ENV: "WIDTH,EXTRA,ADORA_NODE_ID", WIDTH: 640 }
"#,
    );
    let out = run(
        state.path(),
        &[dataflow.to_str().unwrap(), "--env", "EXTRA=from-cli"],
    );
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains("printer | WIDTH=640"), "{out}");
    assert!(out.stdout.contains("printer | EXTRA=from-cli"), "{out}");
    assert!(
        out.stdout.contains("printer | ADORA_NODE_ID=printer"),
        "{out}"
    );

    let out = run(
        state.path(),
        &[dataflow.to_str().unwrap(), "--env", "ADORA_NODE_CONFIG=x"],
    );
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(
        out.stderr
            .contains("`ADORA_NODE_CONFIG` is set by the runtime"),
        "{out}"
    );
}

#[test]
fn malformed_yaml_is_reported_with_its_location() {
    let (state, dir) = (temp_dir(), temp_dir());
    let path = dir.path().join("dataflow.yml");
    std::fs::write(&path, "nodes:\n  - id: a\n    path: [unclosed\n").unwrap();
    let out = run(state.path(), &[path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(
        out.stderr.contains(&format!("{}:", path.display())),
        "{out}"
    );
    assert!(out.stderr.contains("problem"), "{out}");
}

#[test]
fn missing_or_non_executable_paths_start_nothing() {
    let (state, dir) = (temp_dir(), temp_dir());
    let not_exec = dir.path().join("not-exec");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    let marker = format!("missing-{}", std::process::id());
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: fine
    path: {node}
    env: { MODE: idle }
  - id: ghost
    path: ./does-not-exist
  - id: plain-file
    path: ./not-exec
"#,
    );
    let mut cmd = adora(state.path());
    cmd.args([
        "run",
        dataflow.to_str().unwrap(),
        "--env",
        &format!("ADORA_TEST_MARKER={marker}"),
    ]);
    let out = run_with_timeout(cmd, TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(out.stderr.contains("node `ghost`: path `"), "{out}");
    assert!(
        out.stderr.contains("does-not-exist` does not exist"),
        "{out}"
    );
    assert!(out.stderr.contains("node `plain-file`: path `"), "{out}");
    assert!(out.stderr.contains("is not executable"), "{out}");
    assert!(
        !out.stdout.contains("idle done"),
        "nothing may be spawned\n{out}"
    );
    assert!(pids_with_env("ADORA_TEST_MARKER", &marker).is_empty());
}

#[test]
fn a_node_that_has_not_connected_after_5_s_is_named_before_the_timeout_fails_it() {
    let (state, dir) = (temp_dir(), temp_dir());
    let dataflow = write_dataflow(
        dir.path(),
        "nodes:\n  - id: lazy\n    path: {node}\n    env: { MODE: no-connect }\n",
    );
    let mut cmd = adora(state.path());
    cmd.args(["run", dataflow.to_str().unwrap(), "--connect-timeout", "8s"]);
    let out = run_with_timeout(cmd, TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let early = out
        .stderr
        .find("node `lazy` started but has not connected after 5s")
        .unwrap_or_else(|| panic!("no early report:\n{out}"));
    let failed = out
        .stderr
        .find("node `lazy` failed: did not connect to the daemon within 8s")
        .unwrap_or_else(|| panic!("no failure:\n{out}"));
    assert!(
        early < failed,
        "the report comes before the failure:\n{out}"
    );
}

#[test]
fn node_that_never_connects_fails_with_its_name_and_is_killed() {
    let (state, dir) = (temp_dir(), temp_dir());
    let marker = format!("lazy-{}", std::process::id());
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: lazy
    path: {node}
    env: { MODE: no-connect }
  - id: eager
    path: {node}
    env: { MODE: idle }
"#,
    );
    let mut cmd = adora(state.path());
    cmd.args(["run", dataflow.to_str().unwrap(), "--connect-timeout", "2s"])
        .args(["--env", &format!("ADORA_TEST_MARKER={marker}")]);
    let out = run_with_timeout(cmd, TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains("node `lazy` failed: did not connect to the daemon within 2s"),
        "{out}"
    );
    assert!(
        out.stdout.contains("eager | idle done"),
        "the others are stopped gracefully\n{out}"
    );
    assert!(
        pids_with_env("ADORA_TEST_MARKER", &marker).is_empty(),
        "no orphaned node"
    );
}

#[test]
fn ctrl_c_stops_gracefully_then_escalates() {
    let (state, dir) = (temp_dir(), temp_dir());
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: polite
    path: {node}
    env: { MODE: idle }
  - id: stubborn
    path: {node}
    env: { MODE: ignore-stop }
"#,
    );
    let mut cmd = adora(state.path());
    cmd.args(["run", dataflow.to_str().unwrap(), "--grace", "1s"]);
    let mut child = ChildGuard::spawn(cmd, dir.path(), "run");
    let log = dir.path().join("run.err");
    assert!(wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("logs in")
    }));
    std::thread::sleep(Duration::from_millis(1500));
    child.signal(nix::sys::signal::Signal::SIGINT);
    let status = child
        .wait_timeout(Duration::from_secs(30))
        .expect("adora run exits after Ctrl-C");
    let stdout = std::fs::read_to_string(dir.path().join("run.out")).unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("polite   | idle done"), "{stdout}");
    assert!(stdout.contains("stubborn | ignoring stop"), "{stdout}");
    assert!(
        stderr.contains(
            "node `stubborn` did not exit after Stop within 1s and was terminated with SIGTERM"
        ),
        "{stderr}"
    );
}

#[test]
fn nodes_die_with_a_killed_runtime() {
    let (state, dir) = (temp_dir(), temp_dir());
    let marker = format!("orphan-{}", std::process::id());
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: a
    path: {node}
    env: { MODE: idle }
  - id: b
    path: {node}
    env: { MODE: ignore-stop }
"#,
    );
    let mut cmd = adora(state.path());
    cmd.args([
        "run",
        dataflow.to_str().unwrap(),
        "--env",
        &format!("ADORA_TEST_MARKER={marker}"),
    ]);
    let child = ChildGuard::spawn(cmd, dir.path(), "run");
    assert!(
        wait_until(Duration::from_secs(30), || pids_with_env(
            "ADORA_TEST_MARKER",
            &marker
        )
        .len()
            == 2),
        "nodes did not start"
    );
    child.signal(nix::sys::signal::Signal::SIGKILL);
    let left = marked_left_after(&marker, Duration::from_secs(10));
    assert!(
        left.is_empty(),
        "nodes outlived a SIGKILLed runtime: {left:?}"
    );
}

#[test]
fn node_without_a_daemon_says_so() {
    let mut cmd = Command::new(bin("adora-test-node"));
    cmd.env("MODE", "idle").env_remove("ADORA_NODE_CONFIG");
    let out = run_with_timeout(cmd, TIMEOUT);
    assert!(!out.status.success());
    assert!(out.stderr.contains("ADORA_NODE_CONFIG is not set"), "{out}");

    let mut cmd = Command::new(bin("adora-test-node"));
    cmd.env("MODE", "idle").env(
        "ADORA_NODE_CONFIG",
        r#"{"dataflow_id":"6f1c1f3e-7a53-4b0e-9a55-0c8a1e0e1f10","node_id":"x","daemon_socket":"/nonexistent/adora.sock","inputs":[],"outputs":[],"shm_prefix":"adora-test-"}"#,
    );
    let out = run_with_timeout(cmd, TIMEOUT);
    assert!(!out.status.success());
    assert!(
        out.stderr
            .contains("cannot connect to the daemon socket /nonexistent/adora.sock"),
        "{out}"
    );
}

#[test]
fn validate_and_graph_commands() {
    let (state, dir) = (temp_dir(), temp_dir());
    let good = repo_root().join("examples/rust-dataflow/dataflow.yml");
    let mut cmd = adora(state.path());
    cmd.args(["validate", good.to_str().unwrap()]);
    let out = run_with_timeout(cmd, TIMEOUT);
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains("is valid (3 nodes)"), "{out}");

    let mut cmd = adora(state.path());
    cmd.args(["graph", good.to_str().unwrap()]);
    let out = run_with_timeout(cmd, TIMEOUT);
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.starts_with("flowchart"), "{out}");

    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "nodes:\n  - id: a\n    path: x\n    ouputs: [o]\n  - id: a\n    path: y\n",
    )
    .unwrap();
    let mut cmd = adora(state.path());
    cmd.args(["validate", bad.to_str().unwrap()]);
    let out = run_with_timeout(cmd, TIMEOUT);
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(out.stderr.contains("ouputs"), "{out}");
}

#[test]
fn build_runs_each_distinct_command_once_and_run_does_not_rebuild() {
    let (state, dir) = (temp_dir(), temp_dir());
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: a
    path: {node}
    env: { MODE: print-env, PRINT_ENV: ADORA_NODE_ID }
    build: echo shared >> builds.txt
  - id: b
    path: {node}
    env: { MODE: print-env, PRINT_ENV: ADORA_NODE_ID }
    build: echo shared >> builds.txt
  - id: c
    path: {node}
    env: { MODE: print-env, PRINT_ENV: ADORA_NODE_ID }
    build: echo own >> builds.txt
"#,
    );
    let mut cmd = adora(state.path());
    cmd.args(["build", dataflow.to_str().unwrap()]);
    let out = run_with_timeout(cmd, TIMEOUT);
    assert!(out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("building a, b: echo shared >> builds.txt"),
        "{out}"
    );
    let builds = || std::fs::read_to_string(dir.path().join("builds.txt")).unwrap();
    assert_eq!(
        builds(),
        "shared\nown\n",
        "builds run once each, in the dataflow's directory"
    );

    let out = run(state.path(), &[dataflow.to_str().unwrap()]);
    assert!(out.status.success(), "{out}");
    assert_eq!(
        builds(),
        "shared\nown\n",
        "`adora run` must not rebuild without --build"
    );

    let out = run(state.path(), &[dataflow.to_str().unwrap(), "--build"]);
    assert!(out.status.success(), "{out}");
    assert_eq!(builds(), "shared\nown\nshared\nown\n");

    std::fs::write(
        dir.path().join("dataflow.yml"),
        "nodes:\n  - id: x\n    path: /bin/true\n    build: exit 7\n",
    )
    .unwrap();
    let mut cmd = adora(state.path());
    cmd.args(["build", dataflow.to_str().unwrap()]);
    let out = run_with_timeout(cmd, TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(out.stderr.contains("build of node x failed"), "{out}");
}

#[test]
fn python_nodes_run_with_python3() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let (state, dir) = (temp_dir(), temp_dir());
    std::fs::write(
        dir.path().join("hello.py"),
        "import sys\nprint('hello from', sys.argv[1])\n",
    )
    .unwrap();
    let dataflow = write_dataflow(
        dir.path(),
        "nodes:\n  - id: py\n    path: hello.py\n    args: python-node\n",
    );
    let out = run(state.path(), &[dataflow.to_str().unwrap()]);
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains("py | hello from python-node"), "{out}");
}

#[test]
fn on_failure_restarts_up_to_max_restarts_with_doubling_delay_then_fails_for_good() {
    let (state, dir) = (temp_dir(), temp_dir());
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: flaky
    path: {node}
    env: { MODE: fail, EXIT_CODE: 4 }
    outputs: [data]
    restart_policy: on-failure
    max_restarts: 3
    restart_delay: 100ms
  - id: watcher
    path: {node}
    env: { MODE: recv }
    inputs: { in: flaky/data }
"#,
    );
    let out = run(state.path(), &[dataflow.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    // One first run and three restarts, each failing.
    assert_eq!(
        out.stderr
            .matches("flaky   | test-node: simulated failure")
            .count(),
        4,
        "{out}"
    );
    // The delay doubles: 100 ms, 200 ms, 400 ms.
    for (delay, attempt) in [("100ms", 1), ("200ms", 2), ("400ms", 3)] {
        assert!(
            out.stderr.contains(&format!(
                "node `flaky` exit status 4; restarting it in {delay} (restart {attempt})"
            )),
            "{out}"
        );
    }
    assert!(
        out.stderr.contains("node `flaky` failed: exit status 4; not restarted again: restarted 3 times; max_restarts is 3"),
        "{out}"
    );
    // The downstream node is told about every restart, then that it failed for good, then the
    // input closes (and its stream ends, so it exits by itself).
    assert_eq!(
        out.stdout
            .matches("watcher | upstream restarted node=flaky inputs=in")
            .count(),
        3,
        "{out}"
    );
    assert!(
        out.stdout
            .contains("watcher | upstream failed node=flaky reason=exit status 4"),
        "{out}"
    );
    assert!(out.stdout.contains("watcher | input closed in"), "{out}");
    assert!(
        out.stderr
            .contains("note: node `flaky` was restarted 3 time(s)"),
        "{out}"
    );
}

#[test]
fn always_restarts_clean_exits_and_never_restarts_nothing() {
    let (state, dir) = (temp_dir(), temp_dir());
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: again
    path: {node}
    env: { MODE: print-env, PRINT_ENV: ADORA_NODE_ID }
    restart_policy: always
    max_restarts: 2
    restart_delay: 10ms
  - id: once
    path: {node}
    env: { MODE: print-env, PRINT_ENV: ADORA_NODE_ID }
"#,
    );
    let out = run(state.path(), &[dataflow.to_str().unwrap()]);
    // A clean exit after the last allowed restart is not a failure.
    assert!(out.status.success(), "{out}");
    assert_eq!(
        out.stdout.matches("again | ADORA_NODE_ID=again").count(),
        3,
        "{out}"
    );
    assert_eq!(
        out.stdout.matches("once  | ADORA_NODE_ID=once").count(),
        1,
        "{out}"
    );
}

#[test]
fn a_restarted_node_keeps_receiving_on_the_same_inputs() {
    let (state, dir) = (temp_dir(), temp_dir());
    // `sink` crashes after its first message and comes back; the source keeps sending on a timer:
    // the new instance receives the following messages on the same, still open, input.
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: source
    path: {node}
    env: { MODE: seq-source, COUNT: 30, PAYLOAD_BYTES: 8 }
    inputs: { tick: adora/timer/millis/30 }
    outputs: [data]
  - id: sink
    path: {node}
    env: { MODE: seq-sink, PROGRESS: 1, CRASH_AT: 5 }
    inputs: { in: source/data }
    restart_policy: on-failure
    max_restarts: 1
    restart_delay: 10ms
"#,
    );
    let out = run(state.path(), &[dataflow.to_str().unwrap()]);
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout.contains("sink   | seq-sink crashing at 5"),
        "{out}"
    );
    // The second instance starts counting again and gets the rest of the stream, ending at 29.
    let done = out
        .stdout
        .lines()
        .find(|l| l.contains("seq-sink done"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(done.contains(" next=30 "), "{done}\n{out}");
    assert!(
        out.stderr
            .contains("note: node `sink` was restarted 1 time(s)"),
        "{out}"
    );
}

#[test]
fn stopping_while_nodes_wait_at_the_start_barrier_finishes() {
    // `parked` connected and waits for `lazy`, which never connects. Stopping then must still end
    // the run: the parked node dies at SIGTERM without its connection ever being released (this
    // hung forever when a parked registration counted as an open connection).
    let (state, dir) = (temp_dir(), temp_dir());
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: lazy
    path: {node}
    env: { MODE: no-connect }
  - id: parked
    path: {node}
    env: { MODE: idle }
"#,
    );
    let out = run(
        state.path(),
        &[
            dataflow.to_str().unwrap(),
            "--stop-after",
            "1s",
            "--grace",
            "1s",
        ],
    );
    assert!(out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("node `parked` did not exit after Stop within 1s and was terminated"),
        "{out}"
    );
    assert!(out.stderr.contains("finished successfully"), "{out}");
}
