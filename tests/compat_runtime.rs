//! dora 1.x fields with runtime behaviour, end to end through `adora run`: input timeouts, health
//! checks, CPU affinity and log lines sent as messages.

use std::{path::Path, time::Duration};

use adora_test_support::{
    adora, pids_with_env, run_with_timeout, temp_dir, wait_until, write_dataflow, ChildGuard,
    MarkedCli, Output,
};

const TIMEOUT: Duration = Duration::from_secs(120);

fn run(state: &Path, args: &[&str]) -> Output {
    let mut cmd = adora(state);
    cmd.arg("run").args(args);
    run_with_timeout(cmd, TIMEOUT)
}

#[test]
fn an_input_without_messages_for_its_timeout_is_closed_and_a_fed_one_is_not() {
    let (state, dir) = (temp_dir(), temp_dir());
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: silent
    path: {node}
    env: { MODE: idle }
    outputs: [data]
  - id: sink
    path: {node}
    env: { MODE: recv }
    inputs:
      in:
        source: silent/data
        input_timeout: 0.5
  - id: ticked
    path: {node}
    env: { MODE: recv }
    inputs:
      tick: { source: adora/timer/millis/50, input_timeout: 2s }
"#,
    );
    let out = run(
        state.path(),
        &[dataflow.to_str().unwrap(), "--stop-after", "4s"],
    );
    assert!(out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("input `in` of node `sink` closed: no message for 500ms (input_timeout)"),
        "{out}"
    );
    // The node was told, and with its only input closed its event stream ended by itself.
    assert!(out.stdout.contains("sink   | input closed in"), "{out}");
    assert!(out.stdout.contains("sink   | done received=0"), "{out}");
    assert!(
        !out.all().contains("input `tick` of node `ticked` closed"),
        "{out}"
    );
    assert!(!out.stdout.contains("ticked | input closed"), "{out}");
}

#[test]
fn a_hung_node_is_killed_and_restarted_by_its_policy_while_an_idle_one_lives() {
    let (state, dir) = (temp_dir(), temp_dir());
    let dataflow = write_dataflow(
        dir.path(),
        r#"
health_check_interval: 0.2
nodes:
  - id: hung
    path: {node}
    env: { MODE: hang }
    health_check_timeout: 1
    restart_policy: on-failure
    max_restarts: 1
  - id: patient
    path: {node}
    env: { MODE: idle }
    health_check_timeout: 1
"#,
    );
    let out = run(
        state.path(),
        &[dataflow.to_str().unwrap(), "--stop-after", "6s"],
    );
    assert_eq!(out.status.code(), Some(1), "{out}");
    // Killed, restarted once by its policy, killed again, then failed for good.
    assert_eq!(out.stdout.matches("hung    | hanging").count(), 2, "{out}");
    assert!(
        out.stderr
            .contains("node `hung` unresponsive: no request to the daemon for"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("(health_check_timeout 1s); killed; restarting it in"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("node `hung` failed: unresponsive: no request to the daemon for"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("(health_check_timeout 1s); killed; not restarted again"),
        "{out}"
    );
    // Blocked in `recv` for six seconds is alive: it stops gracefully at the end.
    assert!(!out.stderr.contains("node `patient`"), "{out}");
    assert!(out.stdout.contains("patient | idle done"), "{out}");
}

#[test]
fn cpu_affinity_is_applied_and_unavailable_cores_are_skipped() {
    let (state, dir) = (temp_dir(), temp_dir());
    let marker = format!("affinity-{}", std::process::id());
    let dataflow = write_dataflow(
        dir.path(),
        &format!(
            r#"
nodes:
  - id: pinned
    path: {{node}}
    env: {{ MODE: idle, TEST_MARKER: {marker} }}
    cpu_affinity: [0, 1000]
"#
        ),
    );
    let mut cmd = adora(state.path());
    cmd.args(["run", dataflow.to_str().unwrap(), "--stop-after", "60s"]);
    let mut child = ChildGuard::spawn(cmd, dir.path(), "run");
    let mut pids = Vec::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            pids = pids_with_env("TEST_MARKER", &marker);
            !pids.is_empty()
        }),
        "the node never started"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", pids[0])).unwrap();
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    child.signal(nix::sys::signal::Signal::SIGINT);
    child
        .wait_timeout(Duration::from_secs(30))
        .expect("adora run exits after Ctrl-C");
    let stderr = std::fs::read_to_string(dir.path().join("run.err")).unwrap();
    assert_eq!(allowed, "0", "{status}");
    assert!(
        stderr.contains("node `pinned`: cpu_affinity: core 1000 is not available on this machine"),
        "{stderr}"
    );
}

#[test]
fn every_stdout_and_stderr_line_is_sent_as_a_string_message() {
    let (state, dir) = (temp_dir(), temp_dir());
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: talker
    path: {node}
    env: { MODE: chatter, COUNT: 3 }
    outputs: [log]
    send_stdout_as: log
  - id: listener
    path: {node}
    env: { MODE: print-strings }
    inputs: { lines: talker/log }
"#,
    );
    // No --stop-after: the log output closes once the talker exited and its lines are sent, then
    // the listener's stream ends and the dataflow finishes by itself.
    let out = run(state.path(), &[dataflow.to_str().unwrap()]);
    assert!(out.status.success(), "{out}");
    for i in 0..3 {
        for line in [format!("line {i}"), format!("err {i}")] {
            assert!(
                out.stdout
                    .contains(&format!("listener | got lines: {line}")),
                "{line} missing\n{out}"
            );
        }
    }
    assert!(
        out.stdout.contains("listener | print-strings done"),
        "{out}"
    );
}

