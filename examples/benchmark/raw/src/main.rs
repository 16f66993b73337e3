//! The raw baseline: the physical limit of the OS primitives Adora's local data plane uses, measured
//! by the same plan, payloads, clock and statistics as the Adora run, without any Adora runtime.
//!
//! Two plain processes share one Unix stream socket:
//!
//! ```text
//! adora-bench-raw receiver SOCKET    # binds SOCKET, prints one report line per size and phase
//! adora-bench-raw sender SOCKET      # connects, runs the plan from the ADORA_BENCH_* environment
//! ```
//!
//! Every message is a 32-byte header (kind, slot, length, send time). Payloads below 4 KiB follow
//! the header inline on the socket; larger ones are written by the sender into one of
//! [`MAX_IN_FLIGHT`] shared-memory slots and the receiver reads them in place, then hands the slot
//! back by clearing the slot's word in a shared `busy` segment (as Adora's receivers clear a
//! sample's holder bit). This is exactly the work Adora must do at least (socket wake-up,
//! shared-memory write and read), minus the protocol.
//!
//! Slots used to come back as a one-byte credit on the socket, which the sender read just before
//! its next message. Reading that byte frees space on the receiver's side of the socket, and the
//! kernel wakes the receiver, asleep on that side, to say so: a wake-up started a few
//! microseconds before the message was written, which made the shared sizes' latency at a 5 ms
//! pace 10–40 µs lower than the primitives allow (`guide/src/performance.md`).

use std::{
    io::{BufReader, Read, Write},
    os::unix::net::{UnixListener, UnixStream},
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use adora_shm::ShmRegion;
use benchmark_common::{write_payload, Pacer, Phase, Plan, Recorder, MAX_IN_FLIGHT, SHM_THRESHOLD};

/// How long the sender retries connecting while the receiver starts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for the receiver to hand a slot back (it died, or hangs).
const SLOT_TIMEOUT: Duration = Duration::from_secs(10);

type Error = Box<dyn std::error::Error>;

const HEADER_LEN: usize = 32;

/// Message kinds (first header byte).
mod kind {
    pub const INLINE: u8 = 0;
    pub const SHARED: u8 = 1;
    pub const BEGIN: u8 = 2;
    pub const END: u8 = 3;
    pub const DONE: u8 = 4;
}

/// `[kind, slot, phase, 0 × 5, a: u64, b: u64, c: u64]` (little endian).
/// Data: a = length, b = send time (ns since the epoch). Begin: a = size, b = warmup, c = sender
/// pid. End: a = size, b = messages sent.
#[derive(Debug, Clone, Copy)]
struct Header {
    kind: u8,
    slot: u8,
    phase: Phase,
    a: u64,
    b: u64,
    c: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = self.kind;
        out[1] = self.slot;
        out[2] = u8::from(self.phase == Phase::Throughput);
        out[8..16].copy_from_slice(&self.a.to_le_bytes());
        out[16..24].copy_from_slice(&self.b.to_le_bytes());
        out[24..32].copy_from_slice(&self.c.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8; HEADER_LEN]) -> Self {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(w)
        };
        Header {
            kind: bytes[0],
            slot: bytes[1],
            phase: if bytes[2] == 1 {
                Phase::Throughput
            } else {
                Phase::Latency
            },
            a: word(8),
            b: word(16),
            c: word(24),
        }
    }
}

fn slot_name(pid: u64, size: usize, slot: usize) -> String {
    format!("adora-bench-raw-{pid}-{size}-{slot}")
}

/// The segment of the slots' busy words: word `i` is 1 from the sender's message in slot `i`
/// until the receiver has read it.
fn busy_name(pid: u64, size: usize) -> String {
    format!("adora-bench-raw-{pid}-{size}-busy")
}

fn busy_word(busy: &ShmRegion, slot: usize) -> Result<&AtomicU64, Error> {
    busy.word(slot * 8).ok_or_else(|| "unknown slot".into())
}

