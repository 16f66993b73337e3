//! Binary distribution (`_unstable_deploy.distribute: local | scp | http`) on real test hosts:
//! one node per strategy, each on its own host, none of their binaries present beforehand at the
//! path it runs from. Hosts share this filesystem, so "where the binary is" is told apart by
//! paths: every node prints its own executable (`PRINT_EXE`) and the test checks it is the copy
//! its strategy put there (the scp directory of that machine's state dir, the daemon's download
//! directory, the `working_dir` the daemon built in).

use std::{path::Path, time::Duration};

use adora_test_support::{
    bin, require_hosts, run_with_timeout, services::Coordinator, temp_dir, ChildGuard, Output,
};

const TIMEOUT: Duration = Duration::from_secs(180);

/// source (scp, machine a) → relay (http, machine b) → sink (local build, machine c).
fn dataflow(state: &Path, count: u64) -> String {
    let node = bin("adora-test-node");
    let node = node.display();
    let work = state.join("work-c");
    let work = work.display();
    format!(
        r#"
nodes:
  - id: source
    path: build/source-node
    build: mkdir -p build && cp {node} build/source-node
    env: {{ MODE: seq-source, COUNT: {count}, PRINT_EXE: 1 }}
    inputs: {{ tick: adora/timer/millis/20 }}
    outputs: [data]
    _unstable_deploy: {{ machine: a, distribute: scp }}
  - id: relay
    path: build/relay-node
    build: mkdir -p build && cp {node} build/relay-node
    env: {{ MODE: relay, PRINT_EXE: 1 }}
    inputs: {{ in: {{ source: source/data, queue_size: 1000 }} }}
    outputs: [out]
    _unstable_deploy: {{ machine: b, distribute: http }}
  - id: sink
    path: {work}/sink-node
    build: cp {node} ./sink-node && echo built sink in $(pwd)
    env: {{ MODE: seq-sink, PRINT_EXE: 1 }}
    inputs: {{ in: {{ source: relay/out, queue_size: 1000 }} }}
    _unstable_deploy: {{ machine: c, distribute: local, working_dir: {work} }}
"#
    )
}

struct Setup {
    hosts: adora_test_support::hosts::TestHosts,
    state: tempfile::TempDir,
    coordinator: Coordinator,
    _daemons: Vec<ChildGuard>,
    cluster: std::path::PathBuf,
    flow: std::path::PathBuf,
}

fn setup(name: &str) -> Option<Setup> {
    let hosts = require_hosts!(name, 3, None);
    let state = temp_dir();
    let coordinator = Coordinator::start(state.path(), &hosts.gateway_ip().to_string());
    let daemons: Vec<ChildGuard> = coordinator.daemons_on(&hosts, &["a", "b", "c"]);
    let mut yaml = format!(
        "coordinator: {{ addr: {}, port: {} }}\nmachines:\n",
        hosts.gateway_ip(),
        coordinator.port()
    );
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        yaml.push_str(&format!(
            "  - {{ id: {id}, host: {}, user: root, state_dir: {} }}\n",
            hosts.host(i).ip(),
            state.path().join("machines").join(id).display()
        ));
    }
    let cluster = state.path().join("cluster.yml");
    std::fs::write(&cluster, yaml).unwrap();
    let src = state.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let flow = src.join("dataflow.yml");
    std::fs::write(&flow, dataflow(state.path(), 30)).unwrap();
    Some(Setup {
        hosts,
        state,
        coordinator,
        _daemons: daemons,
        cluster,
        flow,
    })
}

impl Setup {
    fn adora(&self, args: &[&str]) -> Output {
        let mut cmd = self.coordinator.cli();
        cmd.args(args);
        run_with_timeout(cmd, TIMEOUT)
    }

