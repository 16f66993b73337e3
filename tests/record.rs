//! Recording and topic inspection (issue 21) with the real binary: `adora run --record` read
//! back by the `mcap` crate and by the independent Python `mcap` package, a recorder killed with
//! SIGKILL leaving a readable file, and `adora topic` / `adora record` attached to a dataflow
//! started through a coordinator.

use std::{collections::BTreeMap, path::Path, time::Duration};

use adora_test_support::{bin, run_with_timeout, temp_dir, wait_until, ChildGuard, MarkedCli};

/// Upper bound of one CLI command.
const TIMEOUT: Duration = Duration::from_secs(90);
/// Marks every process a test starts.
const MARKER: &str = "ADORA_E2E_RECORD_TEST";

/// The rust-dataflow example (sender every 10 ms → transformer → sink) with `messages` messages.
fn example(dir: &Path, messages: u32) -> std::path::PathBuf {
    let yaml = format!(
        "nodes:\n  - id: sender\n    path: {}\n    inputs:\n      tick: adora/timer/millis/10\n    outputs: [counter]\n    env:\n      MESSAGES: {messages}\n  - id: transformer\n    path: {}\n    inputs:\n      counter: sender/counter\n    outputs: [squared]\n  - id: sink\n    path: {}\n    inputs:\n      squared: {{ source: transformer/squared, queue_size: 100 }}\n",
        bin("rust-dataflow-sender").display(),
        bin("rust-dataflow-transformer").display(),
        bin("rust-dataflow-sink").display(),
    );
    let path = dir.join("dataflow.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Messages per topic and whether log times never go back, read with the `mcap` crate.
fn read_with_mcap_crate(path: &Path) -> BTreeMap<String, (u64, bool)> {
    let bytes = std::fs::read(path).unwrap();
    let mut out: BTreeMap<String, (u64, bool, u64)> = BTreeMap::new();
    for message in mcap::MessageStream::new(&bytes).unwrap() {
        let message = message.unwrap();
        assert_eq!(message.channel.message_encoding, "adora.arrow.v1");
        let entry = out
            .entry(message.channel.topic.clone())
            .or_insert((0, true, 0));
        entry.0 += 1;
        entry.1 &= message.log_time >= entry.2;
        entry.2 = message.log_time;
    }
    out.into_iter().map(|(k, (n, m, _))| (k, (n, m))).collect()
}

const PYTHON_READER: &str = r#"
import json, sys
from mcap.reader import make_reader
counts, monotonic, last = {}, {}, {}
with open(sys.argv[1], "rb") as f:
    for schema, channel, message in make_reader(f).iter_messages():
        t = channel.topic
        counts[t] = counts.get(t, 0) + 1
        monotonic[t] = monotonic.get(t, True) and message.log_time >= last.get(t, 0)
        last[t] = message.log_time
print(json.dumps({"counts": counts, "monotonic": monotonic}))
"#;

#[test]
fn run_record_is_read_back_by_the_mcap_crate_and_by_python() {
    let dir = temp_dir();
    let cli = MarkedCli::new(dir.path(), MARKER, TIMEOUT);
    let dataflow = example(dir.path(), 100);
    let file = dir.path().join("run.mcap");
    let out = cli.ok(&[
        "run",
        dataflow.to_str().unwrap(),
        "--record",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.all()
            .contains("sink done: 100 messages received in order"),
        "{out}"
    );
    assert!(out.stderr.contains("recorded 200 message(s)"), "{out}");
    assert!(out.stderr.contains("dropped: none"), "{out}");

    let expected: BTreeMap<String, (u64, bool)> = [
        ("sender/counter".to_owned(), (100, true)),
        ("transformer/squared".to_owned(), (100, true)),
    ]
    .into();
    assert_eq!(read_with_mcap_crate(&file), expected);

    let mut python = std::process::Command::new("python3");
    python.args(["-c", PYTHON_READER, file.to_str().unwrap()]);
    let out = run_with_timeout(python, TIMEOUT);
    assert!(
        out.status.success(),
        "the Python mcap reader failed (pip install mcap):\n{out}"
    );
    let read: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(read["counts"]["sender/counter"], 100, "{read}");
    assert_eq!(read["counts"]["transformer/squared"], 100, "{read}");
    assert_eq!(read["monotonic"]["sender/counter"], true, "{read}");

    let info = cli.ok(&["recording", "info", file.to_str().unwrap(), "--json"]);
    let info: serde_json::Value = serde_json::from_str(&info.stdout).unwrap();
    assert_eq!(info["complete"], true, "{info}");
    assert_eq!(
        info["channels"]["sender/counter"]["messages"], 100,
        "{info}"
    );
    assert_eq!(info["dropped"], serde_json::json!({}), "{info}");
}

#[test]
fn a_recorder_killed_with_sigkill_leaves_a_file_readable_up_to_its_last_chunk() {
    let dir = temp_dir();
    let cli = MarkedCli::new(dir.path(), MARKER, TIMEOUT);
    let dataflow = example(dir.path(), 100_000);
    let file = dir.path().join("killed.mcap");
    let run = cli.cmd(&[
        "run",
        dataflow.to_str().unwrap(),
        "--record",
        file.to_str().unwrap(),
    ]);
    let recorder = ChildGuard::spawn(run, dir.path(), "adora-run");
    // Chunks are written out every second: wait for a few.
    std::thread::sleep(Duration::from_millis(3500));
    recorder.signal(nix::sys::signal::Signal::SIGKILL);
    drop(recorder);
    let info = cli.ok(&["recording", "info", file.to_str().unwrap(), "--json"]);
    let info: serde_json::Value = serde_json::from_str(&info.stdout).unwrap();
    assert_eq!(info["complete"], false, "{info}");
    let recorded = info["channels"]["sender/counter"]["messages"]
        .as_u64()
        .unwrap_or(0);
    // ~100 messages/s for 3.5 s, at most the last second lost.
    assert!(recorded >= 100, "{recorded} messages readable: {info}");
    assert!(
        wait_until(Duration::from_secs(10), || cli.leftovers().is_empty()),
        "nodes outlived their killed `adora run`: {:?}",
        cli.leftovers()
    );
}

#[test]
fn topic_echo_hz_and_record_attach_to_a_started_dataflow() {
    let dir = temp_dir();
    let cli = MarkedCli::new(dir.path(), MARKER, TIMEOUT);
    let _down = Down(&cli);
    let dataflow = example(dir.path(), 100_000);
    cli.ok(&["up", "--port", "0"]);
    cli.ok(&[
        "start",
        dataflow.to_str().unwrap(),
        "--name",
        "flow",
        "--detach",
    ]);

    let list = cli.ok(&["topic", "list", "flow"]);
    assert_eq!(
        list.stdout.lines().collect::<Vec<_>>(),
        ["sender/counter", "transformer/squared"],
        "{list}"
    );

    let echo = cli.ok(&[
        "topic",
        "echo",
        "flow",
        "sender/counter",
        "--count",
        "5",
        "--json",
    ]);
    let lines: Vec<serde_json::Value> = echo
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("`{l}`: {e}")))
        .collect();
    assert_eq!(lines.len(), 5, "{echo}");
    assert!(
        lines
            .iter()
            .all(|l| l["topic"] == "sender/counter" && l["len"] == 8),
        "{echo}"
    );

    let hz = cli.ok(&[
        "topic",
        "hz",
        "flow",
        "sender/counter",
        "--window",
        "3s",
        "--count",
        "1",
    ]);
    let rate: f64 = hz
        .stdout
        .split_whitespace()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no rate in {hz}"));
    assert!(
        (90.0..=110.0).contains(&rate),
        "the 10 ms timer's rate: {hz}"
    );

    let file = dir.path().join("attached.mcap");
    let record = cli.cmd(&[
        "record",
        "flow",
        "-o",
        file.to_str().unwrap(),
        "--outputs",
        "transformer/squared",
    ]);
    let mut recorder = ChildGuard::spawn(record, dir.path(), "adora-record");
    std::thread::sleep(Duration::from_secs(2));
    cli.ok(&["stop", "flow"]);
    let status = recorder
        .wait_timeout(TIMEOUT)
        .expect("record ends with the dataflow");
    assert!(status.success(), "adora record failed");
    let read = read_with_mcap_crate(&file);
    let (count, monotonic) = read["transformer/squared"];
    assert!(count >= 100 && monotonic, "{read:?}");
    assert_eq!(read.len(), 1, "only the asked output: {read:?}");
}

/// The sequence numbers (the first 8 bytes of each payload) of `topic`, in file order.
fn recorded_seqs(path: &Path, topic: &str) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    let mut seqs = Vec::new();
    for message in mcap::MessageStream::new(&bytes).unwrap() {
        let message = message.unwrap();
        if message.channel.topic != topic {
            continue;
        }
        let data = &message.data;
        let header = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
        let payload = &data[4 + header..];
        seqs.push(u64::from_le_bytes(payload[..8].try_into().unwrap()));
    }
    seqs
}

