//! `adora cluster up|status|down` on real test hosts (network namespaces with their own `sshd`):
//! the coordinator runs in the test's root namespace, one daemon per host is started over SSH.
//! Hosts share this filesystem, so the freshly built `adora` is reached through `install_dir`,
//! and every machine gets its own `state_dir` under the test's temp dir.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use adora_test_support::{
    adora, bin, bin_dir, fleet::Fleet, hosts::TestHosts, require_hosts, run_with_timeout, temp_dir,
    wait_until,
};

/// Upper bound of one CLI command (`cluster up` waits up to 30 s for registrations).
const TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for a condition to become true.
const WAIT: Duration = Duration::from_secs(30);
/// Marks the processes this test starts locally (the coordinator inherits it).
const MARKER: &str = "ADORA_E2E_CLUSTER_TEST";

/// Text in every message the flood node sends (it must never be seen on the wire).
const PAYLOAD_MARKER: &str = "PAYLOADMARKER7f3a";

/// A machine of the test's cluster.yml: (id, address, labels as YAML flow mapping).
struct MachineSpec {
    id: &'static str,
    host: String,
    labels: &'static str,
}

/// Writes `cluster.yml` for `machines` (each with its own state dir); returns its path.
fn write_cluster(fleet: &Fleet, machines: &[MachineSpec]) -> PathBuf {
    let mut yaml = format!(
        "coordinator: {{ addr: {}, port: {} }}\nmachines:\n",
        fleet.hosts.gateway_ip(),
        fleet.port
    );
    for m in machines {
        yaml.push_str(&format!(
            "  - id: {}\n    host: {}\n    user: root\n    labels: {}\n    install_dir: {}\n    state_dir: {}\n",
            m.id,
            m.host,
            m.labels,
            bin_dir().display(),
            fleet.machine_dir(m.id).display()
        ));
    }
    let path = fleet.dir.path().join("cluster.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn three_machines(hosts: &TestHosts) -> Vec<MachineSpec> {
    vec![
        MachineSpec {
            id: "robot",
            host: hosts[0].ip().to_string(),
            labels: "{ arch: arm64 }",
        },
        MachineSpec {
            id: "gpu-server",
            host: hosts[1].ip().to_string(),
            labels: "{ gpu: 'true' }",
        },
        MachineSpec {
            id: "edge",
            host: hosts[2].ip().to_string(),
            labels: "{ zone: a }",
        },
    ]
}

/// A dataflow over the three machines, placed by machine id (robot) and by labels (the others).
fn dataflow(dir: &Path) -> PathBuf {
    let node = bin("adora-test-node");
    let yaml = format!(
        "nodes:
  - id: flood
    path: {node}
    env: {{ MODE: flood, COUNT: 200, MARKER: {PAYLOAD_MARKER} }}
    outputs: [data]
    _unstable_deploy: {{ machine: robot }}
  - id: sink
    path: {node}
    env: {{ MODE: recv }}
    inputs:
      data: {{ source: flood/data, queue_size: 1000 }}
    _unstable_deploy: {{ machine: robot }}
  - id: edge-sink
    path: {node}
    env: {{ MODE: recv }}
    inputs:
      data: {{ source: flood/data, queue_size: 1000 }}
    _unstable_deploy: {{ machine: edge }}
  - id: gpu-worker
    path: {node}
    env: {{ MODE: idle }}
    _unstable_deploy: {{ labels: {{ gpu: 'true' }} }}
  - id: edge-worker
    path: {node}
    env: {{ MODE: idle }}
    _unstable_deploy: {{ labels: {{ zone: a }} }}
",
        node = node.display()
    );
    let path = dir.join("dataflow.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn cluster_up_start_status_down() {
    let hosts = require_hosts!("cluster_up", 3);
    let fleet = Fleet::new(hosts, MARKER, TIMEOUT);
    let machines = three_machines(&fleet.hosts);
    let cluster = write_cluster(&fleet, &machines);
    // Every frame on the hosts' bridge, from `cluster up` to the end of the cross-host flow.
    let capture = fleet
        .hosts
        .capture(&fleet.dir.path().join("bridge.pcap"), "");

    let out = fleet.cluster("up", &cluster, &[]);
    println!("{out}");
    assert!(out.status.success(), "{out}");
    let gateway = fleet.hosts.gateway_ip();
    assert!(
        out.stdout.contains(&format!(
            "Starting coordinator on {gateway}:{}...",
            fleet.port
        )),
        "{out}"
    );
    for m in &machines {
        let line = format!("Starting daemon on {} (root@{})... OK", m.id, m.host);
        assert!(out.stdout.contains(&line), "missing `{line}`:\n{out}");
        // No admin token on machines: the daemon enrolled with its join code and keeps its
        // own identity (key 0600).
        let dir = fleet.machine_dir(m.id);
        assert!(!dir.join("token").exists(), "admin token on {}", m.id);
        let key = dir.join("identity").join(m.id).join("daemon.key");
        let mode = std::fs::metadata(&key).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
    let secrets: Vec<String> = machines
        .iter()
        .map(|m| {
            let code = std::fs::read_to_string(fleet.machine_dir(m.id).join("join-code")).unwrap();
            code.trim().rsplit('.').next().unwrap().to_owned()
        })
        .collect();
    assert!(out.stdout.contains("All 3 daemons connected."), "{out}");

    // Again: safe, nothing restarted.
    let daemon_pid =
        std::fs::read_to_string(fleet.machine_dir("robot").join("daemon.pid")).unwrap();
    let again = fleet.cluster("up", &cluster, &[]);
    assert!(again.status.success(), "{again}");
    assert!(again.stdout.contains("Daemon on robot (root@"), "{again}");
    assert!(again.stdout.contains("already connected"), "{again}");
    assert!(again.stdout.contains("All 3 daemons connected."), "{again}");
    assert_eq!(
        std::fs::read_to_string(fleet.machine_dir("robot").join("daemon.pid")).unwrap(),
        daemon_pid,
        "the connected daemon was restarted"
    );

    // Each daemon runs inside its host.
    for (i, m) in machines.iter().enumerate() {
        let pid: u32 = std::fs::read_to_string(fleet.machine_dir(m.id).join("daemon.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            fleet.hosts[i].pids().contains(&pid),
            "daemon of {} not in its host",
            m.id
        );
        assert!(fleet.remote_adora_pids().contains(&pid));
    }

    let flow = dataflow(fleet.dir.path());
    let started = fleet.ok(&[
        "start",
        &flow.display().to_string(),
        "--name",
        "spread",
        "--detach",
    ]);
    assert!(started.all().contains("spread"), "{started}");

    // Messages flow (robot → robot), and every node went where its placement says.
    let mut logs = None;
    let flowed = wait_until(WAIT, || {
        let out = fleet.run(&["logs", "spread", "sink"]);
        let done = out.stdout.contains("done received=200");
        logs = Some(out);
        done
    });
    assert!(
        flowed,
        "sink never got the 200 messages:\n{}",
        logs.unwrap()
    );
    // ...and across machines (robot → edge over Zenoh): all 200, since nodes only start once
    // every remote receiver has subscribed.
    let mut logs = None;
    let crossed = wait_until(WAIT, || {
        let out = fleet.run(&["logs", "spread", "edge-sink"]);
        let done = out.stdout.contains("done received=200");
        logs = Some(out);
        done
    });
    assert!(
        crossed,
        "edge-sink never got the 200 messages:\n{}",
        logs.unwrap()
    );
    // The capture sees the bridge (a plaintext request with a marker shows up in it) but none
    // of the secrets nor the node data that crossed it.
    let probe = format!(
        "import socket; s = socket.create_connection(('{gateway}', {})); \
         s.sendall(b'GET /CAPTUREPROBE91c2 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); \
         print(s.recv(4096).decode())",
        fleet.port
    );
    let mut python = fleet.hosts[0].command("python3");
    python.args(["-c", &probe]);
    let refused = run_with_timeout(python, TIMEOUT);
    assert!(refused.stdout.contains("speaks TLS only"), "{refused}");
    let pcap = capture.stop();
    let seen = |needle: &str| pcap.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        seen("CAPTUREPROBE91c2"),
        "the capture ({} bytes) missed the probe; tcpdump said: {}",
        pcap.len(),
        std::fs::read_to_string(fleet.hosts.dir().join("tcpdump.err")).unwrap_or_default()
    );
    let token = std::fs::read_to_string(fleet.dir.path().join("local/token")).unwrap();
    assert!(
        !seen(token.trim()),
        "the admin token crossed the bridge in cleartext"
    );
    for secret in &secrets {
        assert!(
            !seen(secret),
            "a join code's secret crossed the bridge in cleartext"
        );
    }
    assert!(
        !seen(PAYLOAD_MARKER),
        "node data crossed the bridge in cleartext"
    );
    let list = fleet.ok(&["list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let text = list.to_string();
    for (node, machine) in [
        ("flood", "robot"),
        ("sink", "robot"),
        ("edge-sink", "edge"),
        ("gpu-worker", "gpu-server"),
        ("edge-worker", "edge"),
    ] {
        assert!(
            text.contains(&format!("\"{node}\":\"{machine}\"")),
            "{node} not on {machine}: {text}"
        );
    }

    let status = fleet.ok(&["cluster", "status"]);
    println!("{status}");
    for m in &machines {
        assert!(
            status
                .stdout
                .lines()
                .any(|l| l.starts_with(m.id) && l.contains("s ago")),
            "{status}"
        );
    }
    assert!(status.stdout.contains("Active dataflows: 1"), "{status}");
    let json = fleet.ok(&["cluster", "status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["daemons"].as_array().unwrap().len(), 3, "{json}");
    assert!(json["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["connected"] == true));
    assert_eq!(
        json["active_dataflows"].as_array().unwrap().len(),
        1,
        "{json}"
    );
    assert_eq!(json["active_dataflows"][0]["name"], "spread");

    let down = fleet.down();
    println!("{down}");
    assert!(down.stdout.contains("Stopping dataflow spread"), "{down}");
    for m in &machines {
        assert!(
            down.stdout
                .contains(&format!("Stopping daemon {}... OK", m.id)),
            "{down}"
        );
    }
    assert!(down.stdout.contains("Cluster is down."), "{down}");
    fleet.assert_nothing_left(WAIT);

    // Down again: nothing to do.
    let again = fleet.down();
    assert!(again.stdout.contains("nothing to stop"), "{again}");
}

#[test]
fn unreachable_machine_is_reported_the_others_come_up_and_go_down_over_ssh() {
    let hosts = require_hosts!("cluster_unreach", 3);
    let fleet = Fleet::new(hosts, MARKER, TIMEOUT);
    let mut machines = three_machines(&fleet.hosts);
    // An address in the hosts' subnet where no host exists.
    let subnet = fleet.hosts.subnet().octets();
    let ghost = Ipv4Addr::new(subnet[0], subnet[1], subnet[2], 250).to_string();
    machines.push(MachineSpec {
        id: "ghost",
        host: ghost.clone(),
        labels: "{}",
    });
    let cluster = write_cluster(&fleet, &machines);

    let out = fleet.cluster("up", &cluster, &[]);
    println!("{out}");
    assert!(!out.status.success(), "must fail:\n{out}");
    assert!(
        out.stdout.contains(&format!(
            "Starting daemon on ghost (root@{ghost})... FAILED"
        )),
        "{out}"
    );
    assert!(out.stdout.contains("3 of 4 daemons connected."), "{out}");
    assert!(out.stdout.contains("1 machine failed:"), "{out}");
    let report = out
        .stdout
        .lines()
        .find(|l| l.starts_with("  ghost ("))
        .unwrap_or_else(|| panic!("no report line for ghost:\n{out}"));
    assert!(report.contains("cannot reach"), "{out}");
    assert!(
        out.stdout.contains("hint") || report.contains("hint"),
        "{out}"
    );

    let status = fleet.ok(&["cluster", "status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let mut ids: Vec<String> = json["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["edge", "gpu-server", "robot"]);

    // The coordinator crashes: with the cluster file, `down` still stops every daemon it can
    // reach over SSH, and names the one it cannot.
    fleet.kill_coordinator();
    let daemons = fleet.remote_adora_pids();
    assert_eq!(daemons.len(), 3, "{daemons:?}");
    let down = fleet.cluster("down", &cluster, &[]);
    println!("{down}");
    assert!(!down.status.success(), "ghost cannot be stopped:\n{down}");
    assert!(
        down.stdout.contains("stopping the daemons over SSH"),
        "{down}"
    );
    for m in &machines[..3] {
        let line = format!(
            "Stopping daemon {} over SSH (root@{})... OK (pid ",
            m.id, m.host
        );
        assert!(down.stdout.contains(&line), "missing `{line}`:\n{down}");
    }
    assert!(
        down.stdout.contains(&format!(
            "Stopping daemon ghost over SSH (root@{ghost})... FAILED"
        )),
        "{down}"
    );
    assert!(
        down.stdout
            .contains("1 part(s) of the cluster did not stop"),
        "{down}"
    );
    fleet.assert_nothing_left(WAIT);
    // The daemons' pid files are gone: nothing is left to stop.
    let again = fleet.cluster("down", &cluster, &[]);
    for m in &machines[..3] {
        assert!(
            again
                .stdout
                .contains(&format!("(root@{})... OK (it was not running)", m.host)),
            "{again}"
        );
    }
}

/// `cluster.yml` problems: exit code 2, each named with its field and line; nothing started.
#[test]
fn invalid_cluster_files_are_rejected_with_field_and_line() {
    let dir = temp_dir();
    // (file, line, field, message)
    let cases = [
        (
            "coordinator: { addr: 10.0.0.1 }\nmachines: []\n",
            2,
            "machines",
            "a cluster needs at least one machine",
        ),
        (
            "coordinator: { addr: 10.0.0.1 }\nmachines:\n  - { id: a, host: h }\n  - { id: a, host: h2 }\n",
            4,
            "machines[1].id",
            "duplicate machine id `a`",
        ),
        (
            "coordinator: { addr: 10.0.0.1 }\nmachines:\n  - { id: '', host: h }\n",
            3,
            "machines[0].id",
            "machine id must not be empty",
        ),
        (
            "coordinator: { addr: 10.0.0.1 }\nmachines:\n  - { id: a, host: '' }\n",
            3,
            "machines[0].host",
            "host must not be empty",
        ),
        (
            "coordinator: { addr: 10.0.0.1 }\nmachines:\n  - id: a\n    host: h\n    colour: red\n",
            5,
            "machines[0].colour",
            "unknown field `colour`",
        ),
    ];
    for (i, (yaml, line, field, message)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("cluster-{i}.yml"));
        std::fs::write(&path, yaml).unwrap();
        let mut cmd = adora(&dir.path().join("state"));
        cmd.args(["cluster", "up", &path.display().to_string()]);
        let out = run_with_timeout(cmd, TIMEOUT);
        assert_eq!(out.status.code(), Some(2), "case {i}:\n{out}");
        let expected = format!("{}:{line}: field `{field}`: {message}", path.display());
        assert!(
            out.stderr.contains(&expected),
            "case {i}: `{expected}` missing:\n{out}"
        );
        assert!(
            !out.stdout.contains("Starting coordinator"),
            "case {i}:\n{out}"
        );
    }
}

/// The remote `PATH` a not-installed report printed for `id` (between the parentheses after
/// "non-interactive shell").
fn reported_path<'a>(out: &'a str, id: &str) -> &'a str {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("  {id} (")))
        .unwrap_or_else(|| panic!("no report line for {id}:\n{out}"));
    let (_, rest) = line
        .split_once("non-interactive shell (")
        .unwrap_or_else(|| panic!("no PATH in `{line}`"));
    rest.trim_end_matches(')')
}

/// A machine without `adora` (an empty `install_dir`; no `install_dir` and nothing on the SSH
/// user's `PATH`): `cluster up` and `cluster install` say that it is not installed, where they
/// looked and how to fix it — not that SSH failed — and exit non-zero.
#[test]
fn missing_adora_is_reported_with_where_it_was_looked_for_and_the_fix() {
    let hosts = require_hosts!("cluster_noadora", 1);
    let fleet = Fleet::new(hosts, MARKER, TIMEOUT);
    let empty = fleet.dir.path().join("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    let host = fleet.hosts[0].ip().to_string();
    let yaml = format!(
        "coordinator: {{ addr: {gw}, port: {port} }}\nmachines:\n\
         \x20 - {{ id: empty-dir, host: {host}, user: root, install_dir: {empty}, state_dir: {s1} }}\n\
         \x20 - {{ id: no-dir, host: {host}, user: root, state_dir: {s2} }}\n",
        gw = fleet.hosts.gateway_ip(),
        port = fleet.port,
        empty = empty.display(),
        s1 = fleet.machine_dir("empty-dir").display(),
        s2 = fleet.machine_dir("no-dir").display(),
    );
    let cluster = fleet.dir.path().join("cluster.yml");
    std::fs::write(&cluster, yaml).unwrap();

    for sub in ["up", "install"] {
        let out = fleet.cluster(sub, &cluster, &[]);
        println!("cluster {sub}:\n{out}");
        assert_eq!(
            out.status.code(),
            Some(1),
            "cluster {sub} must fail:\n{out}"
        );
        assert!(!out.stdout.contains("could not be executed"), "{out}");
        assert!(!out.stdout.contains("check the SSH"), "{out}");
        assert!(!out.stdout.contains("check SSH"), "{out}");
        assert!(
            out.stdout.contains(&format!(
                "  empty-dir (root@{host}): `adora` is not installed on empty-dir: not found in \
                 install_dir {} nor on the PATH of the SSH user's non-interactive shell (",
                empty.display()
            )),
            "{out}"
        );
        assert!(
            out.stdout.contains(&format!(
                "  no-dir (root@{host}): `adora` is not installed on no-dir: not found on the \
                 PATH of the SSH user's non-interactive shell ("
            )),
            "{out}"
        );
        for id in ["empty-dir", "no-dir"] {
            let path = reported_path(&out.stdout, id);
            assert!(
                path.split(':').any(|d| d == "/usr/bin" || d == "/bin"),
                "{id}: `{path}` is not a PATH:\n{out}"
            );
        }
        assert!(
            out.stdout.contains(&format!(
                "    hint: copy the binary to {} with `adora cluster upgrade --binary PATH`",
                empty.display()
            )),
            "{out}"
        );
        assert!(
            out.stdout
                .contains("    hint: set install_dir in cluster.yml to the directory of `adora`"),
            "{out}"
        );
    }
    assert!(
        fleet.remote_adora_pids().is_empty(),
        "no daemon may have started"
    );

    // The hint holds: `cluster upgrade --binary` copies adora into install_dir (and starts the
    // machine's daemon: the upgrade restarts it), and `up` finds everything running.
    let single = fleet.dir.path().join("single.yml");
    let text = std::fs::read_to_string(&cluster).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.contains("id: no-dir"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&single, text).unwrap();
    let adora_bin = bin("adora").display().to_string();
    let upgrade = fleet.cluster(
        "upgrade",
        &single,
        &["--binary", &adora_bin, "--min-healthy-time", "1s"],
    );
    println!("cluster upgrade:\n{upgrade}");
    assert!(upgrade.status.success(), "{upgrade}");
    assert!(empty.join("adora").is_file(), "not copied:\n{upgrade}");
    let up = fleet.cluster("up", &single, &[]);
    println!("cluster up after the copy:\n{up}");
    assert!(up.status.success(), "{up}");
    assert!(up.stdout.contains("All 1 daemon connected."), "{up}");
    fleet.down();
    fleet.assert_nothing_left(WAIT);
}
