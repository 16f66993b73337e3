//! Local messages node to node (`adora_shm::Lane`): the daemon leaves the per-message path, and
//! everything users rely on still holds — drop-oldest queues counted per input, samples handed
//! back when a receiver dies holding them. Each test runs with lanes and, for comparison, with
//! `ADORA_LOCAL_LANES=0` (everything through the daemon): both must give the same guarantees.

use std::{path::Path, time::Duration};

use adora_test_support::{adora, run_with_timeout, temp_dir, write_dataflow, Output};

const TIMEOUT: Duration = Duration::from_secs(120);

fn run(state: &Path, dataflow: &Path, lanes: bool) -> Output {
    let mut cmd = adora(state);
    cmd.arg("run").arg(dataflow);
    cmd.env("ADORA_LOCAL_LANES", if lanes { "1" } else { "0" });
    run_with_timeout(cmd, TIMEOUT)
}

/// The `recv` summary line of `node` (`done received=N last_seq=S dropped=in:D`).
fn summary(out: &Output, node: &str) -> (u64, u64, u64) {
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{node} ")) && l.contains("done received="))
        .unwrap_or_else(|| panic!("no summary of {node}\n{out}"));
    let num = |key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            // `dropped=` with nothing after it: nothing dropped.
            .map(|v| match v.rsplit(':').next().unwrap() {
                "" => 0,
                n => n
                    .parse()
                    .unwrap_or_else(|_| panic!("{key}{n} in `{line}`\n{out}")),
            })
            .unwrap_or_else(|| panic!("no {key} in {line}"))
    };
    (num("received="), num("last_seq="), num("dropped="))
}

const QUEUES: [u64; 8] = [1, 2, 3, 5, 8, 13, 50, 2000];
const COUNT: u64 = 2000;

fn eight_receivers(size: usize, lanes: bool) {
    let (state, dir) = (temp_dir(), temp_dir());
    let mut yaml = format!(
        "nodes:\n  - id: flood\n    path: {{node}}\n    env: {{ MODE: flood, COUNT: {COUNT}, SIZE: {size}, WAIT_RELEASED: 1 }}\n    outputs: [data]\n"
    );
    for (i, q) in QUEUES.iter().enumerate() {
        // Receivers of different speeds: the slow ones drop, each as its own queue says.
        let sleep = [0, 1, 0, 2, 0, 1, 0, 1][i];
        // One receiver busy-polls its lane (`poll: spin`), with the same guarantees.
        let poll = if i == 6 { ", poll: spin" } else { "" };
        yaml.push_str(&format!(
            "  - id: r{i}\n    path: {{node}}\n    env: {{ MODE: recv, SLEEP_MS: {sleep}, PRINT_LANES: 1 }}\n    inputs:\n      data: {{ source: flood/data, queue_size: {q}{poll} }}\n"
        ));
    }
    let dataflow = write_dataflow(dir.path(), &yaml);
    let out = run(state.path(), &dataflow, lanes);
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains("flood released"), "{out}");
    let mut dropping = 0;
    for (i, q) in QUEUES.iter().enumerate() {
        let node = format!("r{i}");
        assert!(
            out.stdout.contains(&format!("{node:<5} | lanes={lanes}")),
            "{node} was {}given lanes\n{out}",
            if lanes { "not " } else { "" }
        );
        let (received, last, dropped) = summary(&out, &node);
        assert_eq!(
            received + dropped,
            COUNT,
            "{node} (queue {q}): every message delivered or counted dropped\n{out}"
        );
        assert_eq!(
            last,
            COUNT - 1,
            "{node}: the newest message is never dropped\n{out}"
        );
        if dropped > 0 {
            dropping += 1;
            // The daemon's figures (the end-of-run note) agree with the node's own count.
            assert!(
                out.stderr.contains(&format!(
                    "note: input `{node}/data` dropped {dropped} message(s)"
                )),
                "{node}: the daemon counted otherwise\n{out}"
            );
        }
        assert!(
            *q < COUNT || dropped == 0,
            "{node}: a queue of {q} dropped\n{out}"
        );
    }
    assert!(
        dropping >= 2,
        "slow receivers with small queues must drop\n{out}"
    );
}

#[test]
fn eight_receivers_with_their_own_queue_sizes_drop_and_count_independently() {
    eight_receivers(8, true);
    eight_receivers(8, false);
}

#[test]
fn eight_receivers_of_shared_samples_drop_count_and_release_them() {
    // 8 KiB messages live in shared memory: entries a full lane drops hand their sample back,
    // and the sender's pool gets every sample back in the end (`flood released`).
    eight_receivers(8192, true);
    eight_receivers(8192, false);
}

