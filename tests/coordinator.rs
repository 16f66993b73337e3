//! The distributed control plane end to end: the real `adora` binary as coordinator, daemons and
//! CLI client on loopback with ephemeral ports, each test in its own state directory.

#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use adora_test_support::{
    adora, bin, pids_with_env, process_alive, run_with_timeout, temp_dir, wait_until, ChildGuard,
    Output,
};

/// Upper bound of one CLI command.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for a condition to become true.
const WAIT: Duration = Duration::from_secs(30);
/// Marks every process a test starts (coordinator, daemons, nodes inherit it).
const MARKER: &str = "ADORA_E2E_COORDINATOR_TEST";

/// A state directory with its own coordinator and daemon(s); `down` and kill on drop.
struct Env {
    dir: tempfile::TempDir,
    children: Vec<ChildGuard>,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: temp_dir(),
            children: Vec::new(),
        }
    }

    fn state(&self) -> &Path {
        self.dir.path()
    }

    fn marker(&self) -> String {
        self.state().display().to_string()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = adora(self.state());
        cmd.args(args).env(MARKER, self.marker());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        run_with_timeout(self.cmd(args), TIMEOUT)
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(out.status.success(), "adora {args:?} failed:\n{out}");
        out
    }

    fn up(&self) {
        let out = self.ok(&["up", "--port", "0"]);
        assert!(out.stdout.contains("adora is up"), "{out}");
    }

    /// Starts a background `adora ...` (killed on drop).
    fn spawn(&mut self, args: &[&str], name: &str) -> u32 {
        let guard = ChildGuard::spawn(self.cmd(args), self.state(), name);
        let pid = guard.pid();
        self.children.push(guard);
        pid
    }

    fn port(&self) -> String {
        let addr = std::fs::read_to_string(self.state().join("coordinator.addr")).unwrap();
        addr.trim().rsplit_once(':').unwrap().1.to_owned()
    }

    fn write(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.state().join(name);
        std::fs::write(&path, yaml).unwrap();
        path
    }

    fn list_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["list", "--json"]).stdout).unwrap()
    }

    fn status_of(&self, name: &str) -> Option<String> {
        self.list_json()
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|d| d["name"] == name)
            .map(|d| d["status"].as_str().unwrap().to_owned())
    }

    /// Our processes still alive (coordinator, daemons, nodes).
    fn leftovers(&self) -> Vec<u32> {
        pids_with_env(MARKER, &self.marker())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = run_with_timeout(self.cmd(&["down"]), TIMEOUT);
        self.children.clear();
        for pid in self.leftovers() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The example sender, ticking every 20 ms and printing every 25 messages.
fn sender_dataflow(messages: u32) -> String {
    format!(
        "nodes:\n  - id: sender\n    path: {}\n    inputs:\n      tick: adora/timer/millis/20\n    outputs: [counter]\n    env:\n      MESSAGES: {messages}\n",
        bin("rust-dataflow-sender").display()
    )
}

fn sender_log(env: &Env, uuid: &str) -> String {
    std::fs::read_to_string(env.state().join(format!("logs/default/{uuid}/sender.txt")))
        .unwrap_or_default()
}

#[test]
fn up_start_list_logs_stop_down() {
    let env = Env::new();
    env.up();
    env.ok(&["up", "--port", "0"]); // idempotent
    let dataflow = env.write("flow.yml", &sender_dataflow(100_000));
    let out = env.ok(&[
        "start",
        dataflow.to_str().unwrap(),
        "--name",
        "flow",
        "--detach",
    ]);
    let uuid = out.stdout.trim().to_owned();
    assert_eq!(uuid.len(), 36, "{out}");

    let list = env.ok(&["list"]);
    assert!(
        list.stdout.contains("flow") && list.stdout.contains("running"),
        "{list}"
    );
    assert!(
        wait_until(WAIT, || env
            .ok(&["logs", "flow"])
            .stdout
            .contains("sender | sent 25 messages")),
        "node output never showed up in `adora logs`"
    );
    let dup = env.run(&[
        "start",
        dataflow.to_str().unwrap(),
        "--name",
        "flow",
        "--detach",
    ]);
    assert!(!dup.status.success());
    assert!(dup.stderr.contains("already named `flow`"), "{dup}");

    let stop = env.ok(&["stop", "flow", "--grace", "2s"]);
    assert!(stop.stderr.contains(&format!("stopped {uuid}")), "{stop}");
    assert_eq!(env.status_of("flow").as_deref(), Some("finished"));
    let logs = env.ok(&["logs", &uuid, "sender", "--tail", "2"]);
    assert!(logs.stdout.contains("stop requested"), "{logs}");
    assert!(env
        .ok(&["logs", "--coordinator"])
        .stdout
        .contains("coordinator listening"));

    env.ok(&["down"]);
    assert!(
        wait_until(WAIT, || env.leftovers().is_empty()),
        "processes left after down: {:?}",
        env.leftovers()
    );
    let unreachable = env.run(&["list", "--coordinator-port", &free_port().to_string()]);
    assert!(!unreachable.status.success());
    assert!(
        unreachable
            .stderr
            .contains("cannot reach the coordinator at 127.0.0.1:"),
        "{unreachable}"
    );
    assert!(unreachable.stderr.contains("adora up"), "{unreachable}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn start_attach_prints_output_and_exits_with_the_result() {
    let env = Env::new();
    env.up();
    let ok = env.write("ok.yml", &sender_dataflow(30));
    let out = env.ok(&["start", ok.to_str().unwrap(), "--attach"]);
    assert!(
        out.stdout
            .contains("sender | sender done: 30 messages sent"),
        "{out}"
    );
    assert!(out.stderr.contains("finished successfully"), "{out}");

    let failing = env.write(
        "fail.yml",
        &format!(
            "nodes:\n  - id: broken\n    path: {}\n    env: {{ MODE: fail, EXIT_CODE: 4 }}\n",
            bin("adora-test-node").display()
        ),
    );
    let out = env.run(&[
        "start",
        failing.to_str().unwrap(),
        "--attach",
        "--name",
        "bad",
    ]);
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr.contains("node `broken` failed: exit status 4"),
        "{out}"
    );
    assert_eq!(env.status_of("bad").as_deref(), Some("failed"));
}

#[test]
fn labelled_daemons_get_the_nodes_their_labels_say() {
    let mut env = Env::new();
    env.spawn(&["coordinator", "--port", "0"], "coordinator");
    assert!(wait_until(WAIT, || env
        .state()
        .join("coordinator.addr")
        .exists()));
    let port = env.port();
    for (id, side) in [("left-box", "left"), ("right-box", "right")] {
        let labels = format!("side={side}");
        let args = [
            "daemon",
            "--machine-id",
            id,
            "--labels",
            &labels,
            "--coordinator-port",
            &port,
        ];
        env.spawn(&args, id);
    }
    assert!(
        wait_until(WAIT, || {
            let out = env.run(&["status", "--json"]);
            out.status.success() && out.stdout.matches("\"connected\": true").count() == 2
        }),
        "the two daemons did not register"
    );
    let node = bin("adora-test-node");
    let yaml = format!(
        "nodes:\n  - id: l\n    path: {0}\n    env: {{ MODE: idle }}\n    _unstable_deploy: {{ labels: {{ side: left }} }}\n  - id: r\n    path: {0}\n    env: {{ MODE: idle }}\n    _unstable_deploy: {{ labels: {{ side: right }} }}\n",
        node.display()
    );
    let dataflow = env.write("labels.yml", &yaml);
    env.ok(&[
        "start",
        dataflow.to_str().unwrap(),
        "--name",
        "split",
        "--detach",
    ]);
    let list = env.list_json();
    let flow = &list[0];
    assert_eq!(flow["nodes"]["l"], "left-box", "{list}");
    assert_eq!(flow["nodes"]["r"], "right-box", "{list}");
    assert_eq!(flow["machines"].as_array().unwrap().len(), 2, "{list}");

    let missing = env.write(
        "gpu.yml",
        &format!(
            "nodes:\n  - id: g\n    path: {}\n    _unstable_deploy: {{ labels: {{ gpu: \"true\" }} }}\n",
            node.display()
        ),
    );
    let out = env.run(&["start", missing.to_str().unwrap(), "--detach"]);
    assert!(!out.status.success());
    assert!(
        out.stderr
            .contains("node `g`: no daemon matches labels {\"gpu\": \"true\"}"),
        "{out}"
    );
    env.ok(&["stop", "split"]);
}

#[test]
fn killing_the_coordinator_never_stops_the_nodes() {
    let mut env = Env::new();
    env.up();
    let port = env.port();
    let dataflow = env.write("flow.yml", &sender_dataflow(100_000));
    let uuid = env
        .ok(&[
            "start",
            dataflow.to_str().unwrap(),
            "--name",
            "survivor",
            "--detach",
        ])
        .stdout
        .trim()
        .to_owned();
    assert!(wait_until(WAIT, || sender_log(&env, &uuid)
        .contains("sent 25 messages")));

    let pid: i32 = std::fs::read_to_string(env.state().join("coordinator.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_until(WAIT, || !process_alive(pid as u32)));
    let before = sender_log(&env, &uuid).lines().count();
    assert!(
        wait_until(WAIT, || sender_log(&env, &uuid).lines().count()
            >= before + 3),
        "node output stopped growing after the coordinator died"
    );

    let new_pid = env.spawn(&["coordinator", "--port", &port], "coordinator2");
    std::fs::write(env.state().join("coordinator.pid"), new_pid.to_string()).unwrap();
    assert!(
        wait_until(WAIT, || env.status_of("survivor").as_deref()
            == Some("running")),
        "the daemon did not reconnect and report the dataflow"
    );
    env.ok(&["stop", "survivor"]);
}

#[test]
fn wrong_or_missing_token_is_refused() {
    let env = Env::new();
    env.up();
    let port = env.port();
    let mut wrong = env.cmd(&["list"]);
    wrong.env("ADORA_TOKEN", "not-the-token");
    let out = run_with_timeout(wrong, TIMEOUT);
    assert!(!out.status.success());
    assert!(out.stderr.contains("authentication failed"), "{out}");

    let elsewhere = temp_dir();
    let mut missing = adora(elsewhere.path());
    missing.args(["list", "--coordinator-port", &port]);
    let out = run_with_timeout(missing, TIMEOUT);
    assert!(!out.status.success());
    assert!(out.stderr.contains("authentication failed"), "{out}");

    let open = elsewhere.path().join("token");
    std::fs::write(&open, "x").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut wide = adora(elsewhere.path());
    wide.args([
        "list",
        "--coordinator-port",
        &port,
        "--token-file",
        open.to_str().unwrap(),
    ]);
    let out = run_with_timeout(wide, TIMEOUT);
    assert!(!out.status.success());
    assert!(out.stderr.contains("chmod 600"), "{out}");
}
