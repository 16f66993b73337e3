//! What resource-aware placement knows of a daemon ([`Candidate`]): its labels, its machine's
//! latest figures (from its heartbeats, [`crate::stats`]), its thresholds (from its
//! registration) and what the nodes of running dataflows placed on it asked for.

use std::collections::{BTreeMap, HashMap};

use adora_core::{placement::Candidate, resources::Reserved, NodeId};

use crate::actor::{Coordinator, DaemonEntry};

impl Coordinator {
    /// Daemon name → the summed `deploy.resources` of the nodes placed on it by dataflows that
    /// are not over yet.
    pub(crate) fn reserved_by_daemon(&self) -> HashMap<String, Reserved> {
        let mut reserved: HashMap<String, Reserved> = HashMap::new();
        for flow in self.flows.values() {
            let record = &flow.record;
            if record.status.is_done() {
                continue;
            }
            let requests: BTreeMap<&NodeId, _> = record
                .descriptor
                .nodes
                .iter()
                .filter_map(|n| Some((&n.id, n.deploy().resources?)))
                .collect();
            for (node, daemon) in &record.placement {
                if let Some(requests) = requests.get(node) {
                    reserved.entry(daemon.clone()).or_default().add(requests);
                }
            }
        }
        reserved
    }

    /// The daemon as placement sees it; takes its entry out of `reserved`
    /// ([`Coordinator::reserved_by_daemon`]).
    pub(crate) fn candidate(
        &self,
        daemon: &DaemonEntry,
        reserved: &mut HashMap<String, Reserved>,
    ) -> Candidate {
        let name = daemon.name();
        Candidate {
            machine_id: daemon.machine_id.clone(),
            labels: daemon.labels.clone(),
            name: name.to_owned(),
            figures: self.node_stats.machine(name).map(|m| m.figures()),
            limits: daemon.limits,
            reserved: reserved.remove(name).unwrap_or_default(),
            unavailable: self.unavailable(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use adora_core::Descriptor;
    use adora_message::{
        cli_to_coordinator::{ControlRequest, StartDataflow},
        daemon_to_coordinator::DaemonMessage,
        stats::MachineTelemetry,
    };
    use adora_store::MemoryStore;

    use crate::testkit::Harness;

    const GIB: u64 = 1 << 30;

    fn figures(available: u64) -> MachineTelemetry {
        MachineTelemetry {
            adora_version: "test".into(),
            os: String::new(),
            kernel: String::new(),
            arch: "x86_64".into(),
            uptime_secs: None,
            load: None,
            memory_total_bytes: Some(16 * GIB),
            memory_available_bytes: Some(available),
            disk_free_bytes: Some(100 * GIB),
            cpus: Some(4),
            cpu_percent: Some(10.0),
            gpus: None,
        }
    }

    #[tokio::test]
    async fn requests_of_running_dataflows_count_against_their_daemon() {
        let mut h = Harness::new(Arc::new(MemoryStore::new())).await;
        let (a, _a_rx) = h.register("a", Vec::new());
        let (b, _b_rx) = h.register("b", Vec::new());
        for (conn, available) in [(a, 12 * GIB), (b, 19 * GIB / 2)] {
            h.daemon_says(
                conn,
                DaemonMessage::Heartbeat {
                    nodes: Vec::new(),
                    machine: Some(figures(available)),
                },
            );
        }
        let pick = |h: &Harness, machine: &str| {
            let yaml = format!(
                "nodes:\n  - id: n\n    path: ./n\n    deploy: {{ machine: {machine}, resources: {{ memory: 7GiB }} }}\n"
            );
            let d = Descriptor::parse(&yaml, "d.yml".as_ref()).expect("valid");
            h.c.place(&d, "start")
        };
        assert!(pick(&h, "a").is_ok() && pick(&h, "b").is_ok());
        let reserved = h.c.reserved_by_daemon();
        assert!(reserved.is_empty(), "{reserved:?}");

        // A running dataflow asked for 7 GiB on `a` (not measured yet): 16 - 7 = 9 GiB free.
        let start = StartDataflow {
            descriptor: Descriptor::parse(
                "nodes:\n  - id: big\n    path: ./big\n    deploy: { machine: a, resources: { memory: 7GiB } }\n",
                "d.yml".as_ref(),
            )
            .expect("valid"),
            name: Some("big".into()),
            working_dir: "/".into(),
            attach: false,
            artifacts: Default::default(),
            build: false,
            build_id: None,
        };
        let _replies = h.request(ControlRequest::Start(start));
        let reserved = h.c.reserved_by_daemon();
        assert_eq!(reserved["a"].memory, 7 * GIB);
        let e = h
            .c
            .place(
                &Descriptor::parse(
                    "nodes:\n  - id: n\n    path: ./n\n    deploy: { machine: a, resources: { memory: 10GiB } }\n",
                    "d.yml".as_ref(),
                )
                .expect("valid"),
                "start",
            )
            .expect_err("9 GiB free on a");
        assert!(
            e.message.contains(
                "node `n`: no machine can take it: a: memory 9.0 GiB free < 10.0 GiB requested"
            ),
            "{e}"
        );
        let status = h.c.status();
        let a_status = status
            .daemons
            .iter()
            .find(|d| d.machine_id.as_deref() == Some("a"))
            .expect("a");
        assert_eq!(a_status.reserved.memory, 7 * GIB);
        assert_eq!(a_status.machine.as_ref().and_then(|m| m.cpus), Some(4));
    }
}
