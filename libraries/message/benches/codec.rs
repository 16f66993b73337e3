#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

//! Frame encode/decode of the two hottest local data-plane messages: a node's `SendOutput` and
//! the daemon's `Events` reply. Run with `cargo bench -p adora-message --bench codec`.

use std::{collections::BTreeMap, hint::black_box};

use adora_message::{
    codec::{decode, encode},
    daemon_to_node::{DaemonReply, NodeEvent},
    node_to_daemon::NodeRequest,
    DataRef, Metadata, SegmentFile, SharedRef,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn metadata() -> Metadata {
    Metadata::new(uhlc::HLC::default().new_timestamp())
}

fn payloads() -> Vec<(&'static str, DataRef)> {
    vec![
        ("inline-8B", DataRef::Inline(vec![7; 8])),
        ("inline-2KiB", DataRef::Inline(vec![7; 2048])),
        (
            "shared-4MiB",
            DataRef::Shared(SharedRef {
                os_id: "adora-0123456789abcdef-sender-17".into(),
                len: 4 << 20,
                token: 0x1234_5678_0000_0042,
                file: SegmentFile { dev: 25, ino: 1234 },
            }),
        ),
    ]
}

fn send_output(c: &mut Criterion) {
    let mut group = c.benchmark_group("send_output");
    for (name, data) in payloads() {
        let request = NodeRequest::SendOutput {
            output: "data".into(),
            metadata: metadata(),
            data,
            taps_before: 0,
        };
        let frame = encode(&request).expect("encodes");
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode", name), &request, |b, r| {
            b.iter(|| encode(black_box(r)).expect("encodes"))
        });
        group.bench_with_input(BenchmarkId::new("decode", name), &frame[4..], |b, body| {
            b.iter(|| decode::<NodeRequest>(black_box(body)).expect("decodes"))
        });
    }
    group.finish();
}

fn events(c: &mut Criterion) {
    let mut group = c.benchmark_group("events_reply");
    for count in [1usize, 16] {
        let reply = DaemonReply::Events {
            events: (0..count)
                .map(|_| NodeEvent::Input {
                    id: "data".into(),
                    metadata: metadata(),
                    data: DataRef::Inline(vec![7; 8]),
                })
                .collect(),
            drop_counts: BTreeMap::new(),
        };
        let frame = encode(&reply).expect("encodes");
        group.throughput(Throughput::Elements(count as u64));
        let name = format!("{count}x-inline-8B");
        group.bench_with_input(BenchmarkId::new("encode", &name), &reply, |b, r| {
            b.iter(|| encode(black_box(r)).expect("encodes"))
        });
        group.bench_with_input(BenchmarkId::new("decode", &name), &frame[4..], |b, body| {
            b.iter(|| decode::<DaemonReply>(black_box(body)).expect("decodes"))
        });
    }
    group.finish();
}

criterion_group!(benches, send_output, events);
criterion_main!(benches);
