//! Python nodes through the real binary: the `adora` package (apis/python/node) installed in the
//! `python3` on PATH, with pyarrow and numpy. `scripts/test.sh` installs it; without it these
//! tests fail (they never skip): the message says how to install it.

use std::{path::Path, process::Command, sync::Once, time::Duration};

use adora_test_support::{
    adora, marked_left_after, pids_with_env, run_with_timeout, temp_dir, wait_until,
    write_dataflow, ChildGuard, Output,
};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Fails the test (with the fix) unless `python3` has the adora package, pyarrow and numpy.
fn require_python_package() {
    static CHECK: Once = Once::new();
    CHECK.call_once(|| {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", "import adora, pyarrow, numpy; print(adora.__version__)"]);
        let out = run_with_timeout(cmd, TIMEOUT);
        assert!(
            out.status.success(),
            "the Python tests need the adora package, pyarrow and numpy in python3: \
             pip install pyarrow numpy maturin && pip install --no-build-isolation ./apis/python/node \
             (scripts/test.sh does this)\n{out}"
        );
    });
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn run_dataflow(state: &Path, dataflow: &Path) -> Output {
    let mut cmd = adora(state);
    cmd.args(["run", dataflow.to_str().unwrap()]);
    run_with_timeout(cmd, TIMEOUT)
}

/// Checks that `value` (a pyarrow array) is a view of a shared-memory segment mapped into this
/// process, by the address of its data buffer in /proc/self/maps; prints the segment.
const SHARED_CHECK: &str = r#"
def segment_of(value):
    address = value.buffers()[1].address
    size = value.buffers()[1].size
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if low <= address and address + size <= high:
                return fields[5] if len(fields) > 5 else "(anonymous)"
    return "(not mapped)"
"#;

#[test]
fn a_4_mib_input_is_a_pyarrow_view_of_the_senders_shared_memory() {
    require_python_package();
    let (state, dir) = (temp_dir(), temp_dir());
    // Python → Python through `allocate`, and Rust (test node) → Python.
    write(
        dir.path(),
        "camera.py",
        r#"
import numpy as np
from adora import Node

node = Node()
for round in (1, 2):
    view = node.allocate(4 << 20)
    np.frombuffer(view, dtype=np.uint8)[:] = round * 7
    node.send_output("frame", view, {"round": round})
"#,
    );
    write(
        dir.path(),
        "viewer.py",
        &format!(
            "{SHARED_CHECK}{}",
            r#"
import sys
import numpy as np
import pyarrow as pa
from adora import Node

node = Node()
seen = 0
for event in node:
    if event["type"] != "INPUT":
        continue
    value = event["value"]
    segment = segment_of(value)
    round = event["metadata"]["round"]
    if event["id"] == "frame":
        expected = np.full(4 << 20, round * 7, dtype=np.uint8)
    else:
        expected = ((np.arange(4 << 20) * 31) % 256).astype(np.uint8) ^ round
    same = np.array_equal(value.to_numpy(zero_copy_only=True), expected)
    print(f"{event['id']} round={round} type={value.type} len={len(value)} segment={segment} same={same}", flush=True)
    if value.type != pa.uint8() or not same or not segment.startswith("/dev/shm/"):
        sys.exit(1)
    seen += 1
    del value, event
print(f"viewer saw {seen}")
sys.exit(0 if seen == 4 else 1)
"#
        ),
    );
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: camera
    path: camera.py
    outputs: [frame]
  - id: rust
    path: {node}
    env: { MODE: shm-send }
    outputs: [data]
  - id: viewer
    path: viewer.py
    inputs: { frame: camera/frame, data: rust/data }
"#,
    );
    let out = run_dataflow(state.path(), &dataflow);
    assert!(out.status.success(), "{out}");
    for (input, round) in [("frame", 1), ("frame", 2), ("data", 1), ("data", 2)] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.contains(&format!("viewer | {input} round={round} ")))
            .unwrap_or_else(|| panic!("no {input} round {round}:\n{out}"));
        assert!(
            line.contains("type=uint8 len=4194304 segment=/dev/shm/")
                && line.ends_with("same=True"),
            "{line}"
        );
    }
    // The Rust sender waits until every receiver released each sample: Python dropping the
    // array released it.
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("rust ") && l.ends_with("| released round=2")),
        "{out}"
    );
    assert!(out.stdout.contains("viewer saw 4"), "{out}");
}

