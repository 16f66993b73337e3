//! `/metrics` in the Prometheus text exposition format (version 0.0.4): daemons, dataflows by
//! status, per-daemon heartbeat age and per-node counters of every running dataflow.
//!
//! Each scrape fills a fresh [`Registry`] of typed metric families from the actor's snapshot
//! ([`Metrics`]); `prometheus-client` writes the text, escaping included (help texts are given
//! without their final period, which it adds).

use prometheus_client::{
    encoding::{prometheus_text, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use adora_message::stats::NodeInfo;

use crate::actor::Metrics;

/// `Content-Type` of the page.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A gauge holding a float.
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// `adora_daemons{state}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DaemonState {
    state: &'static str,
}

/// `adora_dataflows{status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DataflowStatus {
    status: &'static str,
}

/// `adora_daemon_last_heartbeat_age_seconds{daemon}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Daemon {
    daemon: String,
}

/// The labels of every per-node family.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Node {
    dataflow: String,
    node: String,
    machine: String,
}

/// `adora_remote_dropped_total{dataflow,node,input,reason}`: messages of an input that went
/// missing between machines.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RemoteInput {
    dataflow: String,
    node: String,
    input: String,
    reason: &'static str,
}

/// What a per-node family measures, and its type.
#[derive(Clone, Copy)]
enum NodeValue {
    /// A counter (named without its `_total`, which the encoding adds).
    Counter(fn(&NodeInfo) -> u64),
    /// A whole-number gauge.
    Gauge(fn(&NodeInfo) -> u64),
    /// A gauge with a fraction.
    FloatGauge(fn(&NodeInfo) -> f64),
}

/// A per-node metric family: one sample per node of a running dataflow.
struct NodeFamily {
    name: &'static str,
    help: &'static str,
    value: NodeValue,
}

const NODE_FAMILIES: [NodeFamily; 6] = [
    NodeFamily {
        name: "adora_node_messages_sent",
        help: "Messages a node sent",
        value: NodeValue::Counter(|n| n.messages_sent),
    },
    NodeFamily {
        name: "adora_node_messages_received",
        help: "Messages delivered to a node",
        value: NodeValue::Counter(|n| n.messages_received),
    },
    NodeFamily {
        name: "adora_node_dropped_messages",
        help: "Messages dropped from a node's full input queues",
        value: NodeValue::Counter(|n| n.dropped),
    },
    NodeFamily {
        name: "adora_node_restarts",
        help: "Restarts of a node by its restart policy",
        value: NodeValue::Counter(|n| u64::from(n.restarts)),
    },
    NodeFamily {
        name: "adora_node_cpu_percent",
        help: "CPU use of a node's process in percent of one core",
        value: NodeValue::FloatGauge(|n| n.cpu_percent),
    },
    NodeFamily {
        name: "adora_node_rss_bytes",
        help: "Resident memory of a node's process",
        value: NodeValue::Gauge(|n| n.rss_bytes),
    },
];

/// The whole `/metrics` page.
pub(crate) fn render(m: &Metrics) -> String {
    let mut registry = Registry::default();
    let daemons = Family::<DaemonState, Gauge>::default();
    for (state, n) in [("connected", m.daemons_connected), ("lost", m.daemons_lost)] {
        daemons.get_or_create(&DaemonState { state }).set(count(n));
    }
    registry.register("adora_daemons", "Daemons known to the coordinator", daemons);
    let dataflows = Family::<DataflowStatus, Gauge>::default();
    for (&status, &n) in &m.dataflows {
        dataflows
            .get_or_create(&DataflowStatus { status })
            .set(count(n));
    }
    registry.register("adora_dataflows", "Dataflows by status", dataflows);
    let ages = Family::<Daemon, FloatGauge>::default();
    for (daemon, age) in &m.heartbeat_ages {
        let daemon = Daemon {
            daemon: daemon.clone(),
        };
        // Milliseconds are precise enough.
        ages.get_or_create(&daemon)
            .set((age * 1000.0).round() / 1000.0);
    }
    registry.register(
        "adora_daemon_last_heartbeat_age_seconds",
        "Seconds since a connected daemon's last message",
        ages,
    );
    for f in &NODE_FAMILIES {
        register_node_family(&mut registry, f, m);
    }
    let remote = Family::<RemoteInput, Counter>::default();
    for n in &m.nodes {
        for d in &n.remote_dropped {
            let labels = RemoteInput {
                dataflow: n.dataflow.clone(),
                node: n.node.to_string(),
                input: d.input.to_string(),
                reason: d.reason.as_str(),
            };
            remote.get_or_create(&labels).inc_by(d.count);
        }
    }
    registry.register(
        "adora_remote_dropped",
        "Messages of a node's input that went missing between machines (sender_backlog: the \
         sending daemon's queue for the link was full; link: lost while the link was down)",
        remote,
    );
    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

/// Registers one per-node family with a sample per node.
fn register_node_family(registry: &mut Registry, f: &NodeFamily, m: &Metrics) {
    let labels = |n: &NodeInfo| Node {
        dataflow: n.dataflow.clone(),
        node: n.node.to_string(),
        machine: n.machine.clone(),
    };
    match f.value {
        NodeValue::Counter(value) => {
            let family = Family::<Node, Counter>::default();
            for n in &m.nodes {
                family.get_or_create(&labels(n)).inc_by(value(n));
            }
            registry.register(f.name, f.help, family);
        }
        NodeValue::Gauge(value) => {
            let family = Family::<Node, Gauge>::default();
            for n in &m.nodes {
                let v = i64::try_from(value(n)).unwrap_or(i64::MAX);
                family.get_or_create(&labels(n)).set(v);
            }
            registry.register(f.name, f.help, family);
        }
        NodeValue::FloatGauge(value) => {
            let family = Family::<Node, FloatGauge>::default();
            for n in &m.nodes {
                family.get_or_create(&labels(n)).set(value(n));
            }
            registry.register(f.name, f.help, family);
        }
    }
}

/// A count as a gauge value.
fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use adora_message::stats::NodeStatus;

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
            remote_dropped: vec![adora_message::stats::RemoteDrops {
                input: "frames".into(),
                reason: adora_message::stats::RemoteDropReason::Link,
                count: 2,
            }],
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
        assert_eq!(check_exposition(&text), Ok(2 + 2 + 1 + 6 + 1), "{text}");
        assert!(
            text.contains(
                "adora_remote_dropped_total{dataflow=\"we\\\"ird\\\\name\",node=\"camera\",input=\"frames\",reason=\"link\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "adora_node_messages_sent_total{dataflow=\"we\\\"ird\\\\name\",node=\"camera\",machine=\"robot\"} 10\n"
        ));
        // Milliseconds, written the shortest way (the hand-written page wrote `1.250`).
        assert!(text.contains("adora_daemon_last_heartbeat_age_seconds{daemon=\"robot\"} 1.25\n"));
        assert!(text.contains("# HELP adora_daemons Daemons known to the coordinator.\n"));
        assert!(
            check_exposition("adora_x 1\n").is_err(),
            "sample without TYPE"
        );
        assert!(check_exposition("# TYPE a gauge\na{l=\"x} 1\n").is_err());
        assert!(check_exposition("# TYPE a gauge\na{l=\"x\"} one\n").is_err());
    }
}
