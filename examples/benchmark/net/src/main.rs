//! `adora-bench-net`: the network baselines of `adora-bench --placement two-daemons|zenoh`. The
//! same plan, payloads, clock and statistics as the Adora run, between two plain processes:
//!
//! ```text
//! adora-bench-net tcp-receiver IP:PORT                    # plain TCP: the network's own cost
//! adora-bench-net tcp-sender IP:PORT
//! adora-bench-net zenoh-receiver tcp/IP:PORT              # plain Zenoh, configured like the daemons
//! adora-bench-net zenoh-sender tcp/IP:PORT tcp/OWN_IP:0
//! ```
//!
//! Receivers print one report line per size and phase (`ADORA_BENCH_REPORT {json}`); senders run
//! the plan from the `ADORA_BENCH_*` environment. Every message is a 24-byte header (kind, phase,
//! two words) and the payload: on TCP one frame on the stream, on Zenoh the payload with the
//! header as attachment, on one key (one ordered stream). The receiver acknowledges every marker
//! and the sender waits for it, like the Adora sink (`benchmark_common::Marker`).
//!
//! The Zenoh baseline opens its sessions with the daemons' own configuration and publishes with
//! their options (`adora_daemon::zenoh_setup`): peer mode, explicit endpoints, plain TCP (the
//! daemons' `--insecure-zenoh`), reliable, blocking on congestion. Nothing of Adora runs.

