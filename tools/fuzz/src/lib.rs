//! `adora-fuzz`: property-based fuzzing of every parser and wire decoder that takes input from
//! outside the process — `dataflow.yml` and `cluster.yml`, the node protocol frames, the
//! control-plane envelopes in each direction, the cross-machine payload header, the Arrow layout
//! of payloads, artifact-store paths, and the strings `adora cluster` hands to remote shells.
//!
//! Inputs are structure-aware (valid documents and messages, generated with `proptest`
//! strategies or taken from the repository's examples and the message crate's round-trip
//! tests, then mutated: flipped fields, hostile numbers, deep nesting, huge strings, unknown
//! fields, cut or flipped bytes) plus random bytes. Each case checks that the code under test
//! does not panic ([`runner`] isolates cases with `catch_unwind`), finishes within a time limit,
//! allocates memory bounded by its input ([`alloc`] counts every allocation), and accepts only
//! what survives a round trip (a decoded value re-encodes to something that decodes to the same
//! value).
//!
//! `cargo test -p adora-fuzz` runs a few thousand cases of every target; `cargo run -p adora-fuzz
//! --release -- --cases 1000000` runs many more and prints per target cases, cases/s and findings
//! with the seed and case index that replay each one (`--target T --seed S --case N`).

pub mod alloc;
pub mod mutate;
pub mod runner;
pub mod targets;

pub use runner::{run, run_case, Finding, FindingKind, Report, RunConfig, Target};
pub use targets::{find, TARGETS};

#[global_allocator]
static ALLOCATOR: alloc::CountingAllocator = alloc::CountingAllocator;

/// Stack of the thread cases run on: the smallest a decoder runs on in Adora (a tokio worker's,
/// and Rust's default for spawned threads), so a decoder that recurses too deep for it is found.
pub const CASE_STACK_BYTES: usize = 2 << 20;

/// Runs `target` on a thread with a [`CASE_STACK_BYTES`] stack.
pub fn run_on_case_stack(target: &'static Target, config: RunConfig) -> Report {
    std::thread::Builder::new()
        .name(format!("fuzz-{}", target.name))
        .stack_size(CASE_STACK_BYTES)
        .spawn(move || run(target, &config))
        .expect("the OS starts a thread")
        .join()
        .expect("the runner catches the panics of cases")
}