#[test]
fn split_size_rolls_over_into_numbered_complete_files() {
    let dir = temp_dir();
    let cli = MarkedCli::new(dir.path(), MARKER, TIMEOUT);
    let dataflow = example(dir.path(), 100);
    let file = dir.path().join("run.mcap");
    let out = cli.ok(&[
        "run",
        dataflow.to_str().unwrap(),
        "--record",
        file.to_str().unwrap(),
        "--split-size",
        "4KiB",
    ]);
    assert!(out.stderr.contains("recorded 200 message(s)"), "{out}");
    assert!(!file.exists(), "parts only");
    let parts: Vec<std::path::PathBuf> = (1..)
        .map(|n| dir.path().join(format!("run-{n:03}.mcap")))
        .take_while(|p| p.exists())
        .collect();
    assert!(parts.len() >= 3, "{} parts: {out}", parts.len());
    let mut seqs = Vec::new();
    for part in &parts {
        let info = cli.ok(&["recording", "info", part.to_str().unwrap(), "--json"]);
        let info: serde_json::Value = serde_json::from_str(&info.stdout).unwrap();
        assert_eq!(info["complete"], true, "{}: {info}", part.display());
        seqs.extend(recorded_seqs(part, "sender/counter"));
        let read = read_with_mcap_crate(part);
        assert!(read.values().all(|(_, monotonic)| *monotonic), "{read:?}");
    }
    assert_eq!(seqs, (0..100).collect::<Vec<u64>>());
}