    fn start(&self, name: &str) -> Output {
        let (flow, cluster) = (
            self.flow.display().to_string(),
            self.cluster.display().to_string(),
        );
        let ssh_config = self.hosts.ssh_config().display().to_string();
        self.adora(&[
            "start",
            &flow,
            "--attach",
            "--build",
            "--name",
            name,
            "--cluster",
            &cluster,
            "--ssh-config",
            &ssh_config,
        ])
    }
}

/// The `exe=` line `node` printed.
fn exe_of<'a>(out: &'a Output, node: &str) -> &'a str {
    out.stdout
        .lines()
        .find_map(|l| {
            let (prefix, rest) = l.split_once(" | ")?;
            (prefix.trim() == node)
                .then_some(rest)?
                .strip_prefix("exe=")
        })
        .unwrap_or_else(|| panic!("no exe line of `{node}`:\n{out}"))
}

#[test]
fn one_node_per_strategy_on_three_hosts_runs_the_distributed_binaries() {
    let Some(s) = setup("distribute_three") else {
        return;
    };
    let state = s.state.path();
    let work = state.join("work-c");
    assert!(
        !work.exists(),
        "the local node's working dir must not exist beforehand"
    );

    let out = s.start("dist");
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains("source | source sent=30"), "{out}");
    assert!(out.stdout.contains("relay  | relay forwarded=30"), "{out}");
    assert!(
        out.stdout
            .contains("sink   | seq-sink done received=30 lost=0 next=30"),
        "{out}"
    );
    // scp: the copy in machine a's state dir, per build.
    let source = exe_of(&out, "source");
    let scp_dir = state.join("machines/a/dataflows");
    assert!(
        source.starts_with(scp_dir.to_str().unwrap()),
        "{source}\n{out}"
    );
    assert!(source.ends_with("/source/source-node"), "{source}");
    // http: the daemon's download, under its own state.
    let relay = exe_of(&out, "relay");
    let http_dir = state.join("dataflows/b");
    assert!(
        relay.starts_with(http_dir.to_str().unwrap()),
        "{relay}\n{out}"
    );
    // local: built by daemon c in its working dir (created), output streamed to the CLI.
    assert_eq!(
        exe_of(&out, "sink"),
        work.join("sink-node").display().to_string()
    );
    assert!(
        out.stdout
            .contains(&format!("[build] built sink in {}", work.display())),
        "{out}"
    );
    assert!(out.all().contains("copied `source`"), "{out}");
    assert!(out.all().contains("uploaded `relay`"), "{out}");
    // The upload is in the coordinator's content-addressed store.
    let blobs: Vec<_> = std::fs::read_dir(state.join("artifacts/blobs"))
        .unwrap()
        .collect();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
}

#[test]
fn a_corrupted_upload_is_rejected_by_the_daemon_and_nothing_starts() {
    let Some(s) = setup("distribute_corrupt") else {
        return;
    };
    let state = s.state.path();
    let out = s.start("first");
    assert!(out.status.success(), "{out}");

    // Corrupt the stored upload, then restart: the restart reuses the stored artifacts, so
    // daemon b downloads the corrupted bytes.
    let blobs = state.join("artifacts/blobs");
    for blob in std::fs::read_dir(&blobs).unwrap() {
        let path = blob.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[1000] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let out = s.adora(&["restart", "first"]);
    assert!(!out.status.success(), "{out}");
    let all = out.all();
    for needle in [
        "node `relay`",
        "machine `b`",
        "distribute: http",
        "checksum mismatch",
    ] {
        assert!(all.contains(needle), "missing {needle:?}:\n{out}");
    }
    // Nothing of the new run keeps running: no node process on any host (the daemons only).
    let nodes_running = || {
        s.hosts.hosts().iter().flat_map(|h| h.pids()).any(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe.to_string_lossy().contains("-node"))
        })
    };
    assert!(
        adora_test_support::wait_until(Duration::from_secs(20), || !nodes_running()),
        "node processes still run after the failed start"
    );
    let list = s.adora(&["list"]);
    assert!(!list.stdout.contains("running"), "{list}");
}

