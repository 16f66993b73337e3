//! The distributed control plane end to end: the real `adora` binary as coordinator, daemons and
//! CLI client on loopback with ephemeral ports, each test in its own state directory.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use adora_test_support::{
    adora, bin, process_alive, run_with_timeout, temp_dir, wait_until, ChildGuard, MarkedCli,
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
    cli: MarkedCli,
    children: Vec<ChildGuard>,
}

impl Env {
    fn new() -> Self {
        let dir = temp_dir();
        let cli = MarkedCli::new(dir.path(), MARKER, TIMEOUT);
        Self {
            dir,
            cli,
            children: Vec::new(),
        }
    }

    fn state(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        self.cli.cmd(args)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cli.run(args)
    }

    fn ok(&self, args: &[&str]) -> Output {
        self.cli.ok(args)
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

    /// The status of dataflow `name`, or `None` while it is unknown or the coordinator does not
    /// answer yet (polled while a coordinator restarts).
    fn status_of(&self, name: &str) -> Option<String> {
        let out = self.run(&["list", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_str::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|d| d["name"] == name)
            .map(|d| d["status"].as_str().unwrap().to_owned())
    }

    /// Our processes still alive (coordinator, daemons, nodes).
    fn leftovers(&self) -> Vec<u32> {
        self.cli.leftovers()
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

    // A node that prints a burst and exits at once: every line is shown before the end (the
    // daemon reported the end ahead of the last lines in about one run out of five).
    let burst = env.write(
        "burst.yml",
        &format!(
            "nodes:\n  - id: chat\n    path: {}\n    env: {{ MODE: chatter, COUNT: 2000 }}\n",
            bin("adora-test-node").display()
        ),
    );
    for run in 0..5 {
        let out = env.ok(&["start", burst.to_str().unwrap(), "--attach"]);
        let lines = out.stdout.lines().filter(|l| l.contains("line ")).count();
        assert_eq!(lines, 2000, "run {run}: {} lines shown", lines);
        assert!(out.stdout.contains("line 1999"), "run {run}");
    }
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

/// The pid of the `survivor` dataflow's node, once its daemon reported it.
fn survivor_pid(env: &Env) -> Option<u64> {
    let out = env.run(&["node", "list", "survivor", "--json"]);
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|nodes| nodes[0]["pid"].as_u64())
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
    let mut sender_pid = None;
    assert!(wait_until(WAIT, || {
        sender_pid = survivor_pid(&env);
        sender_pid.is_some()
    }));

    let pid = env.cli.kill_coordinator();
    assert!(wait_until(WAIT, || !process_alive(pid)));
    let before = sender_log(&env, &uuid).lines().count();
    assert!(
        wait_until(WAIT, || sender_log(&env, &uuid).lines().count()
            >= before + 3),
        "node output stopped growing after the coordinator died"
    );

    let new_pid = env.spawn(&["coordinator", "--port", &port], "coordinator2");
    std::fs::write(env.state().join("coordinator.pid"), new_pid.to_string()).unwrap();
    // A new coordinator has no figures of its own: the sender's pid comes from the daemon's
    // heartbeats once it reconnected, and it is the same process (nothing restarted).
    assert!(
        wait_until(WAIT, || survivor_pid(&env) == sender_pid),
        "the daemon did not reconnect and report the same sender process ({sender_pid:?}, now {:?})",
        survivor_pid(&env)
    );
    assert_eq!(env.status_of("survivor").as_deref(), Some("running"));
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

    // Elsewhere there is no CA to trust: the client says so (nothing is sent unverified).
    let elsewhere = temp_dir();
    let mut untrusting = adora(elsewhere.path());
    untrusting.args(["list", "--coordinator-port", &port]);
    let out = run_with_timeout(untrusting, TIMEOUT);
    assert!(!out.status.success());
    assert!(out.stderr.contains("no cluster CA to trust"), "{out}");
    assert!(out.stderr.contains("--ca-file"), "{out}");

    // With the CA but no token: refused by the coordinator.
    let ca = env.state().join("ca.pem");
    let mut missing = adora(elsewhere.path());
    missing.args([
        "list",
        "--coordinator-port",
        &port,
        "--ca-file",
        ca.to_str().unwrap(),
    ]);
    let out = run_with_timeout(missing, TIMEOUT);
    assert!(!out.status.success());
    assert!(out.stderr.contains("authentication failed"), "{out}");

    // A CA that did not sign the coordinator's certificate: the handshake fails, saying why.
    let other = temp_dir();
    let (other_ca, _) = adora_pki::ClusterCa::load_or_create(other.path()).unwrap();
    let mut wrong_ca = adora(elsewhere.path());
    wrong_ca
        .args(["list", "--coordinator-port", &port, "--ca-file"])
        .arg(other.path().join("ca.pem"));
    let out = run_with_timeout(wrong_ca, TIMEOUT);
    assert!(!out.status.success(), "{}", other_ca.hash());
    assert!(out.stderr.contains("not signed by the cluster CA"), "{out}");

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

/// Two busy nodes (one core each) chained by a 10 ms timer.
fn spin_dataflow() -> String {
    let node = bin("adora-test-node");
    format!(
        "nodes:\n  - id: spinner\n    path: {n}\n    env: {{ MODE: spin }}\n    inputs:\n      tick: adora/timer/millis/10\n    outputs: [data]\n  - id: spinsink\n    path: {n}\n    env: {{ MODE: spin }}\n    inputs:\n      data: spinner/data\n",
        n = node.display()
    )
}

/// `GET path` on the coordinator over TLS (its CA, its token); the body of a 200 answer.
fn http_get(env: &Env, path: &str) -> String {
    let ca = std::fs::read_to_string(env.state().join("ca.pem")).unwrap();
    let token = std::fs::read_to_string(env.state().join("token")).unwrap();
    let addr = format!("127.0.0.1:{}", env.port());
    let answer = adora_test_support::https::request(&addr, &ca, Some(token.trim()), "GET", path);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        !answer
            .head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{}",
        answer.head
    );
    answer.body
}

/// The value of the sample `name{...node="<node>"...}` in a `/metrics` page.
fn node_metric(page: &str, name: &str, node: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(&format!("node=\"{node}\"")))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
}

#[test]
fn top_once_json_shows_busy_nodes_and_metrics_counters_grow() {
    let env = Env::new();
    env.up();
    let flow = env.write("spin.yml", &spin_dataflow());
    env.ok(&[
        "start",
        flow.to_str().unwrap(),
        "--name",
        "busy",
        "--detach",
    ]);

    // Figures arrive with daemon heartbeats (every 5 s); CPU is measured between two of them.
    let mut snapshot = serde_json::Value::Null;
    let busy = wait_until(Duration::from_secs(40), || {
        snapshot = serde_json::from_str(&env.ok(&["top", "--once", "--json"]).stdout).unwrap();
        let nodes = snapshot.as_array().unwrap();
        nodes.len() == 2
            && nodes.iter().all(|n| {
                n["status"] == "running"
                    && n["cpu_percent"].as_f64().unwrap() > 10.0
                    && n["rss_bytes"].as_u64().unwrap() > 0
                    && n["uptime_secs"].as_f64().unwrap() > 0.0
                    && n["pid"].as_u64().is_some()
            })
    });
    assert!(busy, "{snapshot:#}");
    let nodes = snapshot.as_array().unwrap();
    for n in nodes {
        assert_eq!(n["dataflow"], "busy");
        assert!(n["machine"].as_str().is_some_and(|m| !m.is_empty()), "{n}");
    }
    let spinner = nodes.iter().find(|n| n["node"] == "spinner").unwrap();
    assert_eq!(spinner["inputs"]["tick"], "adora/timer/millis/10");
    assert_eq!(spinner["outputs"], serde_json::json!(["data"]));

    // `node list` / `node info` agree with `top`.
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["node", "list", "busy", "--json"]).stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list:#}");
    let info: serde_json::Value = serde_json::from_str(
        &env.ok(&["node", "info", "busy", "spinsink", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(info["inputs"]["data"], "spinner/data", "{info:#}");
    assert_eq!(info["restarts"], 0);
    let text = env.ok(&["node", "info", "busy", "spinsink"]).stdout;
    assert!(text.contains("data <- spinner/data"), "{text}");
    let missing = env.run(&["node", "info", "busy", "nope"]);
    assert!(!missing.status.success());
    assert!(missing.stderr.contains("has no node `nope`"), "{missing}");

    // /metrics: strict format, and counters that grow while the dataflow runs.
    let first = http_get(&env, "/metrics");
    check_prometheus_text(&first);
    assert!(
        first.contains("adora_daemons{state=\"connected\"} 1"),
        "{first}"
    );
    assert!(
        first.contains("adora_dataflows{status=\"running\"} 1"),
        "{first}"
    );
    assert!(
        first.contains("adora_daemon_last_heartbeat_age_seconds{daemon="),
        "{first}"
    );
    let sent = |page: &str| node_metric(page, "adora_node_messages_sent_total", "spinner");
    let received = |page: &str| node_metric(page, "adora_node_messages_received_total", "spinsink");
    let (sent0, received0) = (sent(&first).unwrap(), received(&first).unwrap());
    let mut later = String::new();
    let grew = wait_until(Duration::from_secs(20), || {
        later = http_get(&env, "/metrics");
        sent(&later).unwrap() > sent0 && received(&later).unwrap() > received0
    });
    assert!(
        grew,
        "counters did not grow from {sent0}/{received0}:\n{later}"
    );
    check_prometheus_text(&later);

    // Secure by default: /metrics needs the token, /api/health is open, plaintext is refused
    // with an explanation (not a hang).
    let ca = std::fs::read_to_string(env.state().join("ca.pem")).unwrap();
    let addr = format!("127.0.0.1:{}", env.port());
    let anonymous = adora_test_support::https::request(&addr, &ca, None, "GET", "/metrics");
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let wrong = adora_test_support::https::request(&addr, &ca, Some("0bad"), "GET", "/metrics");
    assert_eq!(wrong.status, 401, "{wrong:?}");
    let health = adora_test_support::https::request(&addr, &ca, None, "GET", "/api/health");
    assert_eq!(health.status, 200, "{health:?}");
    assert!(health.body.contains("\"ok\""), "{health:?}");
    let plain = adora_test_support::https::plaintext_get(&addr, "/api/health");
    assert!(plain.starts_with("HTTP/1.1 400"), "{plain}");
    assert!(plain.contains("speaks TLS only"), "{plain}");
    env.ok(&["stop", "busy"]);
}

/// A strict check of the Prometheus text format (0.0.4): `# HELP`/`# TYPE` comments, and samples
/// `name{label="value",...} number` that belong to the family declared last, with valid names.
fn check_prometheus_text(text: &str) {
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut family = String::new();
    assert!(text.ends_with('\n'), "no final newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let parts: Vec<&str> = rest.splitn(3, ' ').collect();
            assert!(
                parts.len() == 3 && name_ok(parts[1]),
                "bad comment {line:?}"
            );
            match parts[0] {
                "HELP" => {}
                "TYPE" => {
                    assert!(["counter", "gauge"].contains(&parts[2]), "{line:?}");
                    family = parts[1].to_owned();
                }
                _ => panic!("bad comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}"))),
            None => (series, ""),
        };
        assert!(
            name_ok(name) && name == family,
            "sample outside its family: {line:?}"
        );
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (label, value) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line:?}"));
            assert!(name_ok(label), "bad label in {line:?}");
            assert!(
                !value.trim_end_matches('"').contains('"'),
                "unescaped quote: {line:?}"
            );
        }
    }
}