fn killed_holder(lanes: bool) {
    let (state, dir) = (temp_dir(), temp_dir());
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: flood
    path: {node}
    env: { MODE: flood, COUNT: 5, SIZE: 4194304, WAIT_RELEASED: 1 }
    outputs: [data]
  - id: holder
    path: {node}
    env: { MODE: hold, COUNT: 5 }
    inputs: { data: flood/data }
"#,
    );
    let out = run(state.path(), &dataflow, lanes);
    assert!(out.stdout.contains("holding 5"), "{out}");
    // The holder died with kill -9 holding all five: its samples go back to the sender's pool.
    assert!(
        out.stdout.contains("flood released"),
        "lanes={lanes}: {out}"
    );
    assert!(
        !out.status.success(),
        "a node killed by a signal fails the run\n{out}"
    );
    assert!(out.stderr.contains("holder"), "{out}");
}

#[test]
fn a_receiver_killed_while_holding_samples_gives_them_back() {
    killed_holder(true);
    killed_holder(false);
}

fn restarted_holder(lanes: bool) {
    let (state, dir) = (temp_dir(), temp_dir());
    let once = dir.path().join("held");
    // The first instance of `holder` takes three 1 MiB messages and dies holding them; the
    // restart policy starts a second, which takes what its lane queued meanwhile and the rest.
    let yaml = r#"
nodes:
  - id: flood
    path: {node}
    env: { MODE: flood, COUNT: 10, SIZE: 1048576, PACE_MS: 50, WAIT_RELEASED: 1 }
    outputs: [data]
  - id: holder
    path: {node}
    env: { MODE: hold, COUNT: 3, ONCE_FILE: "{once}" }
    restart_policy: on-failure
    max_restarts: 1
    restart_delay: 200ms
    inputs: { data: { source: flood/data, queue_size: 10 } }
"#
    .replace("{once}", &once.display().to_string());
    let dataflow = write_dataflow(dir.path(), &yaml);
    let out = run(state.path(), &dataflow, lanes);
    assert!(out.stdout.contains("holding 3"), "{out}");
    // What the first instance took comes back to the sender while the second one runs (a
    // restart is not an end), and the second one gets what was queued for it.
    assert!(
        out.stdout.contains("flood released"),
        "lanes={lanes}: {out}"
    );
    let (received, last_seq, dropped) = summary(&out, "holder");
    assert_eq!((last_seq, dropped), (9, 0), "lanes={lanes}: {out}");
    assert!(received >= 4, "lanes={lanes}: {received} received\n{out}");
}

#[test]
fn a_receiver_restarted_after_dying_with_samples_gives_them_back_and_gets_its_queue() {
    restarted_holder(true);
    restarted_holder(false);
}

fn outlived_sender(lanes: bool) {
    let (state, dir) = (temp_dir(), temp_dir());
    // The sender sends three 1 MiB samples and exits while its receiver still holds them.
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: flood
    path: {node}
    env: { MODE: flood, COUNT: 3, SIZE: 1048576 }
    outputs: [data]
  - id: keeper
    path: {node}
    env: { MODE: outlive, COUNT: 3, WAIT_MS: 2000 }
    inputs: { data: flood/data }
"#,
    );
    let out = run(state.path(), &dataflow, lanes);
    assert!(out.status.success(), "lanes={lanes}: {out}");
    // Kept while held (the receiver reads them after its sender is gone), removed once dropped,
    // while the dataflow still runs: a sender that ends does not leave its samples behind.
    assert!(out.stdout.contains("outlived 3 present=3"), "{out}");
    assert!(
        out.stdout.contains("dropped present=0"),
        "lanes={lanes}: {out}"
    );
}

fn both_ends_gone(lanes: bool, restarted: bool) {
    let (state, dir) = (temp_dir(), temp_dir());
    let once = dir.path().join("held");
    // The sender sends three 1 MiB samples and exits; then the receiver dies holding them, and
    // is gone for good, or restarted (its next instance lingers). Neither can release them;
    // the daemon removes them while `counter` still runs.
    let restart = match restarted {
        true => "\n    restart_policy: on-failure\n    max_restarts: 1\n    restart_delay: 100ms",
        false => "",
    };
    let yaml = r#"
nodes:
  - id: flood
    path: {node}
    env: { MODE: flood, COUNT: 3, SIZE: 1048576 }
    outputs: [data]
  - id: holder
    path: {node}
    env: { MODE: hold, COUNT: 3, HOLD_MS: 1000, ONCE_FILE: "{once}", LINGER_MS: 5000 }{restart}
    inputs: { data: flood/data }
  - id: counter
    path: {node}
    env: { MODE: count-pool, POOL_OF: flood, COUNT: 3, WAIT_MS: 3000 }
    inputs: { data: flood/data }
"#
    .replace("{once}", &once.display().to_string())
    .replace("{restart}", restart);
    let dataflow = write_dataflow(dir.path(), &yaml);
    let out = run(state.path(), &dataflow, lanes);
    assert!(out.stdout.contains("holding 3"), "{out}");
    assert!(
        out.stdout.contains("pool of flood: 0"),
        "lanes={lanes} restarted={restarted}: {out}"
    );
}