#[test]
fn start_record_records_an_attached_dataflow_from_its_first_message() {
    let dir = temp_dir();
    let cli = MarkedCli::new(dir.path(), MARKER, TIMEOUT);
    let _down = Down(&cli);
    let dataflow = example(dir.path(), 100);
    let file = dir.path().join("started.mcap");
    cli.ok(&["up", "--port", "0"]);
    let out = cli.ok(&[
        "start",
        dataflow.to_str().unwrap(),
        "--name",
        "recorded",
        "--record",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.all()
            .contains("sink done: 100 messages received in order"),
        "{out}"
    );
    assert!(out.stderr.contains("dropped: none"), "{out}");
    // From the first message: the tap reached the daemon before its `Spawn`.
    assert_eq!(
        recorded_seqs(&file, "sender/counter"),
        (0..100).collect::<Vec<u64>>(),
        "{out}"
    );
    assert_eq!(recorded_seqs(&file, "transformer/squared").len(), 100);
    let info = cli.ok(&["recording", "info", file.to_str().unwrap(), "--json"]);
    let info: serde_json::Value = serde_json::from_str(&info.stdout).unwrap();
    assert_eq!(info["complete"], true, "{info}");
    assert!(
        info["dataflow"]
            .as_str()
            .is_some_and(|d| d.ends_with("dataflow.yml")),
        "{info}"
    );
}

/// `adora down` when the test ends, passed or not.
struct Down<'a>(&'a MarkedCli);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["down"]);
    }
}

