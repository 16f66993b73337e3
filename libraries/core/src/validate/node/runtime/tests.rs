//! Tests of the runtime fields: input timeouts, health checks, CPU affinity, logs as data.

use std::time::Duration;

use crate::{
    descriptor::InputSpec,
    validate::tests::{e, errors, parse_ok},
};

/// A dataflow with one node `a` (lines 1–4, outputs `[log, data]`) followed by `extra` lines.
fn node_a(extra: &str) -> String {
    format!("nodes:\n  - id: a\n    path: ./a\n    outputs: [log, data]\n{extra}")
}

#[test]
fn runtime_fields_are_read() {
    let d = parse_ok(
        "health_check_interval: 0.5\nnodes:\n  - id: a\n    path: ./a\n    outputs: [log]\n    \
         health_check_timeout: 2s\n    cpu_affinity: [0, 1]\n    send_stdout_as: log\n  \
         - id: b\n    path: ./b\n    inputs:\n      in: { source: a/log, input_timeout: 1.5 }\n",
    );
    assert_eq!(
        d.health_check_interval.map(|d| d.0),
        Some(Duration::from_millis(500))
    );
    let a = &d.nodes[0];
    assert_eq!(
        a.health_check_timeout.map(|d| d.0),
        Some(Duration::from_secs(2))
    );
    assert_eq!(a.cpu_affinity, Some(vec![0, 1]));
    assert_eq!(a.send_stdout_as.as_ref().map(|o| o.as_str()), Some("log"));
    let input: &InputSpec = &d.nodes[1].inputs["in"];
    assert_eq!(input.input_timeout(), Some(Duration::from_millis(1500)));
    assert!(d.nodes[0].inputs.is_empty());
}

#[test]
fn input_timeout_is_range_checked() {
    let yaml = "nodes:\n  - id: a\n    path: ./a\n    outputs: [o]\n  - id: b\n    path: ./b\n    \
                inputs:\n      x: { source: a/o, input_timeout: 0 }\n      \
                y: { source: a/o, input_timeout: soon }\n";
    assert_eq!(
        errors(yaml),
        [
            e(
                8,
                Some("b"),
                Some("inputs.x.input_timeout"),
                "0s is out of range: expected between 10ms and 30days"
            ),
            e(
                9,
                Some("b"),
                Some("inputs.y.input_timeout"),
                "invalid duration `soon`: expected number at 0 (expected a duration like \
                 `500ms`, `5s` or `1m 30s`, or a number of seconds)"
            ),
        ]
    );
}

#[test]
fn health_check_durations_are_range_checked() {
    let yaml = format!(
        "health_check_interval: -1\n{}",
        node_a("    health_check_timeout: 31days\n")
    );
    assert_eq!(
        errors(&yaml),
        [
            e(
                1,
                None,
                Some("health_check_interval"),
                "expected a duration like `500ms`, `5s` or `1m 30s`, or a number of seconds, \
                 not negative, found a number (-1)"
            ),
            e(
                6,
                Some("a"),
                Some("health_check_timeout"),
                "1month 13h 26m 24s is out of range: expected between 10ms and 30days"
            ),
        ]
    );
}

#[test]
fn cpu_affinity_must_be_a_list_of_core_numbers() {
    assert_eq!(
        errors(&node_a("    cpu_affinity: 0\n")),
        [e(
            5,
            Some("a"),
            Some("cpu_affinity"),
            "expected a list of CPU core numbers (e.g. `[0, 1]`), found a number (0)"
        )]
    );
    assert_eq!(
        errors(&node_a("    cpu_affinity: []\n")),
        [e(
            5,
            Some("a"),
            Some("cpu_affinity"),
            "must list at least one CPU core"
        )]
    );
    assert_eq!(
        errors(&node_a("    cpu_affinity: [1, -1, 1, 5000, x]\n")),
        [
            e(
                5,
                Some("a"),
                Some("cpu_affinity[1]"),
                "expected a CPU core number (0, 1, ...), found a number (-1)"
            ),
            e(
                5,
                Some("a"),
                Some("cpu_affinity[2]"),
                "CPU core 1 is listed twice"
            ),
            e(
                5,
                Some("a"),
                Some("cpu_affinity[3]"),
                "CPU core 5000 is out of range: expected 0 to 1023"
            ),
            e(
                5,
                Some("a"),
                Some("cpu_affinity[4]"),
                "expected a CPU core number (0, 1, ...), found a string (`x`)"
            ),
        ]
    );
}

