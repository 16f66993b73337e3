//! What the Adora benchmark nodes, the raw baseline and the runner agree on: the plan (sizes,
//! samples, pacing), the payload pattern and its checksum, the phase markers, the latency
//! statistics and the one-line JSON report a receiver prints per size and phase.
//!
//! Both transports are measured the same way: the sender writes the payload in place, takes a
//! wall-clock timestamp and sends; the receiver takes a wall-clock timestamp as soon as the message
//! is handed to it (latency = receive − send), then reads every byte to verify the checksum.

use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// Payload sizes of a full run, in bytes: 0 B to 40 MiB.
pub const SIZES: [usize; 11] = [
    0,
    8,
    64,
    512,
    2 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    400 << 10,
    4 << 20,
    40 << 20,
];

/// Largest size of a `--quick` run (CI).
pub const QUICK_MAX_SIZE: usize = 64 << 10;

/// Payloads of at least this many bytes travel through shared memory, smaller ones inline in the
/// socket message. Mirrors `adora_core::SHM_THRESHOLD` so that the raw baseline uses the same
/// primitive as Adora for every size.
pub const SHM_THRESHOLD: usize = 4096;

/// Most shared-memory samples a sender keeps in flight during the throughput phase; it waits for
/// a receiver to release one before writing the next. The raw baseline has as many slots. Equal to
/// the number of free regions an Adora sample pool keeps (`adora_shm::MAX_FREE_REGIONS`), so the
/// pool reuses regions instead of creating new segments.
pub const MAX_IN_FLIGHT: usize = 16;

/// Prefix of the report lines receivers print on stdout (followed by a JSON [`Report`]).
pub const REPORT_PREFIX: &str = "ADORA_BENCH_REPORT ";

/// Environment variables carrying the [`Plan`] to the processes of a run.
pub mod env {
    /// Comma-separated payload sizes in bytes.
    pub const SIZES: &str = "ADORA_BENCH_SIZES";
    /// Timed latency samples per size.
    pub const SAMPLES: &str = "ADORA_BENCH_SAMPLES";
    /// Untimed messages sent before the latency samples of each size.
    pub const WARMUP: &str = "ADORA_BENCH_WARMUP";
    /// Minimum gap between latency samples, in microseconds.
    pub const PACE_US: &str = "ADORA_BENCH_PACE_US";
    /// Duration of the back-to-back throughput phase per size, in milliseconds.
    pub const THROUGHPUT_MS: &str = "ADORA_BENCH_THROUGHPUT_MS";
    /// Set (to anything) when the sink acknowledges every marker on its `ack` output and the
    /// sender waits for that before going on (see `Marker`).
    pub const ACK: &str = "ADORA_BENCH_ACK";
}

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Payload sizes in bytes, in order.
    pub sizes: Vec<usize>,
    /// Timed latency samples per size.
    pub samples: usize,
    /// Untimed messages sent before the timed ones (mapping, page faults, caches).
    pub warmup: usize,
    /// Minimum gap between two latency samples.
    pub pace: Duration,
    /// Duration of the back-to-back phase per size.
    pub throughput_time: Duration,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            sizes: SIZES.to_vec(),
            samples: 500,
            warmup: 20,
            pace: Duration::from_millis(2),
            throughput_time: Duration::from_secs(1),
        }
    }
}

impl Plan {
    /// A short plan for CI: sizes up to [`QUICK_MAX_SIZE`], few samples.
    pub fn quick() -> Self {
        Plan {
            sizes: SIZES.into_iter().filter(|s| *s <= QUICK_MAX_SIZE).collect(),
            samples: 20,
            warmup: 3,
            pace: Duration::from_millis(1),
            throughput_time: Duration::from_millis(100),
        }
    }