#[test]
fn a_python_node_that_crashes_is_restarted_by_its_policy() {
    require_python_package();
    let (state, dir) = (temp_dir(), temp_dir());
    write(
        dir.path(),
        "flaky.py",
        r#"
import os, sys
import pyarrow as pa
from adora import Node

runs_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs")
runs = int(open(runs_file).read()) if os.path.exists(runs_file) else 0
open(runs_file, "w").write(str(runs + 1))
node = Node()
for i in range(3):
    node.send_output("out", pa.array([runs * 10 + i], pa.int64()))
if runs == 0:
    raise SystemExit(3)
"#,
    );
    write(
        dir.path(),
        "sink.py",
        r#"
from adora import Node

node = Node()
values, restarted = [], False
for event in node:
    if event["type"] == "INPUT":
        values.extend(event["value"].to_pylist())
    elif event["type"] == "UPSTREAM_RESTARTED":
        restarted = True
print(f"values={values} restarted={restarted}")
"#,
    );
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: flaky
    path: flaky.py
    outputs: [out]
    restart_policy: on-failure
    restart_delay: 100ms
  - id: sink
    path: sink.py
    inputs: { in: flaky/out }
"#,
    );
    let out = run_dataflow(state.path(), &dataflow);
    assert!(out.status.success(), "{out}");
    assert!(
        out.stderr
            .contains("node `flaky` exit status 3; restarting it in 100ms (restart 1)"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("values=[0, 1, 2, 10, 11, 12] restarted=True"),
        "{out}"
    );
}

#[test]
fn python_nodes_die_with_a_killed_runtime() {
    require_python_package();
    let (state, dir) = (temp_dir(), temp_dir());
    let marker = format!("py-orphan-{}", std::process::id());
    write(
        dir.path(),
        "idle.py",
        "from adora import Node\nnode = Node()\nprint('ready')\nfor event in node:\n    pass\n",
    );
    let dataflow = write_dataflow(
        dir.path(),
        "nodes:\n  - id: a\n    path: idle.py\n  - id: b\n    path: idle.py\n",
    );
    let mut cmd = adora(state.path());
    cmd.args(["run", dataflow.to_str().unwrap()])
        .args(["--env", &format!("ADORA_TEST_MARKER={marker}")]);
    let child = ChildGuard::spawn(cmd, dir.path(), "run");
    // Both past `Node()` (where the SDK asks to die with its parent). The line is printed without
    // a flush: it arrives because the daemon runs `.py` nodes unbuffered.
    assert!(
        wait_until(Duration::from_secs(60), || {
            std::fs::read_to_string(dir.path().join("run.out"))
                .is_ok_and(|o| o.contains("a | ready") && o.contains("b | ready"))
        }),
        "python nodes did not start: {}",
        std::fs::read_to_string(dir.path().join("run.err")).unwrap_or_default()
    );
    assert_eq!(pids_with_env("ADORA_TEST_MARKER", &marker).len(), 2);
    child.signal(nix::sys::signal::Signal::SIGKILL);
    let left = marked_left_after(&marker, Duration::from_secs(10));
    assert!(
        left.is_empty(),
        "python nodes outlived a SIGKILLed runtime: {left:?}"
    );
}

#[test]
fn a_python_without_the_package_is_named_with_the_fix() {
    require_python_package();
    let (state, dir) = (temp_dir(), temp_dir());
    // A python3 without site-packages: the first one on PATH for the runtime and its nodes.
    let venv = dir.path().join("bare");
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "venv", "--without-pip", venv.to_str().unwrap()]);
    let out = run_with_timeout(cmd, TIMEOUT);
    assert!(out.status.success(), "{out}");
    write(
        dir.path(),
        "node.py",
        "from adora import Node\nfor event in Node():\n    pass\n",
    );
    let dataflow = write_dataflow(dir.path(), "nodes:\n  - id: py\n    path: node.py\n");
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap()
    );
    let mut cmd = adora(state.path());
    cmd.args(["run", dataflow.to_str().unwrap()])
        .env("PATH", path);
    let out = run_with_timeout(cmd, TIMEOUT);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let hint = format!(
        "the `adora` Python package is not installed for {}: pip install",
        venv.join("bin/python3").display()
    );
    assert!(out.stderr.contains(&hint), "{out}");
}