/// `early` on machine a needs no preparation and would be spawned at once; `relay` on machine b
/// is an `http` node. `early` writes a marker file as the first thing it does.
fn two_phase_dataflow(state: &Path, marker: &Path) -> String {
    let node = bin("adora-test-node");
    let script = state.join("early.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ntouch '{}'\nexec '{}'\n",
            marker.display(),
            node.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    format!(
        r#"
nodes:
  - id: early
    path: {script}
    env: {{ MODE: idle }}
    _unstable_deploy: {{ machine: a }}
  - id: relay
    path: build/relay-node
    build: mkdir -p build && cp {node} build/relay-node
    env: {{ MODE: idle }}
    _unstable_deploy: {{ machine: b, distribute: http }}
"#,
        script = script.display(),
        node = node.display(),
    )
}

/// The build id `adora build` printed (its last stdout line).
fn build_id_of(out: &Output) -> String {
    let id = out
        .stdout
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    assert!(
        id.len() == 36 && id.matches('-').count() == 4,
        "no build id:\n{out}"
    );
    id
}

#[test]
fn a_corrupt_artifact_on_one_machine_keeps_every_other_machine_from_starting_anything() {
    let Some(s) = setup("distribute_all_or_nothing") else {
        return;
    };
    let state = s.state.path();
    let marker = state.join("early-ran");
    std::fs::write(&s.flow, two_phase_dataflow(state, &marker)).unwrap();
    let flow = s.flow.display().to_string();

    // Upload relay's binary once, then corrupt it in the coordinator's store.
    let out = s.adora(&["build", &flow]);
    assert!(out.status.success(), "{out}");
    let build_id = build_id_of(&out);
    for blob in std::fs::read_dir(state.join("artifacts/blobs")).unwrap() {
        let path = blob.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[1000] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }

    let out = s.adora(&["start", &flow, "--detach", "--build-id", &build_id]);
    assert!(!out.status.success(), "{out}");
    for needle in [
        "nothing was started",
        "node `relay`",
        "machine `b`",
        "distribute: http",
        "checksum mismatch",
    ] {
        assert!(out.stderr.contains(needle), "missing {needle:?}:\n{out}");
    }
    // Machine a was never asked to spawn `early`: it did not run, not even briefly.
    assert!(!marker.exists(), "`early` ran on machine a:\n{out}");
    let list = s.adora(&["list"]);
    assert!(list.stdout.contains("failed"), "{list}");
    assert!(!list.stdout.contains("running"), "{list}");
}

#[test]
fn adora_build_builds_on_the_machines_and_start_build_id_runs_that_build() {
    let Some(s) = setup("distribute_build") else {
        return;
    };
    let state = s.state.path();
    let work = state.join("work-c");
    let (flow, cluster) = (
        s.flow.display().to_string(),
        s.cluster.display().to_string(),
    );
    let ssh_config = s.hosts.ssh_config().display().to_string();
    let dist = ["--cluster", &cluster, "--ssh-config", &ssh_config];

    let mut args = vec!["build", &flow, "--json"];
    args.extend(dist);
    let out = s.adora(&args);
    assert!(out.status.success(), "{out}");
    // scp and http nodes built here and sent; the local node built by daemon c, output streamed.
    assert!(out.all().contains("copied `source`"), "{out}");
    assert!(out.all().contains("uploaded `relay`"), "{out}");
    assert!(
        out.stderr
            .contains(&format!("[build] built sink in {}", work.display())),
        "{out}"
    );
    assert!(work.join("sink-node").is_file(), "{out}");
    // stdout is the JSON alone (build output went to stderr).
    let json: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}:\n{out}"));
    let build_id = json["build_id"].as_str().unwrap().to_owned();
    assert_eq!(json["placement"]["sink"], "c", "{out}");

    // Starting that build builds, copies and uploads nothing, and runs the built binaries.
    let out = s.adora(&["start", &flow, "--attach", "--build-id", &build_id]);
    assert!(out.status.success(), "{out}");
    let all = out.all();
    for absent in ["[build]", "copied `", "uploaded `"] {
        assert!(!all.contains(absent), "unexpected {absent:?}:\n{out}");
    }
    assert!(
        out.stdout
            .contains("sink   | seq-sink done received=30 lost=0 next=30"),
        "{out}"
    );
    assert!(
        exe_of(&out, "source").contains(&format!("/dataflows/{build_id}/source/")),
        "{out}"
    );
    assert!(exe_of(&out, "relay").starts_with(state.join("dataflows/b").to_str().unwrap()));
    assert_eq!(
        exe_of(&out, "sink"),
        work.join("sink-node").display().to_string()
    );

    // An unknown build is refused before anything is placed.
    let unknown = "00000000-0000-4000-8000-000000000000".to_owned();
    let out = s.adora(&["start", &flow, "--detach", "--build-id", &unknown]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains(&format!("no build {unknown}")), "{out}");
}