#[test]
fn send_stdout_as_must_be_a_declared_output() {
    let (state, dir) = (temp_dir(), temp_dir());
    let dataflow = write_dataflow(
        dir.path(),
        "nodes:\n  - id: talker\n    path: {node}\n    outputs: [data]\n    send_stdout_as: log\n",
    );
    let out = run(state.path(), &[dataflow.to_str().unwrap()]);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr.contains(
            ":5: node `talker`: field `send_stdout_as`: `log` is not one of the node's outputs"
        ),
        "{out}"
    );
}

#[test]
fn exit_when_nodes_finish_ends_a_dataflow_whose_nodes_also_consume_timers() {
    let (state, dir) = (temp_dir(), temp_dir());
    let yaml = |flag: &str| {
        format!(
            r#"{flag}
nodes:
  - id: source
    path: {{node}}
    env: {{ MODE: flood, COUNT: 5 }}
    outputs: [data]
  - id: sink
    path: {{node}}
    env: {{ MODE: recv }}
    inputs:
      in: source/data
      tick: adora/timer/millis/100
"#
        )
    };
    // In the file: the run ends by itself once the source is done.
    let in_file = write_dataflow(dir.path(), &yaml("exit_when_nodes_finish: true"));
    let out = run(state.path(), &[in_file.to_str().unwrap()]);
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains("sink   | input closed tick"), "{out}");
    assert!(out.stdout.contains("sink   | done received="), "{out}");
    // On the command line, overriding the file in both directions.
    let plain = write_dataflow(dir.path(), &yaml(""));
    let out = run(
        state.path(),
        &[plain.to_str().unwrap(), "--exit-when-nodes-finish"],
    );
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains("sink   | input closed tick"), "{out}");
    let out = run(
        state.path(),
        &[
            in_file.to_str().unwrap(),
            "--exit-when-nodes-finish=false",
            "--stop-after",
            "2s",
        ],
    );
    assert!(out.status.success(), "{out}");
    assert!(!out.stdout.contains("input closed tick"), "{out}");
}

#[test]
fn log_entries_at_or_above_min_log_level_are_shown_and_sent_as_json() {
    let (state, dir) = (temp_dir(), temp_dir());
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: logger
    path: {node}
    env: { MODE: levels }
    outputs: [entries]
    send_logs_as: entries
    min_log_level: info
  - id: listener
    path: {node}
    env: { MODE: print-strings }
    inputs: { logs: logger/entries }
"#,
    );
    let out = run(state.path(), &[dataflow.to_str().unwrap()]);
    assert!(out.status.success(), "{out}");
    for shown in ["logger   | INFO i", "logger   | WARN w"] {
        assert!(out.stdout.contains(shown), "{shown} missing\n{out}");
    }
    assert!(!out.all().contains("logger   | DEBUG d"), "{out}");
    assert!(!out.all().contains("logger   | plain"), "{out}");
    let entries: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once("got logs: ").map(|(_, json)| json))
        .collect();
    assert_eq!(entries.len(), 3, "{out}");
    // stdout and stderr are separate pipes: the error may come first.
    for expected in [
        r#""level":"info","node_id":"logger","message":"INFO i","target":null,"fields":{}}"#,
        r#""level":"warn","node_id":"logger","message":"WARN w""#,
        r#""level":"error","node_id":"logger","message":"e","target":"t","fields":{"code":7}}"#,
    ] {
        assert!(
            entries.iter().any(|e| e.contains(expected)),
            "{expected} missing\n{out}"
        );
    }
}

/// A coordinator and daemon of one test (`adora up`), brought down and killed on drop.
struct Cluster(MarkedCli);

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.0.run(&["down"]);
        for pid in self.0.leftovers() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn node_info_shows_why_the_health_check_killed_a_node() {
    let (state, dir) = (temp_dir(), temp_dir());
    let cluster = Cluster(MarkedCli::new(
        state.path(),
        "ADORA_E2E_COMPAT_RUNTIME",
        TIMEOUT,
    ));
    let cli = &cluster.0;
    assert!(cli
        .ok(&["up", "--port", "0"])
        .stdout
        .contains("adora is up"));
    let dataflow = write_dataflow(
        dir.path(),
        r#"
health_check_interval: 200ms
nodes:
  - id: hung
    path: {node}
    env: { MODE: hang }
    health_check_timeout: 1s
  - id: patient
    path: {node}
    env: { MODE: idle }
"#,
    );
    let flow = dataflow.to_str().unwrap();
    cli.ok(&["start", flow, "--name", "health", "--detach"]);
    // Node figures arrive with the daemon's heartbeat (every 5 s).
    let mut info = String::new();
    let reported = wait_until(Duration::from_secs(40), || {
        info = cli.ok(&["node", "info", "health", "hung"]).stdout;
        info.contains("last error:")
            && info.contains("unresponsive: no request to the daemon for")
            && info.contains("(health_check_timeout 1s); killed")
    });
    assert!(reported, "{info}");
    assert!(info.contains("status:    failed"), "{info}");
    cli.ok(&["stop", "health"]);
}