#[test]
fn send_stdout_as_must_name_a_declared_output() {
    assert_eq!(
        errors(&node_a("    send_stdout_as: logs\n")),
        [e(
            5,
            Some("a"),
            Some("send_stdout_as"),
            "`logs` is not one of the node's outputs; add it to `outputs`"
        )]
    );
    assert_eq!(
        errors(&node_a("    send_stdout_as: [log]\n")),
        [e(
            5,
            Some("a"),
            Some("send_stdout_as"),
            "expected an output id, found a list"
        )]
    );
    parse_ok(&node_a("    send_stdout_as: log\n"));
}

#[test]
fn exit_when_nodes_finish_is_a_boolean() {
    let d = parse_ok("exit_when_nodes_finish: true\nnodes:\n  - id: a\n    path: ./a\n");
    assert_eq!(d.exit_when_nodes_finish, Some(true));
    assert_eq!(
        errors("exit_when_nodes_finish: yes please\nnodes:\n  - id: a\n    path: ./a\n"),
        [e(
            1,
            None,
            Some("exit_when_nodes_finish"),
            "expected true or false, found a string (`yes please`)"
        )]
    );
}

#[test]
fn log_fields_are_read() {
    use crate::descriptor::{ByteSize, LogLevel};
    let d = parse_ok(&node_a(
        "    send_logs_as: log\n    min_log_level: warn\n    max_log_size: 50MB\n    \
         max_rotated_files: 3\n",
    ));
    let a = &d.nodes[0];
    assert_eq!(a.send_logs_as.as_ref().map(|o| o.as_str()), Some("log"));
    assert_eq!(a.min_log_level, Some(LogLevel::Warn));
    assert_eq!(a.max_log_size, Some(ByteSize(50_000_000)));
    assert_eq!(a.max_rotated_files, Some(3));
    let d = parse_ok(&node_a("    max_log_size: 4096\n"));
    assert_eq!(d.nodes[0].max_log_size, Some(ByteSize(4096)));
    assert_eq!(ByteSize::parse("1.5 KiB"), Ok(ByteSize(1536)));
    assert!(LogLevel::Stdout < LogLevel::Trace && LogLevel::Warn < LogLevel::Error);
}

#[test]
fn log_fields_are_checked() {
    assert_eq!(
        errors(&node_a(
            "    send_logs_as: nope\n    min_log_level: warning\n    max_log_size: 10\n    \
             max_rotated_files: -1\n"
        )),
        [
            e(
                5,
                Some("a"),
                Some("send_logs_as"),
                "`nope` is not one of the node's outputs; add it to `outputs`"
            ),
            e(
                6,
                Some("a"),
                Some("min_log_level"),
                "invalid log level `warning`; expected one of: stdout, trace, debug, info, warn, \
                 error"
            ),
            e(
                7,
                Some("a"),
                Some("max_log_size"),
                "10 bytes is out of range: expected between 1024 bytes (1 KiB) and \
                 1099511627776 bytes (1 TiB)"
            ),
            e(
                8,
                Some("a"),
                Some("max_rotated_files"),
                "expected an integer from 0 to 1000, found a number (-1)"
            ),
        ]
    );
    assert_eq!(
        errors(&node_a("    max_log_size: 5 parsecs\n")),
        [e(
            5,
            Some("a"),
            Some("max_log_size"),
            "invalid size unit `parsecs` in `5 parsecs`: expected B, KB, MB, GB, KiB, MiB or GiB"
        )]
    );
}

#[test]
fn poll_is_spin_or_sleep() {
    let yaml = "nodes:\n  - id: a\n    path: ./a\n    outputs: [o]\n  - id: b\n    path: ./b\n    \
                inputs:\n      x: { source: a/o, poll: spin }\n      \
                y: { source: a/o, poll: busy }\n";
    assert_eq!(
        errors(yaml),
        [e(
            9,
            Some("b"),
            Some("inputs.y.poll"),
            "expected `spin` or `sleep`, found a string (`busy`)"
        )]
    );
    let d = parse_ok(&yaml.replace("busy", "sleep"));
    let b = &d.nodes[1];
    let poll = |id: &str| b.inputs[&crate::DataId::from(id)].poll();
    assert_eq!(poll("x"), crate::descriptor::InputPoll::Spin);
    assert_eq!(poll("y"), crate::descriptor::InputPoll::Sleep);
}
