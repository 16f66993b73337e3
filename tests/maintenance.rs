//! Maintenance of live machines through the real binary on loopback: a coordinator (with its
//! store) and two daemons `a` and `b` carrying the same label. Cordons keep placements off a
//! machine, update locks (an operator's, and a node's through its node API) are shown by
//! `cluster status`, everything survives a coordinator restart, and a killed node's lock goes.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use adora_test_support::{bin, temp_dir, wait_until, ChildGuard, MarkedCli, Output};
use serde_json::Value;

/// Upper bound of one CLI command.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for a condition to become true.
const WAIT: Duration = Duration::from_secs(30);
/// Marks every process a test starts.
const MARKER: &str = "ADORA_E2E_MAINTENANCE_TEST";

/// A coordinator and the daemons `a` and `b` (label `role=worker`), killed on drop.
struct Cluster {
    dir: tempfile::TempDir,
    cli: MarkedCli,
    coordinator: Option<ChildGuard>,
    daemons: Vec<ChildGuard>,
    port: String,
}

impl Cluster {
    fn start() -> Self {
        let dir = temp_dir();
        let cli = MarkedCli::new(dir.path(), MARKER, TIMEOUT);
        let mut cluster = Self {
            dir,
            cli,
            coordinator: None,
            daemons: Vec::new(),
            port: "0".into(),
        };
        cluster.start_coordinator();
        let addr = std::fs::read_to_string(cluster.dir.path().join("coordinator.addr")).unwrap();
        cluster.port = addr.trim().rsplit_once(':').unwrap().1.to_owned();
        for id in ["a", "b"] {
            let args = [
                "daemon",
                "--machine-id",
                id,
                "--labels",
                "role=worker",
                "--coordinator-port",
                &cluster.port,
            ];
            let guard = ChildGuard::spawn(cluster.cli.cmd(&args), cluster.dir.path(), id);
            cluster.daemons.push(guard);
            // Registration order decides placement ties: `a` first.
            assert!(wait_until(WAIT, || cluster.connected() == cluster.daemons.len()));
        }
        cluster
    }

    /// Starts a coordinator on this cluster's port (its store is in the state directory).
    fn start_coordinator(&mut self) {
        let _ = std::fs::remove_file(self.dir.path().join("coordinator.addr"));
        let args = ["coordinator", "--port", &self.port];
        let guard = ChildGuard::spawn(self.cli.cmd(&args), self.dir.path(), "coordinator");
        self.coordinator = Some(guard);
        let addr = self.dir.path().join("coordinator.addr");
        assert!(
            wait_until(WAIT, || addr.exists()),
            "the coordinator did not start"
        );
    }

    fn connected(&self) -> usize {
        let out = self.cli.run(&["cluster", "status", "--json"]);
        if !out.status.success() {
            return 0;
        }
        let status: Value = serde_json::from_str(&out.stdout).unwrap();
        status["daemons"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["connected"] == true)
            .count()
    }

