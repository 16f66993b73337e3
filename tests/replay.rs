//! `adora replay` with the real binary (issue 21): a recording of the rust-dataflow example
//! replayed into its transformer → sink with the sender replaced, the checks of `--replace`,
//! `--speed 0` losing nothing to a slow receiver with a queue of one, and `--loop`.

use std::{path::Path, time::Duration};

use adora_test_support::{bin, temp_dir, MarkedCli};

/// Upper bound of one CLI command.
const TIMEOUT: Duration = Duration::from_secs(120);
/// Marks every process a test starts.
const MARKER: &str = "ADORA_E2E_REPLAY_TEST";

/// The rust-dataflow example (sender every 10 ms → transformer → sink), `messages` messages,
/// the sender's output called `output`.
fn example(dir: &Path, messages: u32, output: &str) -> std::path::PathBuf {
    let yaml = format!(
        "nodes:\n  - id: sender\n    path: {}\n    inputs:\n      tick: adora/timer/millis/10\n    outputs: [{output}]\n    env:\n      MESSAGES: {messages}\n  - id: transformer\n    path: {}\n    inputs:\n      counter: sender/{output}\n    outputs: [squared]\n  - id: sink\n    path: {}\n    inputs:\n      squared: {{ source: transformer/squared, queue_size: 100 }}\n",
        bin("rust-dataflow-sender").display(),
        bin("rust-dataflow-transformer").display(),
        bin("rust-dataflow-sink").display(),
    );
    let path = dir.join(format!("dataflow-{output}.yml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

/// A sender every 5 ms and a receiver that takes 5 ms per message with a queue of one.
fn slow_receiver(dir: &Path, messages: u32) -> std::path::PathBuf {
    let yaml = format!(
        "nodes:\n  - id: sender\n    path: {}\n    inputs:\n      tick: adora/timer/millis/5\n    outputs: [counter]\n    env:\n      MESSAGES: {messages}\n  - id: slow\n    path: {}\n    env: {{ MODE: recv, SLEEP_MS: 5 }}\n    inputs:\n      counter: {{ source: sender/counter, queue_size: 1 }}\n",
        bin("rust-dataflow-sender").display(),
        bin("adora-test-node").display(),
    );
    let path = dir.join("slow.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn the_sink_receives_the_recorded_values_in_order_from_the_replayed_sender() {
    let dir = temp_dir();
    let cli = MarkedCli::new(dir.path(), MARKER, TIMEOUT);
    let dataflow = example(dir.path(), 100, "counter");
    let file = dir.path().join("run.mcap");
    let (file_arg, dataflow_arg) = (file.to_str().unwrap(), dataflow.to_str().unwrap());
    cli.ok(&["run", dataflow_arg, "--record", file_arg]);

    // Without a dataflow file: the one the recording names.
    let out = cli.ok(&["replay", file_arg, "--replace", "sender"]);
    assert!(
        out.stdout.contains("replayed 100 message(s) in 1 round(s)"),
        "{out}"
    );
    // The sink fails on a value out of order or a wrong square.
    assert!(
        out.stdout
            .contains("sink done: 100 messages received in order"),
        "{out}"
    );
    assert!(out.stderr.contains("finished successfully"), "{out}");

    let out = cli.ok(&[
        "replay",
        file_arg,
        dataflow_arg,
        "--replace",
        "sender",
        "--speed",
        "4",
    ]);
    assert!(
        out.stdout
            .contains("sink done: 100 messages received in order"),
        "{out}"
    );
}

#[test]
fn replace_names_a_recorded_node_of_the_dataflow_with_its_outputs() {
    let dir = temp_dir();
    let cli = MarkedCli::new(dir.path(), MARKER, TIMEOUT);
    let dataflow = example(dir.path(), 20, "counter");
    let file = dir.path().join("run.mcap");
    let (file_arg, dataflow_arg) = (file.to_str().unwrap(), dataflow.to_str().unwrap());
    cli.ok(&["run", dataflow_arg, "--record", file_arg]);

    let unknown = cli.run(&["replay", file_arg, dataflow_arg, "--replace", "camera"]);
    assert!(!unknown.status.success(), "{unknown}");
    assert!(
        unknown
            .stderr
            .contains("has no node `camera` (its nodes: sender, transformer, sink)"),
        "{unknown}"
    );

    let unrecorded = cli.run(&["replay", file_arg, dataflow_arg, "--replace", "sink"]);
    assert!(!unrecorded.status.success(), "{unrecorded}");
    assert!(
        unrecorded
            .stderr
            .contains("the recording holds no output of node `sink`"),
        "{unrecorded}"
    );

    let renamed = example(dir.path(), 20, "count");
    let undeclared = cli.run(&[
        "replay",
        file_arg,
        renamed.to_str().unwrap(),
        "--replace",
        "sender",
    ]);
    assert!(!undeclared.status.success(), "{undeclared}");
    assert!(
        undeclared
            .stderr
            .contains("the recording has `sender/counter`, which node `sender` does not declare"),
        "{undeclared}"
    );

    let speed = cli.run(&["replay", file_arg, "--replace", "sender", "--speed=-1"]);
    assert!(!speed.status.success(), "{speed}");
    assert!(speed.stderr.contains("the speed must be"), "{speed}");
}

#[test]
fn speed_zero_loses_nothing_to_a_slow_receiver_and_loop_repeats() {
    let dir = temp_dir();
    let cli = MarkedCli::new(dir.path(), MARKER, TIMEOUT);
    let dataflow = slow_receiver(dir.path(), 200);
    let file = dir.path().join("slow.mcap");
    let (file_arg, dataflow_arg) = (file.to_str().unwrap(), dataflow.to_str().unwrap());
    // The live run: the recording holds every message sent, whatever the receiver dropped.
    cli.ok(&["run", dataflow_arg, "--record", file_arg]);
    let info = cli.ok(&["recording", "info", file_arg, "--json"]);
    let info: serde_json::Value = serde_json::from_str(&info.stdout).unwrap();
    assert_eq!(
        info["channels"]["sender/counter"]["messages"], 200,
        "{info}"
    );

    let out = cli.ok(&["replay", file_arg, "--replace", "sender", "--speed", "0"]);
    assert!(
        out.stdout
            .contains("done received=200 last_seq=199 dropped=counter:0"),
        "{out}"
    );
    assert!(!out.stderr.contains("dropped"), "{out}");

    let out = cli.ok(&[
        "replay",
        file_arg,
        "--replace",
        "sender",
        "--speed",
        "0",
        "--loop=3",
    ]);
    assert!(
        out.stdout.contains("replayed 600 message(s) in 3 round(s)"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("done received=600 last_seq=199 dropped=counter:0"),
        "{out}"
    );
}