/// The coordinator places a `labels` node on the first daemon *to register* with those labels;
/// `distribute: scp` must copy the binary to that machine, not to the first one of cluster.yml.
/// Here cluster.yml lists `x` then `y`, and `y` registers first.
#[test]
fn scp_copies_to_the_machine_the_coordinator_places_the_node_on() {
    let hosts = require_hosts!("distribute_order", 2);
    let state = temp_dir();
    let coordinator = Coordinator::start(state.path(), &hosts.gateway_ip().to_string());
    let labels = ["--labels", "role=worker"];
    let _y = coordinator.daemon_on(hosts.host(1), "y", &labels);
    coordinator.wait_for_daemons(1);
    let _x = coordinator.daemon_on(hosts.host(0), "x", &labels);
    coordinator.wait_for_daemons(2);
    let mut yaml = format!(
        "coordinator: {{ addr: {}, port: {} }}\nmachines:\n",
        hosts.gateway_ip(),
        coordinator.port()
    );
    for (i, id) in ["x", "y"].iter().enumerate() {
        yaml.push_str(&format!(
            "  - {{ id: {id}, host: {}, user: root, labels: {{ role: worker }}, state_dir: {} }}\n",
            hosts.host(i).ip(),
            state.path().join("machines").join(id).display()
        ));
    }
    let cluster = state.path().join("cluster.yml");
    std::fs::write(&cluster, yaml).unwrap();
    let node = bin("adora-test-node");
    let src = state.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let flow = src.join("dataflow.yml");
    std::fs::write(
        &flow,
        format!(
            r#"
nodes:
  - id: worker
    path: build/worker-node
    build: mkdir -p build && cp {} build/worker-node
    env: {{ MODE: seq-source, COUNT: 3, PRINT_EXE: 1 }}
    inputs: {{ tick: adora/timer/millis/20 }}
    outputs: [data]
    _unstable_deploy: {{ labels: {{ role: worker }}, distribute: scp }}
"#,
            node.display()
        ),
    )
    .unwrap();

    let mut cmd = coordinator.cli();
    cmd.args(["start", flow.to_str().unwrap(), "--attach", "--build"])
        .args(["--name", "order", "--cluster", cluster.to_str().unwrap()])
        .args(["--ssh-config", hosts.ssh_config().to_str().unwrap()]);
    let out = run_with_timeout(cmd, TIMEOUT);
    assert!(out.status.success(), "{out}");
    assert!(out.all().contains("copied `worker`"), "{out}");
    assert!(out.all().contains("to machine `y`"), "{out}");
    assert!(out.stderr.contains("on `y`"), "{out}");
    let exe = exe_of(&out, "worker");
    let y_dir = state.path().join("machines/y/dataflows");
    assert!(exe.starts_with(y_dir.to_str().unwrap()), "{exe}\n{out}");
    assert!(!state.path().join("machines/x").exists(), "{out}");
}