#[test]
fn export_writes_numbers_and_strings_as_csv_and_bytes_as_raw_files() {
    let dir = temp_dir();
    let cli = MarkedCli::new(dir.path(), MARKER, TIMEOUT);
    let node = bin("adora-test-node");
    let yaml = format!(
        "nodes:\n  - id: arrows\n    path: {node}\n    env: {{ MODE: arrow-send, COUNT: 3 }}\n    inputs: {{ tick: adora/timer/millis/10 }}\n    outputs: [numbers, text]\n  - id: frames\n    path: {node}\n    env: {{ MODE: seq-source, COUNT: 2, PAYLOAD_BYTES: 5000 }}\n    inputs: {{ tick: adora/timer/millis/10 }}\n    outputs: [data]\n",
        node = node.display()
    );
    let dataflow = dir.path().join("arrows.yml");
    std::fs::write(&dataflow, yaml).unwrap();
    let file = dir.path().join("arrows.mcap");
    let file_arg = file.to_str().unwrap();
    cli.ok(&["run", dataflow.to_str().unwrap(), "--record", file_arg]);

    let csv = dir.path().join("numbers.csv");
    let args = ["recording", "export", file_arg, "--channel"];
    cli.ok(&[&args[..], &["arrows/numbers", "-o", csv.to_str().unwrap()]].concat());
    let rows: Vec<Vec<String>> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    assert_eq!(rows[0], ["message", "log_time_ns", "index", "value"]);
    let values: Vec<(&str, &str, &str)> = rows[1..]
        .iter()
        .map(|r| (r[0].as_str(), r[2].as_str(), r[3].as_str()))
        .collect();
    assert_eq!(
        values,
        [
            ("0", "0", "0"),
            ("0", "1", "0"),
            ("1", "0", "1"),
            ("1", "1", "1"),
            ("2", "0", "2"),
            ("2", "1", "4")
        ]
    );

    let text = dir.path().join("text.csv");
    cli.ok(&[&args[..], &["arrows/text", "-o", text.to_str().unwrap()]].concat());
    let text = std::fs::read_to_string(&text).unwrap();
    assert!(
        text.lines()
            .nth(3)
            .unwrap()
            .ends_with(",0,\"n=2, \"\"q\"\"\""),
        "{text}"
    );

    let frames = dir.path().join("frames");
    let out = cli.ok(&[&args[..], &["frames/data", "-o", frames.to_str().unwrap()]].concat());
    assert!(out.stderr.contains("2 message(s) of frames/data"), "{out}");
    let mut names: Vec<String> = std::fs::read_dir(&frames)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names[0].starts_with("000000-") && names[0].ends_with(".bin"),
        "{names:?}"
    );
    let second = std::fs::read(frames.join(&names[1])).unwrap();
    assert_eq!(second.len(), 5000);
    assert_eq!(&second[..8], &1u64.to_le_bytes());
    assert!(second[8..].iter().all(|b| *b == 1));

    let wrong = cli.run(&[&args[..], &["nobody/out"]].concat());
    assert!(!wrong.status.success(), "{wrong}");
    assert!(
        wrong.stderr.contains(
            "no message on `nobody/out` (its channels: arrows/numbers, arrows/text, frames/data)"
        ),
        "{wrong}"
    );
}