    /// The plan as environment variables (see [`env`]).
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let sizes: Vec<String> = self.sizes.iter().map(usize::to_string).collect();
        vec![
            (env::SIZES, sizes.join(",")),
            (env::SAMPLES, self.samples.to_string()),
            (env::WARMUP, self.warmup.to_string()),
            (env::PACE_US, self.pace.as_micros().to_string()),
            (
                env::THROUGHPUT_MS,
                self.throughput_time.as_millis().to_string(),
            ),
        ]
    }

    /// Reads the plan from the environment; unset variables keep their default.
    pub fn from_env() -> Result<Self, String> {
        fn var<T: std::str::FromStr>(name: &str) -> Result<Option<T>, String> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{name}={v:?} is not a valid number")),
                Err(_) => Ok(None),
            }
        }
        let mut plan = Plan::default();
        if let Ok(sizes) = std::env::var(env::SIZES) {
            plan.sizes = parse_sizes(&sizes)?;
        }
        if let Some(n) = var(env::SAMPLES)? {
            plan.samples = n;
        }
        if let Some(n) = var(env::WARMUP)? {
            plan.warmup = n;
        }
        if let Some(us) = var(env::PACE_US)? {
            plan.pace = Duration::from_micros(us);
        }
        if let Some(ms) = var(env::THROUGHPUT_MS)? {
            plan.throughput_time = Duration::from_millis(ms);
        }
        Ok(plan)
    }
}

/// Parses a comma-separated list of sizes; each is bytes, or a number with `K`/`KiB`/`M`/`MiB`.
pub fn parse_sizes(list: &str) -> Result<Vec<usize>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_size)
        .collect()
}

fn parse_size(s: &str) -> Result<usize, String> {
    let upper = s.to_ascii_uppercase();
    let (digits, unit) = match upper.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => upper.split_at(i),
        None => (upper.as_str(), ""),
    };
    let n: usize = digits.parse().map_err(|_| format!("`{s}` is not a size"))?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        _ => return Err(format!("`{s}` has an unknown unit")),
    };
    Ok(n * factor)
}

/// `4 KiB`, `40 MiB`, `512 B`.
pub fn format_size(size: usize) -> String {
    if size >= 1 << 20 && size & ((1 << 20) - 1) == 0 {
        format!("{} MiB", size >> 20)
    } else if size >= 1 << 10 && size & ((1 << 10) - 1) == 0 {
        format!("{} KiB", size >> 10)
    } else {
        format!("{size} B")
    }
}

/// The two measurements made for every size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Paced messages; every one is timed.
    Latency,
    /// Back-to-back messages; delivered messages per second.
    Throughput,
}

/// Sent by the sender around the messages of one size and phase (Adora: on the `control` output,
/// JSON). On one machine messages are delivered in send order, so the receiver sees `Begin`, the
/// data, then `End`. Across machines `data` and `control` are two streams, each in order but not
/// with each other: `End` may overtake the last data messages. There the sink waits after `End`
/// until every message is accounted for (received or counted dropped) or the stream went quiet,
/// and then acknowledges it on `ack` (it acknowledges `Begin` at once); the sender goes on only
/// after each acknowledgement ([`env::ACK`]), so a backlog never spills into the next phase and
/// no data overtakes its `Begin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Marker {
    /// The next data messages belong to this size and phase; the first `warmup` are not timed.
    Begin {
        /// Payload size.
        size: usize,
        /// Phase.
        phase: Phase,
        /// Untimed messages at the start.
        warmup: usize,
    },
    /// All messages of this size and phase were sent.
    End {
        /// Payload size.
        size: usize,
        /// Phase.
        phase: Phase,
        /// Number of data messages sent (warm-up included).
        sent: u64,
    },
}

impl Marker {
    /// JSON bytes, as sent on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Marker always serializes to JSON")
    }

    /// Parses [`Marker::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Byte repeated through a payload of sequence number `seq`.
fn pattern(seq: u64) -> u8 {
    (seq.wrapping_mul(31) as u8) ^ 0x5a
}

/// Byte filling payloads shorter than 8 bytes (too short to carry a sequence number).
const SHORT_PATTERN: u8 = 0xa5;

/// Writes message `seq` into `buf`: the sequence number (little endian) in the first 8 bytes, then
/// a byte derived from it repeated to the end. Shorter buffers get a fixed byte.
pub fn write_payload(buf: &mut [u8], seq: u64) {
    if buf.len() < 8 {
        buf.fill(SHORT_PATTERN);
        return;
    }
    let (head, rest) = buf.split_at_mut(8);
    head.copy_from_slice(&seq.to_le_bytes());
    rest.fill(pattern(seq));
}

