//! Benchmark sender node. For every size of the plan (see `benchmark_common::Plan`, read from the
//! environment): a latency phase of paced messages, then a throughput phase of back-to-back
//! messages, each framed by `Begin`/`End` markers on the `control` output. Payloads are written
//! straight into samples from `allocate_sample` (shared memory from 4 KiB on), never copied.
//! With `ADORA_BENCH_ACK` set, it waits for the sink's acknowledgement on its `ack` input after
//! every phase (see `benchmark_common::Marker`).

use std::time::{Duration, Instant};

use adora_node_api::{AdoraNode, DataId, Event, EventStream, MetadataParameters};
use benchmark_common::{
    env, write_payload, Marker, Pacer, Phase, Plan, MAX_IN_FLIGHT, SHM_THRESHOLD,
};

/// How long to sleep while every shared sample is still held by the receiver.
const IN_FLIGHT_POLL: Duration = Duration::from_micros(20);

/// Longest wait for the receiver to release the previous latency sample.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest wait for the sink's acknowledgement of a phase (it waits for stragglers itself).
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

type Error = Box<dyn std::error::Error>;

struct Sender {
    node: AdoraNode,
    data: DataId,
    control: DataId,
    seq: u64,
    /// The sink's acknowledgements.
    events: EventStream,
    /// Whether the sink acknowledges phases.
    acked: bool,
}

impl Sender {
    fn marker(&mut self, marker: &Marker) -> Result<(), Error> {
        self.node
            .send_output(&self.control, MetadataParameters::new(), &marker.to_bytes())?;
        if self.acked {
            loop {
                match self.events.recv_timeout(ACK_TIMEOUT) {
                    Some(Event::Input { id, .. }) if id.as_str() == "ack" => break,
                    Some(Event::Stop) => return Err("stopped while waiting for the sink".into()),
                    Some(_) => {}
                    None => {
                        return Err(
                            format!("the sink did not acknowledge {marker:?} in 30 s").into()
                        )
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes and sends one message; returns how long writing the payload took.
    fn send(&mut self, size: usize) -> Result<Duration, Error> {
        let started = Instant::now();
        let mut sample = self.node.allocate_sample(size)?;
        write_payload(&mut sample, self.seq);
        let written = started.elapsed();
        self.node
            .send_sample(&self.data, MetadataParameters::new(), sample)?;
        self.seq += 1;
        Ok(written)
    }

    /// Waits until the receiver dropped every shared sample: it has finished reading the previous
    /// payload (so the next sample does not queue behind it) and the pool reuses the same region
    /// (as the raw baseline reuses its slot).
    fn wait_released(&self) {
        let deadline = Instant::now() + RELEASE_TIMEOUT;
        while self.node.samples_in_flight() > 0 && Instant::now() < deadline {
            std::thread::sleep(IN_FLIGHT_POLL);
        }
    }

    fn latency(&mut self, plan: &Plan, size: usize) -> Result<(), Error> {
        self.marker(&Marker::Begin {
            size,
            phase: Phase::Latency,
            warmup: plan.warmup,
        })?;
        let mut pacer = Pacer::new(plan.pace);
        let mut write_time = Duration::ZERO;
        let count = plan.warmup + plan.samples;
        for _ in 0..count {
            pacer.wait(write_time);
            self.wait_released();
            write_time = self.send(size)?;
        }
        pacer.wait(write_time);
        self.wait_released();
        self.marker(&Marker::End {
            size,
            phase: Phase::Latency,
            sent: count as u64,
        })
    }

    fn throughput(&mut self, plan: &Plan, size: usize) -> Result<(), Error> {
        self.marker(&Marker::Begin {
            size,
            phase: Phase::Throughput,
            warmup: 0,
        })?;
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < plan.throughput_time {
            // Shared samples return to the pool only when the receiver drops them: bound the
            // number in flight like the raw baseline's slots, instead of growing the pool.
            while size >= SHM_THRESHOLD && self.node.samples_in_flight() >= MAX_IN_FLIGHT {
                std::thread::sleep(IN_FLIGHT_POLL);
            }
            self.send(size)?;
            sent += 1;
        }
        self.marker(&Marker::End {
            size,
            phase: Phase::Throughput,
            sent,
        })
    }
}

fn main() -> Result<(), Error> {
    let plan = Plan::from_env()?;
    let (node, events) = AdoraNode::init_from_env()?;
    let mut sender = Sender {
        node,
        data: "data".into(),
        control: "control".into(),
        seq: 0,
        events,
        acked: std::env::var_os(env::ACK).is_some(),
    };
    for &size in &plan.sizes {
        sender.latency(&plan, size)?;
        sender.throughput(&plan, size)?;
        // Let the receiver drain before the next size so phases do not overlap.
        sender.wait_released();
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("sender done: {} messages", sender.seq);
    Ok(())
}