    /// Machine `id` in `cluster status --json`.
    fn machine(&self, id: &str) -> Value {
        let status: Value =
            serde_json::from_str(&self.cli.ok(&["cluster", "status", "--json"]).stdout).unwrap();
        status["daemons"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no machine {id} in {status}"))
    }

    /// The reasons of machine `id`'s update locks.
    fn lock_reasons(&self, id: &str) -> Vec<String> {
        let m = self.machine(id);
        m["maintenance"]["locks"]
            .as_array()
            .map(|locks| {
                locks
                    .iter()
                    .map(|l| l["reason"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn write(&self, name: &str, node: &str, env: &str, deploy: &str) -> PathBuf {
        let yaml = format!(
            "nodes:\n  - id: {node}\n    path: {}\n    env: {{ {env} }}\n    deploy: {{ {deploy} }}\n",
            bin("adora-test-node").display()
        );
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        path
    }

    fn start_flow(&self, file: &Path, name: &str) -> Output {
        let file = file.display().to_string();
        self.cli.run(&["start", &file, "--name", name, "--detach"])
    }

    /// Where dataflow `name`'s node `node` runs, per `adora list --json`.
    fn placed(&self, name: &str, node: &str) -> String {
        let list: Value = serde_json::from_str(&self.cli.ok(&["list", "--json"]).stdout).unwrap();
        let flow = list
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("no dataflow {name} in {list}"))
            .clone();
        flow["nodes"][node].as_str().unwrap_or_default().to_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.cli.run(&["cluster", "down"]);
        self.daemons.clear();
        self.coordinator = None;
        for pid in self.cli.leftovers() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn cordons_and_locks_survive_a_coordinator_restart_and_a_killed_nodes_lock_goes() {
    let mut cluster = Cluster::start();
    let cli = &cluster.cli;

    // Cordon `a`: a label-placed node goes to `b` (it would go to `a`, registered first), and a
    // node pinned to `a` is refused with the reason.
    let out = cli.ok(&["cluster", "cordon", "a", "--reason", "battery swap"]);
    assert_eq!(
        out.stdout.trim(),
        "machine `a`: cordoned (battery swap); no update locks"
    );
    let worker = cluster.write("worker.yml", "w", "MODE: idle", "labels: { role: worker }");
    assert!(cluster.start_flow(&worker, "work").status.success());
    assert_eq!(cluster.placed("work", "w"), "b");
    let pinned = cluster.write("pinned.yml", "p", "MODE: idle", "machine: a");
    let out = cluster.start_flow(&pinned, "pinned");
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains("node `p`: machine \"a\" is cordoned: battery swap"),
        "{out}"
    );
    let out = cli.run(&["cluster", "cordon", "nowhere"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains("no machine `nowhere` is known to the coordinator (known: a, b)"),
        "{out}"
    );

    // Locks: an operator's on `a`, a node's on `b` (taken through its node API).
    cli.ok(&["cluster", "lock", "a", "--reason", "calibrating"]);
    let locker = cluster.write(
        "locker.yml",
        "arm",
        "MODE: lock, LOCK_REASON: grasping",
        "machine: b",
    );
    assert!(cluster.start_flow(&locker, "grip").status.success());
    assert!(
        wait_until(WAIT, || cli
            .run(&["logs", "grip", "arm"])
            .stdout
            .contains("locked")),
        "the node did not get its lock"
    );
    assert_eq!(cluster.lock_reasons("b"), ["grasping"]);
    let b = cluster.machine("b");
    assert_eq!(b["state"], "ready", "{b}");
    let holder = &b["maintenance"]["locks"][0]["holder"];
    assert_eq!(holder["kind"], "node", "{b}");
    assert_eq!(holder["node"], "arm", "{b}");
    assert_eq!(holder["dataflow_name"], "grip", "{b}");
    let text = cli.ok(&["cluster", "status"]).stdout;
    assert!(text.contains("a: cordoned"), "{text}");
    assert!(
        text.contains("b: update lock by node `arm` of dataflow `grip` (grasping), held"),
        "{text}"
    );

    // A coordinator killed and started again knows all of it.
    let coordinator = cluster.coordinator.take().unwrap();
    let pid = coordinator.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(coordinator);
    cluster.start_coordinator();
    let cli = &cluster.cli;
    assert!(
        wait_until(WAIT, || cluster.connected() == 2),
        "the daemons did not come back"
    );
    let a = cluster.machine("a");
    assert_eq!(a["state"], "cordoned", "{a}");
    assert_eq!(a["maintenance"]["cordon"]["reason"], "battery swap", "{a}");
    assert_eq!(cluster.lock_reasons("a"), ["calibrating"]);
    assert_eq!(cluster.lock_reasons("b"), ["grasping"]);

    // kill -9 of the node: its lock goes with it.
    // The new coordinator learns the node's pid from the daemon's next heartbeat.
    let pid = || {
        let out = cli.ok(&["node", "list", "grip", "--json"]);
        serde_json::from_str::<Value>(&out.stdout).unwrap()[0]["pid"].as_u64()
    };
    assert!(
        wait_until(WAIT, || pid().is_some()),
        "the lock node is not reported"
    );
    let node_pid = pid().expect("reported") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(node_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        wait_until(WAIT, || cluster.lock_reasons("b").is_empty()),
        "a killed node's lock was kept: {}",
        cluster.machine("b")
    );

    // Unlock and uncordon: `a` takes new nodes again (nothing moved back on its own).
    cli.ok(&["cluster", "unlock", "a"]);
    let out = cli.ok(&["cluster", "uncordon", "a", "--json"]);
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json, serde_json::json!({ "machine": "a" }), "{out}");
    assert_eq!(cluster.machine("a")["state"], "ready");
    assert_eq!(cluster.placed("work", "w"), "b");
    assert!(cluster.start_flow(&pinned, "pinned").status.success());
    assert_eq!(cluster.placed("pinned", "p"), "a");
}

/// A Python node holding an update lock in a `with` block, until a flag file appears.
const PYTHON_LOCKER: &str = r#"
import os, time
from adora import Node

node = Node()
with node.update_lock("grasping") as lock:
    print("held", lock.held, lock.reason, flush=True)
    while not os.path.exists(os.environ["FLAG"]):
        time.sleep(0.05)
print("released", lock.held, flush=True)
for event in node:
    if event["type"] == "STOP":
        break
"#;

#[test]
fn a_python_node_holds_an_update_lock_in_a_with_block() {
    let check = std::process::Command::new("python3")
        .args(["-c", "import adora, pyarrow"])
        .status()
        .unwrap();
    assert!(
        check.success(),
        "needs the adora Python package: pip install --no-build-isolation ./apis/python/node \
         (scripts/test.sh does this)"
    );
    let cluster = Cluster::start();
    let dir = cluster.dir.path();
    std::fs::write(dir.join("locker.py"), PYTHON_LOCKER).unwrap();
    let flag = dir.join("release.flag");
    let yaml = format!(
        "nodes:\n  - id: arm\n    path: {}\n    env: {{ FLAG: {} }}\n    deploy: {{ machine: b }}\n",
        dir.join("locker.py").display(),
        flag.display()
    );
    let file = dir.join("py.yml");
    std::fs::write(&file, yaml).unwrap();
    let out = cluster.start_flow(&file, "py");
    assert!(out.status.success(), "{out}");
    let logs = || cluster.cli.run(&["logs", "py", "arm"]).stdout;
    assert!(
        wait_until(WAIT, || logs().contains("held True grasping")),
        "{}",
        logs()
    );
    assert_eq!(cluster.lock_reasons("b"), ["grasping"]);
    std::fs::write(&flag, "").unwrap();
    assert!(
        wait_until(WAIT, || logs().contains("released False")),
        "{}",
        logs()
    );
    assert!(
        wait_until(WAIT, || cluster.lock_reasons("b").is_empty()),
        "the lock outlived its with block: {}",
        cluster.machine("b")
    );
}

#[test]
fn drain_waits_for_locks_moves_label_placed_nodes_and_force_stops_pinned_ones() {
    let cluster = Cluster::start();
    let cli = &cluster.cli;
    let worker = cluster.write("worker.yml", "w", "MODE: idle", "labels: { role: worker }");
    assert!(cluster.start_flow(&worker, "work").status.success());
    assert_eq!(cluster.placed("work", "w"), "a");
    let pinned = cluster.write("pinned.yml", "p", "MODE: idle", "machine: a");
    assert!(cluster.start_flow(&pinned, "pinned").status.success());

    // Locked: the drain waits, says who holds the lock, and gives up at --lock-timeout.
    cli.ok(&["cluster", "lock", "a", "--reason", "calibrating"]);
    let out = cli.run(&["cluster", "drain", "a", "--lock-timeout", "3s"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains(
            "a: waiting for its update locks: machine `a` has 1 update lock: an operator (calibrating)"
        ),
        "{out}"
    );
    assert!(out.stderr.contains("still locked after 3s"), "{out}");
    assert_eq!(
        cluster.machine("a")["state"],
        "ready",
        "a refused drain changed nothing"
    );

    // Unlocked, the drain runs (followed, in the background): the worker moves to b, the pinned
    // node waits for the 4 s deadline. Meanwhile the machine belongs to the drain: a second
    // drain and an uncordon are refused.
    cli.ok(&["cluster", "unlock", "a"]);
    let dir = cluster.dir.path();
    let mut first = ChildGuard::spawn(
        cli.cmd(&["cluster", "drain", "a", "--deadline", "4s"]),
        dir,
        "drain",
    );
    assert!(
        wait_until(WAIT, || cluster.machine("a")["state"] == "draining"),
        "{}",
        cluster.machine("a")
    );
    let out = cli.run(&["cluster", "drain", "a", "--force"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains("machine `a` is being drained by another operation"),
        "{out}"
    );
    let out = cli.run(&["cluster", "uncordon", "a"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(out.stderr.contains("machine `a` is being drained"), "{out}");
    // Exit code 1: not everything moved; one line per node, the summary on stdout.
    let status = first.wait_timeout(WAIT).expect("the drain ends");
    assert_eq!(status.code(), Some(1));
    let (stdout, stderr) = (
        std::fs::read_to_string(dir.join("drain.out")).unwrap(),
        std::fs::read_to_string(dir.join("drain.err")).unwrap(),
    );
    assert!(stderr.contains("work/w: moved to `b`"), "{stderr}");
    assert!(stderr.contains("pinned/p: stopped"), "{stderr}");
    assert!(stdout.contains("1/2 moved."), "{stdout}");
    assert_eq!(cluster.placed("work", "w"), "b");
    let a = cluster.machine("a");
    assert_eq!(a["state"], "cordoned", "{a}");
    assert_eq!(a["maintenance"]["drain"]["done"], true, "{a}");
    // The pinned dataflow lost its only node: it ended; the moved one runs on.
    let list: Value = serde_json::from_str(&cli.ok(&["list", "--json"]).stdout).unwrap();
    let work = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "work")
        .unwrap();
    assert_eq!(work["status"], "running", "{list}");
    assert!(work.get("degraded").is_none(), "{list}");

    // A drained machine takes nothing new until it is uncordoned.
    let out = cluster.start_flow(&pinned, "again");
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(out.stderr.contains("machine \"a\" is cordoned"), "{out}");
    cli.ok(&["cluster", "uncordon", "a"]);
    assert!(cluster.start_flow(&pinned, "again").status.success());

    // --force stops a pinned node at once (and ignores locks).
    cli.ok(&["cluster", "lock", "a", "--reason", "calibrating"]);
    let out = cli.run(&["cluster", "drain", "a", "--force", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let record: Value = serde_json::from_str(&out.stdout).unwrap();
    let nodes = &record["drain"]["nodes"];
    assert_eq!(nodes[0]["node"], "p", "{out}");
    assert_eq!(nodes[0]["state"]["state"], "stopped", "{out}");
}

#[test]
fn a_node_cannot_take_an_update_lock_while_a_drain_has_its_machine() {
    let cluster = Cluster::start();
    let cli = &cluster.cli;
    // Pinned to `a`, it asks for its lock 3 s after it started: by then `a` is being drained.
    let late = cluster.write(
        "late.yml",
        "arm",
        "MODE: lock, LOCK_REASON: grasping, LOCK_DELAY_MS: 3000",
        "machine: a",
    );
    assert!(cluster.start_flow(&late, "late").status.success());
    cli.ok(&["cluster", "drain", "a", "--deadline", "6s", "--detach"]);
    let logs = || cli.run(&["logs", "late", "arm"]).stdout;
    assert!(
        wait_until(WAIT, || logs().contains("lock refused")),
        "{}",
        logs()
    );
    assert!(
        logs().contains("update lock refused: machine `a` is being drained by another operation"),
        "{}",
        logs()
    );
    assert!(cluster.lock_reasons("a").is_empty());
}