/// A payload whose content is not what [`write_payload`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPayload;

/// Reads every byte of a payload written by [`write_payload`] and checks it. Returns the sequence
/// number (`None` for payloads shorter than 8 bytes) or `Err` when the content is wrong.
pub fn check_payload(data: &[u8]) -> Result<Option<u64>, BadPayload> {
    let sum = |bytes: &[u8]| bytes.iter().map(|b| u64::from(*b)).sum::<u64>();
    if data.len() < 8 {
        let ok = sum(data) == data.len() as u64 * u64::from(SHORT_PATTERN);
        return if ok { Ok(None) } else { Err(BadPayload) };
    }
    let (head, rest) = data.split_at(8);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(head);
    let seq = u64::from_le_bytes(seq);
    if sum(rest) == rest.len() as u64 * u64::from(pattern(seq)) {
        Ok(Some(seq))
    } else {
        Err(BadPayload)
    }
}

/// Spaces latency samples: at least the plan's pace apart, and at least three times the time the
/// sender needed to write the previous payload, so that the receiver has finished reading it and a
/// sample never waits behind the previous one.
#[derive(Debug)]
pub struct Pacer {
    pace: Duration,
    next: Instant,
}

impl Pacer {
    /// A pacer whose first sample goes out at once.
    pub fn new(pace: Duration) -> Self {
        Pacer {
            pace,
            next: Instant::now(),
        }
    }

    /// Sleeps until the next sample is due; `write_time` is how long the previous payload took to
    /// write.
    pub fn wait(&mut self, write_time: Duration) {
        let now = Instant::now();
        if self.next > now {
            std::thread::sleep(self.next - now);
        }
        self.next = Instant::now() + self.pace.max(write_time * 3);
    }
}

/// Latency distribution of one size, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Timed samples.
    pub samples: usize,
    /// Minimum.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Maximum.
    pub max: u64,
}

impl Summary {
    /// Nearest-rank percentiles of `values`; `None` when empty.
    pub fn of(mut values: Vec<u64>) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let rank = |p: f64| {
            let i = (p * values.len() as f64).ceil() as usize;
            values[i.clamp(1, values.len()) - 1]
        };
        Some(Summary {
            samples: values.len(),
            min: values[0],
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: values[values.len() - 1],
        })
    }
}

/// What a receiver measured for one size and phase (one JSON line after [`REPORT_PREFIX`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `adora` or `raw`.
    pub transport: String,
    /// Payload size.
    pub size: usize,
    /// Phase.
    pub phase: Phase,
    /// Data messages the sender sent.
    pub sent: u64,
    /// Data messages received.
    pub received: u64,
    /// Received messages whose content or order was wrong.
    pub bad: u64,
    /// Latency phase: the distribution of the timed samples.
    pub latency_ns: Option<Summary>,
    /// Throughput phase: delivered messages per second.
    pub msgs_per_s: Option<f64>,
    /// Throughput phase: delivered payload MiB per second.
    pub mib_per_s: Option<f64>,
}

impl Report {
    /// The report line (prefix + JSON).
    pub fn to_line(&self) -> String {
        let json = serde_json::to_string(self).expect("a Report always serializes to JSON");
        format!("{REPORT_PREFIX}{json}")
    }

    /// Parses a line containing [`REPORT_PREFIX`] anywhere (e.g. behind a node-name prefix).
    pub fn from_line(line: &str) -> Option<Result<Report, serde_json::Error>> {
        let (_, json) = line.split_once(REPORT_PREFIX)?;
        Some(serde_json::from_str(json))
    }
}

/// Receiver-side bookkeeping of one size and phase.
#[derive(Debug)]
pub struct Recorder {
    transport: &'static str,
    size: usize,
    phase: Phase,
    warmup: usize,
    latencies: Vec<u64>,
    received: u64,
    bad: u64,
    last_seq: Option<u64>,
    first_sent: Option<SystemTime>,
    last_received: Option<SystemTime>,
}