fn now_ns() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("receiver"), Some(socket)) => receiver(Path::new(socket)),
        (Some("sender"), Some(socket)) => sender(Path::new(socket), &Plan::from_env()?),
        _ => Err("usage: adora-bench-raw receiver|sender SOCKET".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Receiver

fn receiver(socket: &Path) -> Result<(), Error> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    let (stream, _) = listener.accept()?;
    let _ = std::fs::remove_file(socket);
    let mut input = BufReader::with_capacity(64 << 10, stream);
    let mut header = [0u8; HEADER_LEN];
    let mut inline = Vec::new();
    let mut slots: Vec<ShmRegion> = Vec::new();
    let mut busy: Option<ShmRegion> = None;
    let mut recorder: Option<Recorder> = None;
    loop {
        input.read_exact(&mut header)?;
        let h = Header::decode(&header);
        match h.kind {
            kind::INLINE => {
                let len = usize::try_from(h.a)?;
                inline.resize(len, 0);
                input.read_exact(&mut inline)?;
                let received = SystemTime::now();
                if let Some(r) = recorder.as_mut() {
                    r.record(UNIX_EPOCH + Duration::from_nanos(h.b), received, &inline);
                }
            }
            kind::SHARED => {
                let received = SystemTime::now();
                let len = usize::try_from(h.a)?;
                let region = slots.get(usize::from(h.slot)).ok_or("unknown slot")?;
                let data = region.as_slice().get(..len).ok_or("slot too small")?;
                if let Some(r) = recorder.as_mut() {
                    r.record(UNIX_EPOCH + Duration::from_nanos(h.b), received, data);
                }
                let busy = busy.as_ref().ok_or("a shared message before its Begin")?;
                busy_word(busy, usize::from(h.slot))?.store(0, Ordering::Release);
            }
            kind::BEGIN => {
                let size = usize::try_from(h.a)?;
                slots.clear();
                busy = None;
                if size >= SHM_THRESHOLD {
                    busy = Some(ShmRegion::open(&busy_name(h.c, size))?);
                    for slot in 0..MAX_IN_FLIGHT {
                        let region = ShmRegion::open(&slot_name(h.c, size, slot))?;
                        // Fault the mapping in now: the baseline measures the steady state, like
                        // Adora's receivers with their cached mappings.
                        std::hint::black_box(
                            region
                                .as_slice()
                                .iter()
                                .step_by(4096)
                                .fold(0u8, |sum, b| sum.wrapping_add(*b)),
                        );
                        slots.push(region);
                    }
                }
                let warmup = usize::try_from(h.b)?;
                recorder = Some(Recorder::new("raw", size, h.phase, warmup));
            }
            kind::END => {
                if let Some(r) = recorder.take() {
                    println!("{}", r.finish(h.b).to_line());
                }
            }
            kind::DONE => return Ok(()),
            other => return Err(format!("unknown message kind {other}").into()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sender

struct Sender {
    stream: UnixStream,
    /// Header + inline payload, reused.
    frame: Vec<u8>,
    /// Shared-memory slots of the current size (empty below the threshold).
    slots: Vec<ShmRegion>,
    /// The slots' busy words (see [`busy_name`]); `None` below the threshold.
    busy: Option<ShmRegion>,
    pid: u64,
    seq: u64,
}

impl Sender {
    fn control(&mut self, kind: u8, phase: Phase, a: u64, b: u64) -> Result<(), Error> {
        let h = Header {
            kind,
            slot: 0,
            phase,
            a,
            b,
            c: self.pid,
        };
        self.stream.write_all(&h.encode())?;
        Ok(())
    }

    /// The first slot the receiver has handed back, marked busy; waits (spinning, so that no
    /// wake-up is added) while all are held. The first one first: a slow stream reuses one warm
    /// slot, as Adora's pool reuses the most recently released region.
    fn take_slot(&self) -> Result<u8, Error> {
        let busy = self.busy.as_ref().ok_or("no shared-memory slots")?;
        let deadline = Instant::now() + SLOT_TIMEOUT;
        loop {
            for slot in 0..self.slots.len() {
                let word = busy_word(busy, slot)?;
                if word.load(Ordering::Acquire) == 0 {
                    word.store(1, Ordering::Relaxed);
                    return Ok(u8::try_from(slot)?);
                }
            }
            spin_until(deadline)?;
        }
    }

    /// Waits (spinning) until the receiver has handed back every slot.
    fn wait_all_slots(&self) -> Result<(), Error> {
        let Some(busy) = &self.busy else {
            return Ok(());
        };
        let deadline = Instant::now() + SLOT_TIMEOUT;
        for slot in 0..self.slots.len() {
            while busy_word(busy, slot)?.load(Ordering::Acquire) != 0 {
                spin_until(deadline)?;
            }
        }
        Ok(())
    }

    /// Writes and sends one message; returns how long writing the payload took.
    fn send(&mut self, size: usize) -> Result<Duration, Error> {
        let started = Instant::now();
        let seq = self.seq;
        self.seq += 1;
        if size < SHM_THRESHOLD {
            self.frame.resize(HEADER_LEN + size, 0);
            write_payload(&mut self.frame[HEADER_LEN..], seq);
            let written = started.elapsed();
            let h = Header {
                kind: kind::INLINE,
                slot: 0,
                phase: Phase::Latency,
                a: size as u64,
                b: now_ns(),
                c: 0,
            };
            self.frame[..HEADER_LEN].copy_from_slice(&h.encode());
            self.stream.write_all(&self.frame)?;
            return Ok(written);
        }
        let slot = self.take_slot()?;
        let region = self
            .slots
            .get_mut(usize::from(slot))
            .ok_or("no such slot")?;
        write_payload(&mut region.as_mut_slice()[..size], seq);
        let written = started.elapsed();
        let h = Header {
            kind: kind::SHARED,
            slot,
            phase: Phase::Latency,
            a: size as u64,
            b: now_ns(),
            c: 0,
        };
        self.stream.write_all(&h.encode())?;
        Ok(written)
    }

    fn run_size(&mut self, plan: &Plan, size: usize) -> Result<(), Error> {
        self.slots.clear();
        self.busy = None;
        if size >= SHM_THRESHOLD {
            for slot in 0..MAX_IN_FLIGHT {
                let mut region = ShmRegion::create(&slot_name(self.pid, size, slot), size)?;
                // Allocate the pages now (steady state, like the regions an Adora pool reuses).
                region.as_mut_slice().fill(0);
                self.slots.push(region);
            }
            self.busy = Some(ShmRegion::create(
                &busy_name(self.pid, size),
                MAX_IN_FLIGHT * 8,
            )?);
        }
        let result = self.phases(plan, size);
        for slot in 0..self.slots.len() {
            let _ = adora_shm::unlink(&slot_name(self.pid, size, slot));
        }
        if self.busy.is_some() {
            let _ = adora_shm::unlink(&busy_name(self.pid, size));
        }
        result
    }

    fn phases(&mut self, plan: &Plan, size: usize) -> Result<(), Error> {
        // Latency: paced; the previous slot is back before the next message (as in Adora's pool,
        // which reuses the most recently released region).
        self.control(kind::BEGIN, Phase::Latency, size as u64, plan.warmup as u64)?;
        let mut pacer = Pacer::new(plan.pace);
        let mut write_time = Duration::ZERO;
        let count = plan.warmup + plan.samples;
        for _ in 0..count {
            pacer.wait(write_time);
            self.wait_all_slots()?;
            write_time = self.send(size)?;
        }
        pacer.wait(write_time);
        self.wait_all_slots()?;
        self.control(kind::END, Phase::Latency, size as u64, count as u64)?;

        self.control(kind::BEGIN, Phase::Throughput, size as u64, 0)?;
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < plan.throughput_time {
            self.send(size)?;
            sent += 1;
        }
        self.wait_all_slots()?;
        self.control(kind::END, Phase::Throughput, size as u64, sent)?;
        std::thread::sleep(Duration::from_millis(20));
        Ok(())
    }
}

/// One turn of a wait for the receiver: gives the processor away if anything else wants it.
fn spin_until(deadline: Instant) -> Result<(), Error> {
    if Instant::now() > deadline {
        return Err(format!("the receiver held its slots for {SLOT_TIMEOUT:?}").into());
    }
    std::thread::yield_now();
    Ok(())
}

fn connect(socket: &Path) -> Result<UnixStream, Error> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match UnixStream::connect(socket) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("cannot connect to {}: {e}", socket.display()).into())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn sender(socket: &Path, plan: &Plan) -> Result<(), Error> {
    let mut sender = Sender {
        stream: connect(socket)?,
        frame: Vec::new(),
        slots: Vec::new(),
        busy: None,
        pid: u64::from(std::process::id()),
        seq: 0,
    };
    for &size in &plan.sizes {
        sender.run_size(plan, size)?;
    }
    sender.control(kind::DONE, Phase::Latency, 0, 0)?;
    Ok(())
}