use std::{
    io::{BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use adora_daemon::zenoh_setup;
use benchmark_common::{write_payload, Pacer, Phase, Plan, Recorder};
use zenoh::{sample::Locality, Wait};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long a sender retries connecting, and waits for its peer to subscribe or acknowledge.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// Zenoh keys of the baseline.
const DATA_KEY: &str = "adora-bench/data";
const ACK_KEY: &str = "adora-bench/ack";

const HEADER_LEN: usize = 24;

/// Message kinds (first header byte).
mod kind {
    pub const DATA: u8 = 0;
    pub const BEGIN: u8 = 1;
    pub const END: u8 = 2;
    pub const DONE: u8 = 3;
}

/// `[kind, phase, 0 × 6, a: u64, b: u64]` (little endian). Data: a = length, b = send time (ns
/// since the epoch). Begin: a = size, b = warm-up. End: a = size, b = messages sent.
#[derive(Debug, Clone, Copy)]
struct Header {
    kind: u8,
    phase: Phase,
    a: u64,
    b: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = self.kind;
        out[1] = u8::from(self.phase == Phase::Throughput);
        out[8..16].copy_from_slice(&self.a.to_le_bytes());
        out[16..24].copy_from_slice(&self.b.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() != HEADER_LEN {
            return Err(format!("a header of {} bytes", bytes.len()).into());
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(w)
        };
        Ok(Header {
            kind: bytes[0],
            phase: if bytes[1] == 1 {
                Phase::Throughput
            } else {
                Phase::Latency
            },
            a: word(8),
            b: word(16),
        })
    }
}

fn now_ns() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

/// The sending side of a transport.
trait Outgoing {
    /// Sends one message.
    fn send(&mut self, header: Header, payload: &[u8]) -> Result<(), Error>;
    /// Waits for the receiver's acknowledgement of the last marker.
    fn wait_ack(&mut self) -> Result<(), Error>;
}

/// The receiving side of a transport.
trait Incoming {
    /// The next message (the payload stays valid until the next call).
    fn next(&mut self) -> Result<(Header, &[u8]), Error>;
    /// Acknowledges the last marker.
    fn ack(&mut self) -> Result<(), Error>;
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match (arg(1), arg(2), arg(3)) {
        (Some("tcp-receiver"), Some(addr), None) => receive(&mut tcp::receiver(addr)?),
        (Some("tcp-sender"), Some(addr), None) => send(&mut tcp::sender(addr)?, &plan()?),
        (Some("zenoh-receiver"), Some(listen), None) => receive(&mut zenoh_link::receiver(listen)?),
        (Some("zenoh-sender"), Some(peer), Some(listen)) => {
            send(&mut zenoh_link::sender(peer, listen)?, &plan()?)
        }
        _ => Err(
            "usage: adora-bench-net tcp-receiver IP:PORT | tcp-sender IP:PORT | \
                  zenoh-receiver tcp/IP:PORT | zenoh-sender tcp/PEER:PORT tcp/OWN_IP:0"
                .into(),
        ),
    }
}

fn plan() -> Result<Plan, Error> {
    Ok(Plan::from_env()?)
}

/// Runs the plan: per size a paced latency phase and a back-to-back throughput phase, each
/// between acknowledged `Begin` and `End` markers.
fn send(link: &mut impl Outgoing, plan: &Plan) -> Result<(), Error> {
    let mut buf = Vec::new();
    let mut seq = 0u64;
    let marker = |link: &mut dyn Outgoing, kind, phase, a, b| -> Result<(), Error> {
        link.send(Header { kind, phase, a, b }, &[])?;
        link.wait_ack()
    };
    for &size in &plan.sizes {
        buf.resize(size, 0);
        let mut data = |link: &mut dyn Outgoing, buf: &mut Vec<u8>| -> Result<Duration, Error> {
            let started = Instant::now();
            write_payload(buf, seq);
            seq += 1;
            let written = started.elapsed();
            let header = Header {
                kind: kind::DATA,
                phase: Phase::Latency,
                a: buf.len() as u64,
                b: now_ns(),
            };
            link.send(header, buf)?;
            Ok(written)
        };
        let count = plan.warmup + plan.samples;
        marker(
            link,
            kind::BEGIN,
            Phase::Latency,
            size as u64,
            plan.warmup as u64,
        )?;
        let mut pacer = Pacer::new(plan.pace);
        let mut write_time = Duration::ZERO;
        for _ in 0..count {
            pacer.wait(write_time);
            write_time = data(link, &mut buf)?;
        }
        pacer.wait(write_time);
        marker(link, kind::END, Phase::Latency, size as u64, count as u64)?;

        marker(link, kind::BEGIN, Phase::Throughput, size as u64, 0)?;
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < plan.throughput_time {
            data(link, &mut buf)?;
            sent += 1;
        }
        marker(link, kind::END, Phase::Throughput, size as u64, sent)?;
    }
    link.send(
        Header {
            kind: kind::DONE,
            phase: Phase::Latency,
            a: 0,
            b: 0,
        },
        &[],
    )
}

/// Records every phase and prints its report, until `Done`.
fn receive(link: &mut impl Incoming) -> Result<(), Error> {
    let mut recorder: Option<Recorder> = None;
    loop {
        let (h, payload) = link.next()?;
        let received = SystemTime::now();
        match h.kind {
            kind::DATA => {
                if let Some(r) = recorder.as_mut() {
                    r.record(UNIX_EPOCH + Duration::from_nanos(h.b), received, payload);
                }
            }
            kind::BEGIN => {
                let size = usize::try_from(h.a)?;
                let warmup = usize::try_from(h.b)?;
                recorder = Some(Recorder::new("net", size, h.phase, warmup));
                link.ack()?;
            }
            kind::END => {
                if let Some(r) = recorder.take() {
                    println!("{}", r.finish(h.b).to_line());
                }
                link.ack()?;
            }
            kind::DONE => return Ok(()),
            other => return Err(format!("unknown message kind {other}").into()),
        }
    }
}

/// Plain TCP (`TCP_NODELAY`): one stream, frames of header + payload; acknowledgements are one
/// byte back on the same stream.
mod tcp {
    use super::*;

    pub struct Sender {
        stream: TcpStream,
        frame: Vec<u8>,
    }

    pub fn sender(addr: &str) -> Result<Sender, Error> {
        let deadline = Instant::now() + PEER_TIMEOUT;
        let stream = loop {
            match TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("cannot connect to {addr}: {e}").into())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        stream.set_nodelay(true)?;
        Ok(Sender {
            stream,
            frame: Vec::new(),
        })
    }

    impl Outgoing for Sender {
        fn send(&mut self, header: Header, payload: &[u8]) -> Result<(), Error> {
            self.frame.clear();
            self.frame.extend_from_slice(&header.encode());
            self.frame.extend_from_slice(payload);
            self.stream.write_all(&self.frame)?;
            Ok(())
        }

        fn wait_ack(&mut self) -> Result<(), Error> {
            let mut byte = [0u8; 1];
            self.stream.read_exact(&mut byte)?;
            Ok(())
        }
    }

    pub struct Receiver {
        input: BufReader<TcpStream>,
        acks: TcpStream,
        payload: Vec<u8>,
    }

    pub fn receiver(addr: &str) -> Result<Receiver, Error> {
        let listener = TcpListener::bind(addr)?;
        let (stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        Ok(Receiver {
            acks: stream.try_clone()?,
            input: BufReader::with_capacity(256 << 10, stream),
            payload: Vec::new(),
        })
    }

    impl Incoming for Receiver {
        fn next(&mut self) -> Result<(Header, &[u8]), Error> {
            let mut header = [0u8; HEADER_LEN];
            self.input.read_exact(&mut header)?;
            let h = Header::decode(&header)?;
            let len = if h.kind == kind::DATA {
                usize::try_from(h.a)?
            } else {
                0
            };
            self.payload.resize(len, 0);
            self.input.read_exact(&mut self.payload)?;
            Ok((h, &self.payload))
        }

        fn ack(&mut self) -> Result<(), Error> {
            self.acks.write_all(&[1])?;
            Ok(())
        }
    }
}

/// Plain Zenoh with the daemons' configuration and publication options.
mod zenoh_link {
    use super::*;

    use std::borrow::Cow;

    use zenoh::{handlers::FifoChannelHandler, pubsub::Subscriber, sample::Sample};

    fn open(listen: &str, peers: &[String]) -> Result<zenoh::Session, Error> {
        let config = zenoh_setup::session_config(listen, peers, None)?;
        zenoh::open(config).wait()
    }

    fn publisher(
        session: &zenoh::Session,
        key: &'static str,
    ) -> Result<zenoh::pubsub::Publisher<'static>, Error> {
        session
            .declare_publisher(key)
            .allowed_destination(Locality::Remote)
            .reliability(zenoh_setup::RELIABILITY)
            .congestion_control(zenoh_setup::CONGESTION)
            .express(zenoh_setup::EXPRESS)
            .wait()
    }

    fn subscriber(
        session: &zenoh::Session,
        key: &'static str,
    ) -> Result<Subscriber<FifoChannelHandler<Sample>>, Error> {
        session
            .declare_subscriber(key)
            .allowed_origin(Locality::Remote)
            .wait()
    }

    /// Waits until a subscriber on the other side matches `publisher`.
    fn wait_matched(publisher: &zenoh::pubsub::Publisher<'_>, what: &str) -> Result<(), Error> {
        let deadline = Instant::now() + PEER_TIMEOUT;
        while !publisher.matching_status().wait()?.matching() {
            if Instant::now() > deadline {
                return Err(format!("no subscriber for {what} after 30 s").into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    pub struct Sender {
        data: zenoh::pubsub::Publisher<'static>,
        acks: Subscriber<FifoChannelHandler<Sample>>,
        _session: zenoh::Session,
    }

    pub fn sender(peer: &str, listen: &str) -> Result<Sender, Error> {
        let session = open(listen, &[peer.to_owned()])?;
        let acks = subscriber(&session, ACK_KEY)?;
        let data = publisher(&session, DATA_KEY)?;
        wait_matched(&data, "the data")?;
        Ok(Sender {
            data,
            acks,
            _session: session,
        })
    }

    impl Outgoing for Sender {
        fn send(&mut self, header: Header, payload: &[u8]) -> Result<(), Error> {
            self.data
                .put(payload.to_vec())
                .attachment(header.encode().to_vec())
                .wait()?;
            Ok(())
        }

        fn wait_ack(&mut self) -> Result<(), Error> {
            match self.acks.recv_timeout(PEER_TIMEOUT) {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err("no acknowledgement from the receiver in 30 s".into()),
                Err(e) => Err(format!("the receiver is gone: {e}").into()),
            }
        }
    }

    pub struct Receiver {
        data: Subscriber<FifoChannelHandler<Sample>>,
        acks: zenoh::pubsub::Publisher<'static>,
        acks_matched: bool,
        sample: Option<Sample>,
        /// A payload Zenoh delivered in several slices (fragmented), made contiguous.
        joined: Vec<u8>,
        _session: zenoh::Session,
    }

    pub fn receiver(listen: &str) -> Result<Receiver, Error> {
        let session = open(listen, &[])?;
        let data = subscriber(&session, DATA_KEY)?;
        let acks = publisher(&session, ACK_KEY)?;
        Ok(Receiver {
            data,
            acks,
            acks_matched: false,
            sample: None,
            joined: Vec::new(),
            _session: session,
        })
    }

    impl Incoming for Receiver {
        fn next(&mut self) -> Result<(Header, &[u8]), Error> {
            let sample = self
                .data
                .recv()
                .map_err(|e| format!("the sender is gone: {e}"))?;
            let header = match sample.attachment() {
                Some(a) => Header::decode(&a.to_bytes())?,
                None => return Err("a sample without a header".into()),
            };
            let contiguous = matches!(sample.payload().to_bytes(), Cow::Borrowed(_));
            if !contiguous {
                self.joined = sample.payload().to_bytes().into_owned();
            }
            let sample = self.sample.insert(sample);
            if contiguous {
                if let Cow::Borrowed(bytes) = sample.payload().to_bytes() {
                    return Ok((header, bytes));
                }
            }
            Ok((header, &self.joined))
        }

        fn ack(&mut self) -> Result<(), Error> {
            if !self.acks_matched {
                wait_matched(&self.acks, "the acknowledgements")?;
                self.acks_matched = true;
            }
            self.acks.put(vec![1u8]).wait()?;
            Ok(())
        }
    }
}
