//! `/metrics` in the Prometheus text exposition format (version 0.0.4): daemons, dataflows by
//! status, per-daemon heartbeat age and per-node counters of every running dataflow.

use std::fmt::Write;

use crate::actor::Metrics;

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes `# HELP` and `# TYPE` of one metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A per-node metric family: one sample per node of a running dataflow.
struct NodeFamily {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&adora_message::stats::NodeInfo) -> f64,
}

const NODE_FAMILIES: [NodeFamily; 6] = [
    NodeFamily {
        name: "adora_node_messages_sent_total",
        kind: "counter",
        help: "Messages a node sent.",
        value: |n| n.messages_sent as f64,
    },
    NodeFamily {
        name: "adora_node_messages_received_total",
        kind: "counter",
        help: "Messages delivered to a node.",
        value: |n| n.messages_received as f64,
    },
    NodeFamily {
        name: "adora_node_dropped_messages_total",
        kind: "counter",
        help: "Messages dropped from a node's full input queues.",
        value: |n| n.dropped as f64,
    },
    NodeFamily {
        name: "adora_node_restarts_total",
        kind: "counter",
        help: "Restarts of a node by its restart policy.",
        value: |n| f64::from(n.restarts),
    },
    NodeFamily {
        name: "adora_node_cpu_percent",
        kind: "gauge",
        help: "CPU use of a node's process in percent of one core.",
        value: |n| n.cpu_percent,
    },
    NodeFamily {
        name: "adora_node_rss_bytes",
        kind: "gauge",
        help: "Resident memory of a node's process.",
        value: |n| n.rss_bytes as f64,
    },
];

/// The whole `/metrics` page.
pub(crate) fn render(m: &Metrics) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "adora_daemons",
        "gauge",
        "Daemons known to the coordinator.",
    );
    let _ = writeln!(
        out,
        "adora_daemons{{state=\"connected\"}} {}",
        m.daemons_connected
    );
    let _ = writeln!(out, "adora_daemons{{state=\"lost\"}} {}", m.daemons_lost);
    family(&mut out, "adora_dataflows", "gauge", "Dataflows by status.");
    for (status, n) in &m.dataflows {
        let _ = writeln!(out, "adora_dataflows{{status=\"{status}\"}} {n}");
    }
    family(
        &mut out,
        "adora_daemon_last_heartbeat_age_seconds",
        "gauge",
        "Seconds since a connected daemon's last message.",
    );
    for (daemon, age) in &m.heartbeat_ages {
        let _ = writeln!(
            out,
            "adora_daemon_last_heartbeat_age_seconds{{daemon=\"{}\"}} {age:.3}",
            escape(daemon)
        );
    }
    for f in &NODE_FAMILIES {
        family(&mut out, f.name, f.kind, f.help);
        for n in &m.nodes {
            let _ = writeln!(
                out,
                "{}{{dataflow=\"{}\",node=\"{}\",machine=\"{}\"}} {}",
                f.name,
                escape(&n.dataflow),
                escape(n.node.as_str()),
                escape(&n.machine),
                (f.value)(n)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use adora_message::stats::{NodeInfo, NodeStatus};

    /// A strict check of the text format: every line is a `# HELP`/`# TYPE` comment or a
    /// sample `name{label="value",...} number` of a family declared before it, with a valid
    /// metric name, valid label names and properly escaped label values.
    pub(crate) fn check_exposition(text: &str) -> Result<usize, String> {
        let valid_name = |s: &str| {
            !s.is_empty()
                && s.chars().enumerate().all(|(i, c)| {
                    c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
                })
        };
        let mut typed: Vec<String> = Vec::new();
        let mut samples = 0;
        for (i, line) in text.lines().enumerate() {
            let bad = |why: &str| Err(format!("line {}: {why}: {line:?}", i + 1));
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("HELP"), Some(name), Some(_)) if valid_name(name) => {}
                    (Some("TYPE"), Some(name), Some(kind)) if valid_name(name) => {
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                        {
                            return bad("unknown type");
                        }
                        if typed.iter().any(|t| t == name) {
                            return bad("family declared twice");
                        }
                        typed.push(name.to_owned());
                    }
                    _ => return bad("malformed comment"),
                }
                continue;
            }
            let (series, value) = match line.rsplit_once(' ') {
                Some(split) => split,
                None => return bad("no value"),
            };
            if value.parse::<f64>().is_err() {
                return bad("value is not a number");
            }
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => match rest.strip_suffix('}') {
                    Some(labels) => (name, labels),
                    None => return bad("unclosed labels"),
                },
                None => (series, ""),
            };
            if !valid_name(name) || typed.last().map(String::as_str) != Some(name) {
                return bad("sample outside its family");
            }
            let mut rest = labels;
            while !rest.is_empty() {
                let Some((label, after)) = rest.split_once("=\"") else {
                    return bad("malformed label");
                };
                if !valid_name(label) {
                    return bad("bad label name");
                }
                let mut end = None;
                let mut escaped = false;
                for (j, c) in after.char_indices() {
                    match (escaped, c) {
                        (true, '\\' | '"' | 'n') => escaped = false,
                        (true, _) => return bad("bad escape"),
                        (false, '\\') => escaped = true,
                        (false, '"') => {
                            end = Some(j);
                            break;
                        }
                        (false, '\n') => return bad("raw newline"),
                        _ => {}
                    }
                }
                let Some(end) = end else {
                    return bad("unterminated label value");
                };
                rest = &after[end + 1..];
                rest = match rest.strip_prefix(',') {
                    Some(r) => r,
                    None if rest.is_empty() => rest,
                    None => return bad("labels not separated by commas"),
                };
            }
            samples += 1;
        }
        Ok(samples)
    }

    #[test]
    fn renders_strict_prometheus_text() {
        let node = NodeInfo {
            dataflow_id: uuid::Uuid::nil(),
            dataflow: "we\"ird\\name".into(),
            node: "camera".into(),
            machine: "robot".into(),
            status: NodeStatus::Running,
            pid: Some(7),
            cpu_percent: 12.5,
            rss_bytes: 4096,
            messages_sent: 10,
            messages_received: 0,
            messages_sent_per_sec: 1.0,
            messages_received_per_sec: 0.0,
            dropped: 2,
            restarts: 1,
            uptime_secs: 3.0,
            inputs: Default::default(),
            outputs: vec![],
            last_error: None,
            stats_age_ms: Some(5),
        };
        let m = Metrics {
            daemons_connected: 1,
            daemons_lost: 0,
            dataflows: [("running", 1), ("failed", 0)].into(),
            nodes: vec![node],
            heartbeat_ages: vec![("robot".into(), 1.25)],
        };
        let text = render(&m);
        assert_eq!(check_exposition(&text), Ok(2 + 2 + 1 + 6), "{text}");
        assert!(text.contains(
            "adora_node_messages_sent_total{dataflow=\"we\\\"ird\\\\name\",node=\"camera\",machine=\"robot\"} 10\n"
        ));
        assert!(text.contains("adora_daemon_last_heartbeat_age_seconds{daemon=\"robot\"} 1.250\n"));
        assert!(
            check_exposition("adora_x 1\n").is_err(),
            "sample without TYPE"
        );
        assert!(check_exposition("# TYPE a gauge\na{l=\"x} 1\n").is_err());
        assert!(check_exposition("# TYPE a gauge\na{l=\"x\"} one\n").is_err());
    }
}