/// The number in a line `<prefix><number><rest>` of `text`, if any.
fn number_after(text: &str, prefix: &str) -> Option<u64> {
    let at = text.find(prefix)? + prefix.len();
    let digits: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[test]
fn run_record_lossy_accounts_for_every_message_recorded_or_dropped() {
    let dir = temp_dir();
    let cli = MarkedCli::new(dir.path(), MARKER, TIMEOUT);
    let node = bin("adora-test-node");
    // 300 messages of 4 MiB back to back: a debug build's recorder drops some of them (one to a
    // few here; none is forced: what is checked is that each is recorded or counted).
    let yaml = format!(
        "nodes:\n  - id: flood\n    path: {node}\n    env: {{ MODE: flood, COUNT: 300, SIZE: 4194304 }}\n    outputs: [data]\n  - id: sink\n    path: {node}\n    env: {{ MODE: recv }}\n    inputs: {{ data: {{ source: flood/data, queue_size: 300 }} }}\n",
        node = node.display()
    );
    let dataflow = dir.path().join("flood.yml");
    std::fs::write(&dataflow, yaml).unwrap();
    let file = dir.path().join("flood.mcap");
    let file_arg = file.to_str().unwrap();

    // --lossy belongs to --record.
    let alone = cli.run(&["run", dataflow.to_str().unwrap(), "--lossy"]);
    assert!(!alone.status.success(), "{alone}");
    assert!(alone.stderr.contains("--record"), "{alone}");

    let out = cli.ok(&[
        "run",
        dataflow.to_str().unwrap(),
        "--record",
        file_arg,
        "--lossy",
        "--compression",
        "zstd",
    ]);
    assert!(out.stdout.contains("flood sent=300"), "{out}");
    let recorded = number_after(&out.stderr, "recorded ").expect("a `recorded N` line");
    let dropped = if out.stderr.contains("dropped: none") {
        0
    } else {
        number_after(&out.stderr, "dropped: ").expect("a `dropped: N message(s)` line")
    };
    assert!(
        dropped == 0 || out.stderr.contains("message(s) of flood/data (--lossy)"),
        "{out}"
    );
    assert_eq!(
        recorded + dropped,
        300,
        "every message recorded or counted\n{out}"
    );

    let info = cli.ok(&["recording", "info", file_arg, "--json"]);
    let info: serde_json::Value = serde_json::from_str(&info.stdout).unwrap();
    assert_eq!(
        info["channels"]["flood/data"]["messages"], recorded,
        "{info}"
    );
    let stored = info["dropped"]["flood/data"].as_u64().unwrap_or(0);
    assert_eq!(
        stored, dropped,
        "the drops are written into the file: {info}"
    );
    println!("lossy recording: {recorded} recorded, {dropped} dropped");
}

#[test]
fn a_recording_of_inline_and_shared_messages_back_to_back_keeps_every_one_in_order() {
    // Inline copies of lane messages reach the recorder through the sender's taps lane, shared
    // ones (every 5th, 64 KiB) on its socket: the recorder must still see them in send order.
    let dir = temp_dir();
    let cli = MarkedCli::new(dir.path(), MARKER, TIMEOUT);
    let node = bin("adora-test-node");
    let count = 20_000;
    let yaml = format!(
        "nodes:\n  - id: flood\n    path: {node}\n    env: {{ MODE: flood, COUNT: {count}, LARGE_EVERY: 5 }}\n    outputs: [data]\n  - id: sink\n    path: {node}\n    env: {{ MODE: recv }}\n    inputs: {{ data: {{ source: flood/data, queue_size: 1000 }} }}\n",
        node = node.display()
    );
    let dataflow = dir.path().join("mixed.yml");
    std::fs::write(&dataflow, yaml).unwrap();
    let file = dir.path().join("mixed.mcap");
    let out = cli.ok(&[
        "run",
        dataflow.to_str().unwrap(),
        "--record",
        file.to_str().unwrap(),
    ]);
    assert!(out.stdout.contains(&format!("flood sent={count}")), "{out}");
    let seqs = recorded_seqs(&file, "flood/data");
    let expected: Vec<u64> = (0..count).collect();
    if seqs != expected {
        let first_wrong = seqs.iter().zip(&expected).position(|(a, b)| a != b);
        panic!(
            "{} recorded of {count}; first out of place at {first_wrong:?}: {:?}",
            seqs.len(),
            first_wrong.map(|i| &seqs[i.saturating_sub(2)..(i + 3).min(seqs.len())])
        );
    }
}

#[test]
fn a_recording_has_the_lines_a_node_sends_as_an_output() {
    let dir = temp_dir();
    let cli = MarkedCli::new(dir.path(), MARKER, TIMEOUT);
    let yaml = format!(
        "nodes:\n  - id: talker\n    path: {node}\n    env: {{ MODE: chatter, COUNT: 3 }}\n    outputs: [log]\n    send_stdout_as: log\n  - id: listener\n    path: {node}\n    env: {{ MODE: print-strings }}\n    inputs: {{ lines: talker/log }}\n",
        node = bin("adora-test-node").display()
    );
    let dataflow = dir.path().join("talker.yml");
    std::fs::write(&dataflow, yaml).unwrap();
    let file = dir.path().join("log.mcap");
    let file_arg = file.to_str().unwrap();
    let out = cli.ok(&["run", dataflow.to_str().unwrap(), "--record", file_arg]);
    assert!(out.stderr.contains("recorded 6 message(s)"), "{out}");
    let read = read_with_mcap_crate(&file);
    assert_eq!(read.get("talker/log"), Some(&(6, true)), "{read:?}");

    let csv = dir.path().join("log.csv");
    let export = [
        "recording",
        "export",
        file_arg,
        "--channel",
        "talker/log",
        "-o",
    ];
    cli.ok(&[&export[..], &[csv.to_str().unwrap()]].concat());
    let csv = std::fs::read_to_string(&csv).unwrap();
    for line in ["line 0", "line 2", "err 0", "err 2"] {
        assert!(csv.contains(line), "`{line}` not recorded:\n{csv}");
    }
}