#[test]
fn list_shows_how_often_nodes_were_restarted() {
    let env = Env::new();
    env.up();
    let yaml = format!(
        "nodes:\n  - id: flaky\n    path: {node}\n    env: {{ MODE: fail }}\n    restart_policy: on-failure\n    max_restarts: 2\n    restart_delay: 100ms\n  - id: steady\n    path: {node}\n    env: {{ MODE: idle }}\n",
        node = bin("adora-test-node").display()
    );
    let dataflow = env.write("flaky.yml", &yaml);
    env.ok(&[
        "start",
        dataflow.to_str().unwrap(),
        "--name",
        "flaky",
        "--detach",
    ]);
    // Restart counts come with the daemon's heartbeats (every 5 s).
    let restarts = || {
        let out = env.run(&["list", "--json"]);
        serde_json::from_str::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|rows| {
                rows.as_array()?
                    .iter()
                    .find(|r| r["name"] == "flaky")
                    .cloned()
            })
            .map(|row| row["restarts"]["flaky"].as_u64().unwrap_or(0))
            .unwrap_or(0)
    };
    assert!(
        wait_until(WAIT, || restarts() == 2),
        "list --json never showed 2 restarts"
    );
    let table = env.ok(&["list"]).stdout;
    let row = table
        .lines()
        .find(|l| l.starts_with("flaky"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.split_whitespace().nth(4) == Some("2"),
        "RESTARTS column: {table}"
    );
    env.ok(&["stop", "flaky"]);
}