#[test]
fn node_configuration_errors_are_python_exceptions() {
    require_python_package();
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "from adora import Node\ntry:\n    Node()\nexcept RuntimeError as e:\n    print('RuntimeError:', e)\n",
    ])
    .env_remove("ADORA_NODE_CONFIG");
    let out = run_with_timeout(cmd, TIMEOUT);
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout
            .contains("RuntimeError: ADORA_NODE_CONFIG is not set (is this node running under `adora run` or a daemon?)"),
        "{out}"
    );
}

#[test]
fn python_api_values_metadata_timeouts_and_asyncio() {
    require_python_package();
    let (state, dir) = (temp_dir(), temp_dir());
    write(
        dir.path(),
        "sender.py",
        r#"
import numpy as np
import pyarrow as pa
from adora import Node

node = Node()
assert node.node_id() == "sender", node.node_id()
assert node.try_recv() is None  # no inputs: nothing is waiting
meta = {"flag": True, "n": -3, "x": 0.5, "s": "hé", "ints": [1, 2], "floats": [0.5, 1.0], "names": ["a"], "timestamp": 1}
node.send_output("bytes", b"", meta)
node.send_output("matrix", np.arange(6, dtype=np.float32).reshape(2, 3))
node.send_output("list", ["a", None, "c"])
node.send_output("struct", pa.array([{"x": 1, "y": "p"}, None]))
node.send_output("sliced", pa.array(range(100), pa.int16()).slice(95, 3))
small = node.allocate(16)
small[:] = bytes(range(16))
node.send_output("bytes", small)
try:
    node.send_output("bytes", object())
except TypeError as e:
    print("TypeError:", e)
try:
    node.send_output("undeclared", b"x")
except RuntimeError as e:
    print("RuntimeError:", e)
"#,
    );
    write(
        dir.path(),
        "receiver.py",
        r#"
import asyncio, time
import pyarrow as pa
from adora import Node

async def main():
    node = Node()
    got = []
    while True:
        event = await node.recv_async()
        if event is None:
            break
        if event["type"] != "INPUT":
            continue
        value, meta = event["value"], event["metadata"]
        age = time.time_ns() - meta["timestamp"]
        assert 0 <= age < 60e9, age
        meta = {k: v for k, v in meta.items() if k != "timestamp"}
        got.append(f"{event['id']}:{value.type}:{value.to_pylist()}:{sorted(meta.items())}")
    for line in got:
        print(line)
    print("timeout:", node.next(timeout=0.05))

asyncio.run(main())
"#,
    );
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: sender
    path: sender.py
    outputs: [bytes, matrix, list, struct, sliced]
  - id: receiver
    path: receiver.py
    inputs:
      bytes: sender/bytes
      matrix: sender/matrix
      list: sender/list
      struct: sender/struct
      sliced: sender/sliced
"#,
    );
    let out = run_dataflow(state.path(), &dataflow);
    assert!(out.status.success(), "{out}");
    for line in [
        "receiver | bytes:uint8:[1, 2, 3]:[('flag', True), ('floats', [0.5, 1.0]), ('ints', [1, 2]), ('n', -3), ('names', ['a']), ('s', 'hé'), ('x', 0.5)]",
        "receiver | matrix:float:[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]:[]",
        "receiver | list:string:['a', None, 'c']:[]",
        "receiver | struct:struct<x: int64, y: string>:[{'x': 1, 'y': 'p'}, None]:[]",
        "receiver | sliced:int16:[95, 96, 97]:[]",
        "receiver | bytes:uint8:[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]:[]",
        "receiver | timeout: None",
        "sender   | TypeError: send_output takes a pyarrow array, bytes, a numpy array, a list or a buffer, not object",
        "sender   | RuntimeError: output `undeclared` is not declared in the dataflow for this node",
    ] {
        assert!(out.stdout.contains(line), "missing {line:?}:
{out}");
    }
}

/// Runs an example dataflow of the repository as a user would (`adora run`, from the repository
/// root); its nodes are built by `scripts/test.sh` (workspace binaries, the Python package).
fn run_example(path: &str) -> Output {
    let state = temp_dir();
    let mut cmd = adora(state.path());
    cmd.current_dir(adora_test_support::repo_root())
        .args(["run", path]);
    run_with_timeout(cmd, TIMEOUT)
}