impl Recorder {
    /// Starts recording after a `Begin` marker.
    pub fn new(transport: &'static str, size: usize, phase: Phase, warmup: usize) -> Self {
        Recorder {
            transport,
            size,
            phase,
            warmup,
            latencies: Vec::new(),
            received: 0,
            bad: 0,
            last_seq: None,
            first_sent: None,
            last_received: None,
        }
    }

    /// The payload size this recorder measures.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Messages recorded so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Records one message: `sent` is the sender's timestamp, `received` the time it was handed to
    /// the receiver. Reads and checks the whole payload.
    pub fn record(&mut self, sent: SystemTime, received: SystemTime, data: &[u8]) {
        let index = self.received;
        self.received += 1;
        self.first_sent.get_or_insert(sent);
        self.last_received = Some(received);
        let in_order = match check_payload(data) {
            Ok(Some(seq)) => {
                let ok = self.last_seq.is_none_or(|last| seq > last);
                self.last_seq = Some(seq);
                ok
            }
            Ok(None) => true,
            Err(BadPayload) => false,
        };
        if !in_order || data.len() != self.size {
            self.bad += 1;
        }
        if self.phase == Phase::Latency && index >= self.warmup as u64 {
            let ns = received
                .duration_since(sent)
                .unwrap_or(Duration::ZERO)
                .as_nanos();
            self.latencies.push(u64::try_from(ns).unwrap_or(u64::MAX));
        }
    }

    /// The report, after the `End` marker said `sent` messages were sent.
    pub fn finish(self, sent: u64) -> Report {
        let (msgs_per_s, mib_per_s) = match (self.phase, self.first_sent, self.last_received) {
            (Phase::Throughput, Some(first), Some(last)) => {
                let secs = last
                    .duration_since(first)
                    .unwrap_or(Duration::ZERO)
                    .as_secs_f64()
                    .max(1e-9);
                let rate = self.received as f64 / secs;
                (
                    Some(rate),
                    Some(rate * self.size as f64 / f64::from(1 << 20)),
                )
            }
            _ => (None, None),
        };
        Report {
            transport: self.transport.to_owned(),
            size: self.size,
            phase: self.phase,
            sent,
            received: self.received,
            bad: self.bad,
            latency_ns: Summary::of(self.latencies),
            msgs_per_s,
            mib_per_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_corruption_is_detected() {
        for size in [0, 3, 8, 9, 4096] {
            let mut buf = vec![0u8; size];
            write_payload(&mut buf, 77);
            let expected = if size >= 8 { Some(77) } else { None };
            assert_eq!(check_payload(&buf), Ok(expected), "size {size}");
            if size > 8 {
                buf[size - 1] ^= 1;
                assert_eq!(check_payload(&buf), Err(BadPayload), "size {size}");
            }
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let s = Summary::of((1..=100).collect()).expect("non-empty");
        assert_eq!((s.min, s.p50, s.p90, s.p99, s.max), (1, 50, 90, 99, 100));
        assert_eq!(Summary::of(vec![]), None);
        let one = Summary::of(vec![7]).expect("non-empty");
        assert_eq!((one.p50, one.p99), (7, 7));
    }

    #[test]
    fn plan_survives_the_environment_encoding() {
        let plan = Plan::quick();
        let env = plan.to_env();
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(
            parse_sizes(&get(env::SIZES).expect("sizes")),
            Ok(plan.sizes.clone())
        );
        assert_eq!(parse_sizes("4K, 40MiB ,8"), Ok(vec![4096, 40 << 20, 8]));
        assert!(parse_sizes("4X").is_err());
    }

    #[test]
    fn report_lines_parse_behind_a_prefix() {
        let report = Recorder::new("raw", 8, Phase::Latency, 0).finish(0);
        let line = format!("sink | {}", report.to_line());
        let back = Report::from_line(&line).expect("has prefix").expect("json");
        assert_eq!(back, report);
        assert!(Report::from_line("sink | hello").is_none());
    }
}
