#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

//! Local routing fan-out: one `SendOutput` delivered to 1, 4 and 8 receivers that are waiting in
//! `NextEvents`, measured on the daemon's routing state without sockets. Shared-memory handles are
//! also released by every receiver, as they would be. Plus a burst of 8 messages routed as one
//! batch or one by one. Run with `cargo bench -p adora-daemon --bench routing`.

use std::{hint::black_box, path::Path};

use adora_core::{DataId, Descriptor, NodeId};
use adora_daemon::bench_hooks::Routing;
use adora_message::{daemon_to_node::DaemonReply, DataRef, Metadata, SegmentFile, SharedRef};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn descriptor(receivers: usize) -> Descriptor {
    let mut yaml = String::from("nodes:\n  - id: src\n    path: src\n    outputs: [out]\n");
    for i in 0..receivers {
        yaml += &format!("  - id: sink{i}\n    path: sink\n    inputs: {{ x: src/out }}\n");
    }
    Descriptor::parse(&yaml, Path::new("bench.yml")).expect("valid descriptor")
}

fn fan_out(c: &mut Criterion) {
    let metadata = Metadata::new(uhlc::HLC::default().new_timestamp());
    let (src, out): (NodeId, DataId) = ("src".into(), "out".into());
    let mut group = c.benchmark_group("routing_fan_out");
    for receivers in [1usize, 4, 8] {
        let sinks: Vec<NodeId> = (0..receivers).map(|i| format!("sink{i}").into()).collect();
        group.throughput(Throughput::Elements(receivers as u64));
        let payloads = [
            ("inline-8B", DataRef::Inline(vec![7; 8])),
            (
                "shared",
                DataRef::Shared(SharedRef {
                    os_id: "adora-bench-routing".into(),
                    len: 4 << 20,
                    token: 42,
                    file: SegmentFile { dev: 0, ino: 42 },
                }),
            ),
        ];
        for (name, data) in payloads {
            let mut routing = Routing::new(&descriptor(receivers));
            let token = match &data {
                DataRef::Shared(s) => Some(s.token),
                DataRef::Inline(_) => None,
            };
            group.bench_function(BenchmarkId::new(name, receivers), |b| {
                b.iter(|| {
                    let mut waiting: Vec<_> =
                        sinks.iter().map(|s| routing.next_events(s)).collect();
                    routing.send_output(&src, &out, metadata.clone(), data.clone());
                    for rx in &mut waiting {
                        let reply = rx.try_recv().expect("every receiver got the message");
                        assert!(matches!(reply, DaemonReply::Events { .. }));
                        black_box(reply);
                    }
                    if let Some(token) = token {
                        for sink in &sinks {
                            routing.report_dropped(sink, vec![token]);
                        }
                        let mut freed = routing.next_freed(&src);
                        let freed = freed.try_recv().expect("the sample was released");
                        assert_eq!(freed, DaemonReply::FreedSamples(vec![token]));
                    }
                })
            });
        }
    }
    group.finish();
}

/// A fast sender's burst: 8 messages read in one go from its control connection, routed as one
/// batch (as the daemon does) or one by one, to one receiver waiting in `NextEvents`.
fn batch(c: &mut Criterion) {
    const BURST: u64 = 8; // below the default queue size: nothing is dropped
    let metadata = Metadata::new(uhlc::HLC::default().new_timestamp());
    let (src, out, sink): (NodeId, DataId, NodeId) = ("src".into(), "out".into(), "sink0".into());
    let mut group = c.benchmark_group("routing_burst");
    group.throughput(Throughput::Elements(BURST));
    for batched in [false, true] {
        let mut routing = Routing::new(&descriptor(1));
        let name = if batched { "batched" } else { "one-by-one" };
        group.bench_function(BenchmarkId::new(name, BURST), |b| {
            b.iter(|| {
                let mut waiting = routing.next_events(&sink);
                if batched {
                    routing.hold_wakes();
                }
                let mut delivered = 0;
                for _ in 0..BURST {
                    routing.send_output(&src, &out, metadata.clone(), DataRef::Inline(vec![7; 8]));
                    if let Ok(DaemonReply::Events { events, .. }) = waiting.try_recv() {
                        // Answered at once: the receiver asks again, as a node would.
                        delivered += events.len();
                        waiting = routing.next_events(&sink);
                    }
                }
                if batched {
                    routing.release_wakes();
                }
                if let Ok(DaemonReply::Events { events, .. }) = waiting.try_recv() {
                    delivered += events.len();
                } else {
                    // The remainder is queued; collect it like the receiver's next request.
                    let mut rest = routing.next_events(&sink);
                    if let Ok(DaemonReply::Events { events, .. }) = rest.try_recv() {
                        delivered += events.len();
                    }
                }
                assert_eq!(delivered as u64, BURST);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fan_out, batch);
criterion_main!(benches);