#[test]
fn samples_whose_sender_and_receiver_both_ended_are_removed() {
    for restarted in [false, true] {
        both_ends_gone(true, restarted);
        both_ends_gone(false, restarted);
    }
}

#[test]
fn samples_held_after_their_sender_ended_are_removed_once_dropped() {
    outlived_sender(true);
    outlived_sender(false);
}

fn stuck_receiver(lanes: bool) {
    let (state, dir) = (temp_dir(), temp_dir());
    // `stuck` takes one message, then sleeps for a minute in its own code while more wait in its
    // lane: its request for events is still open, but it is stuck, not waiting.
    let dataflow = write_dataflow(
        dir.path(),
        r#"
health_check_interval: 0.2
nodes:
  - id: flood
    path: {node}
    env: { MODE: flood, COUNT: 50 }
    outputs: [data]
  - id: stuck
    path: {node}
    env: { MODE: recv, SLEEP_MS: 60000 }
    health_check_timeout: 1s
    inputs: { data: flood/data }
"#,
    );
    let out = run(state.path(), &dataflow, lanes);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("node `stuck` failed: unresponsive: no request to the daemon"),
        "lanes={lanes}: the stuck node was not killed by its health check\n{out}"
    );
}

fn steady_receiver(lanes: bool) {
    let (state, dir) = (temp_dir(), temp_dir());
    // `steady` gets a message every 50 ms for two seconds, through its lane, without a request
    // of its own (its request for events stays open): it is waiting, and alive.
    let dataflow = write_dataflow(
        dir.path(),
        r#"
health_check_interval: 0.2
nodes:
  - id: ticker
    path: {node}
    env: { MODE: seq-source, COUNT: 40 }
    inputs: { tick: adora/timer/millis/50 }
    outputs: [data]
  - id: steady
    path: {node}
    env: { MODE: recv }
    health_check_timeout: 1s
    inputs: { data: ticker/data }
"#,
    );
    let out = run(state.path(), &dataflow, lanes);
    assert!(out.status.success(), "lanes={lanes}: {out}");
    assert_eq!(summary(&out, "steady").0, 40, "lanes={lanes}: {out}");
}

#[test]
fn a_node_stuck_with_messages_in_its_lanes_fails_its_health_check() {
    stuck_receiver(true);
    stuck_receiver(false);
}

#[test]
fn a_node_waiting_for_its_lanes_passes_its_health_check() {
    steady_receiver(true);
    steady_receiver(false);
}

/// One output read by a receiver with a lane and by receivers without one (an `input_timeout`,
/// a `queue_size` longer than a lane's): every receiver gets every message.
fn mixed_receivers(lanes: bool) {
    let (state, dir) = (temp_dir(), temp_dir());
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: flood
    path: {node}
    env: { MODE: flood, COUNT: 300 }
    outputs: [data]
  - id: laned
    path: {node}
    env: { MODE: recv, PRINT_LANES: 1 }
    inputs: { data: { source: flood/data, queue_size: 1000 } }
  - id: timed
    path: {node}
    env: { MODE: recv, PRINT_LANES: 1 }
    inputs: { data: { source: flood/data, queue_size: 1000, input_timeout: 30s } }
  - id: long
    path: {node}
    env: { MODE: recv, PRINT_LANES: 1 }
    inputs: { data: { source: flood/data, queue_size: 5000 } }
"#,
    );
    let out = run(state.path(), &dataflow, lanes);
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout.contains(&format!("laned | lanes={lanes}")),
        "{out}"
    );
    assert!(out.stdout.contains("timed | lanes=false"), "{out}");
    for node in ["laned", "timed", "long"] {
        assert_eq!(
            summary(&out, node),
            (300, 299, 0),
            "lanes={lanes}: {node} (received, last, dropped)\n{out}"
        );
    }
}

#[test]
fn receivers_with_and_without_a_lane_of_one_output_all_get_every_message() {
    mixed_receivers(true);
    mixed_receivers(false);
}
