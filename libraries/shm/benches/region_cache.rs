#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

//! The receiver's lookup of a cached mapping, done once per received shared-memory sample:
//! `get` (checks the name with a `stat`) against `get_file` (trusts the file identity the sender
//! announced, no system call). Run with `cargo bench -p adora-shm --bench region_cache`.

use std::hint::black_box;

use adora_shm::{RegionCache, SamplePool};
use criterion::{criterion_group, criterion_main, Criterion};

fn cached_lookup(c: &mut Criterion) {
    let prefix = format!("adora-shm-bench-{}-", std::process::id());
    let mut pool = SamplePool::new(prefix.clone());
    let sample = pool.allocate(4096).expect("allocate");
    let handle = pool.send(sample);
    let mut cache = RegionCache::new();
    cache.get(&handle.os_id).expect("first mapping");

    let mut group = c.benchmark_group("region_cache_hit");
    group.bench_function("get (stat)", |b| {
        b.iter(|| cache.get(black_box(&handle.os_id)).expect("hit"))
    });
    group.bench_function("get_file (no syscall)", |b| {
        b.iter(|| {
            cache
                .get_file(black_box(&handle.os_id), black_box(handle.file))
                .expect("hit")
        })
    });
    group.finish();
    drop(pool);
    let _ = adora_shm::unlink_all(&prefix);
}

criterion_group!(benches, cached_lookup);
criterion_main!(benches);