#[test]
fn an_unreadable_store_is_refused_untouched_and_reset_store_moves_it_aside() {
    let mut env = Env::new();
    let store = env.state().join("coordinator.redb");
    let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&store, &garbage).unwrap();
    let out = env.run(&["coordinator", "--port", "0"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "the store file {} cannot be read and was left untouched",
            store.display()
        )),
        "{out}"
    );
    assert!(out.stderr.contains("--reset-store"), "{out}");
    assert_eq!(
        std::fs::read(&store).unwrap(),
        garbage,
        "the store was modified"
    );
    assert!(
        !env.state().join("coordinator.addr").exists(),
        "a refused coordinator looked started"
    );

    // --reset-store moves it aside (same bytes) and starts empty.
    env.spawn(
        &["coordinator", "--port", "0", "--reset-store"],
        "coordinator",
    );
    assert!(wait_until(WAIT, || env
        .state()
        .join("coordinator.addr")
        .exists()));
    let aside: Vec<PathBuf> = std::fs::read_dir(env.state())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.display().to_string().contains("coordinator.redb.reset-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage);
    assert!(env.ok(&["list", "--json"]).stdout.trim() == "[]");
}

/// A tmpfs mounted on a directory for one test (root only); unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `3M`) on `dir`; `None` (the test is skipped) when this
    /// is not root, unless test hosts are required (CI), where it fails.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(
                !adora_test_support::hosts::hosts_required(),
                "cannot mount a tmpfs on {} (root is needed)",
                dir.display()
            );
            println!("SKIPPED: mounting a tmpfs needs root");
            return None;
        }
        Some(Tmpfs(dir.to_owned()))
    }

    /// Writes `fill` until the filesystem is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("fill");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_change_the_full_disk_cannot_store_is_not_acknowledged_and_is_stored_once_there_is_room() {
    let mut env = Env::new();
    let Some(disk) = Tmpfs::mount(&env.state().join("disk"), "3M") else {
        return;
    };
    let store = format!("redb:{}", disk.0.join("coordinator.redb").display());
    let coordinator = |env: &mut Env, port: &str, log: &str| {
        let pid = env.spawn(&["coordinator", "--port", port, "--store", &store], log);
        std::fs::write(env.state().join("coordinator.pid"), pid.to_string()).unwrap();
        assert!(wait_until(WAIT, || env
            .state()
            .join("coordinator.addr")
            .exists()));
    };
    coordinator(&mut env, "0", "coordinator");
    let port = env.port();
    env.spawn(&["daemon", "--coordinator-port", &port], "daemon");
    assert!(
        wait_until(WAIT, || env
            .run(&["status", "--json"])
            .stdout
            .contains("\"connected\": true")),
        "the daemon did not register"
    );

    // The disk fills up: the start is carried out, but not acknowledged.
    let fill = disk.fill();
    let dataflow = env.write("flow.yml", &sender_dataflow(100_000));
    let out = env.run(&[
        "start",
        dataflow.to_str().unwrap(),
        "--name",
        "unstored",
        "--detach",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    for says in [
        "dataflow `unstored`",
        "was started, but the coordinator could not store it",
        "No space left on device",
        "a coordinator restart forgets this change",
    ] {
        assert!(out.stderr.contains(says), "{says}: {out}");
    }
    assert_eq!(env.status_of("unstored").as_deref(), Some("running"));

    // Room again: the coordinator stores what it kept, without another request...
    std::fs::remove_file(fill).unwrap();
    let log = env.state().join("coordinator.err");
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("takes writes again")),
        "the coordinator did not store the change once there was room"
    );
    // ... so a crashed coordinator's successor knows the dataflow.
    let pid = env.cli.kill_coordinator();
    assert!(wait_until(WAIT, || !process_alive(pid)));
    let _ = std::fs::remove_file(env.state().join("coordinator.addr"));
    coordinator(&mut env, &port, "coordinator2");
    assert_eq!(env.status_of("unstored").as_deref(), Some("running"));
    env.ok(&["stop", "unstored"]);
}