#[test]
fn the_python_dataflow_example_exchanges_arrow_values_with_a_rust_node() {
    require_python_package();
    let out = run_example("examples/python-dataflow/dataflow.yml");
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout
            .contains("transformer | transformer done: 100 arrays transformed"),
        "{out}"
    );
    assert!(
        out.stdout.contains(
            "receiver    | receiver done: 50 squared and 50 upper-case messages checked (expected 50 each), 0 mismatches"
        ),
        "{out}"
    );
}

#[test]
fn the_python_camera_example_streams_checked_frames_through_shared_memory() {
    require_python_package();
    let out = run_example("examples/python-camera/dataflow.yml");
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout
            .contains("consumer | consumer done: 90/90 frames of 640x480x3 checked, 0 bad"),
        "{out}"
    );
}

#[test]
fn runtime_type_check_refuses_or_warns_about_a_value_of_another_type() {
    require_python_package();
    let (state, dir) = (temp_dir(), temp_dir());
    write(
        dir.path(),
        "counter.py",
        r#"
import pyarrow as pa
from adora import Node

node = Node()
for value in (pa.array([-1], pa.int64()), pa.array([2], pa.uint64())):
    try:
        node.send_output("count", value)
    except RuntimeError as e:
        print("refused:", e)
"#,
    );
    write(
        dir.path(),
        "sink.py",
        "from adora import Node\nfor event in Node():\n    if event['type'] == 'INPUT':\n        print('got', event['value'].type, event['value'].to_pylist())\n",
    );
    let dataflow = write_dataflow(
        dir.path(),
        r#"
nodes:
  - id: counter
    path: counter.py
    outputs: [count]
    output_types:
      count: std/core/v1/UInt64
  - id: sink
    path: sink.py
    inputs: { count: counter/count }
"#,
    );
    let run = |check: &str| {
        let mut cmd = adora(state.path());
        cmd.args(["run", dataflow.to_str().unwrap()])
            .args(["--env", &format!("ADORA_RUNTIME_TYPE_CHECK={check}")]);
        let out = run_with_timeout(cmd, TIMEOUT);
        assert!(out.status.success(), "{out}");
        out
    };
    let mismatch = "output `count` sends Int64, but its declared type std/core/v1/UInt64 is UInt64";

    let out = run("error");
    assert!(
        out.stdout.contains(&format!("refused: {mismatch}")),
        "{out}"
    );
    assert!(!out.stdout.contains("got int64"), "{out}");
    assert!(out.stdout.contains("got uint64 [2]"), "{out}");

    let out = run("warn");
    assert!(
        out.stderr.contains(&format!("warning: {mismatch}")),
        "{out}"
    );
    assert!(out.stdout.contains("got int64 [-1]"), "{out}");
    assert!(out.stdout.contains("got uint64 [2]"), "{out}");
}

#[test]
fn a_python_node_counts_the_messages_it_did_not_get() {
    require_python_package();
    let (state, dir) = (temp_dir(), temp_dir());
    write(
        dir.path(),
        "slow_sink.py",
        r#"import time
from adora import Node

node = Node()
received = 0
for event in node:
    if event["type"] == "INPUT":
        received += 1
        time.sleep(0.001)
print(f"python sink received={received} dropped={node.drop_count('data')}", flush=True)
"#,
    );
    let dataflow = write_dataflow(
        dir.path(),
        r#"nodes:
  - id: sender
    path: {node}
    env: { MODE: flood, COUNT: 5000 }
    outputs: [data]
  - id: sink
    path: slow_sink.py
    inputs: { data: { source: sender/data, queue_size: 2 } }
"#,
    );
    let out = run_dataflow(state.path(), &dataflow);
    assert!(out.status.success(), "{out}");
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("python sink received="))
        .unwrap_or_else(|| panic!("no summary: {out}"));
    let number = |key: &str| -> u64 {
        line.split(key)
            .nth(1)
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .expect(key)
    };
    let (received, dropped) = (number("received="), number("dropped="));
    assert!(dropped > 0, "{line}");
    assert_eq!(received + dropped, 5000, "{line}");
}
