//! Benchmark sink node. Times every message on `data` (send timestamp from the metadata → the
//! moment `recv` handed it over), reads and checks every byte, and at each `End` marker on
//! `control` prints one report line (`ADORA_BENCH_REPORT {json}`) for the runner. With
//! `ADORA_BENCH_ACK` set it first waits for the phase's last messages, then acknowledges
//! every marker on its `ack` output (see `benchmark_common::Marker`).

use std::time::{Duration, SystemTime};

use adora_node_api::{AdoraNode, DataId, Event, EventStream, MetadataParameters};
use benchmark_common::{env, Marker, Recorder};

/// After `End`, how long the data stream may stay silent before the missing messages are taken
/// as lost (only when they are neither received nor counted dropped).
const QUIET: Duration = Duration::from_millis(500);

type Error = Box<dyn std::error::Error>;

struct Sink {
    node: AdoraNode,
    events: EventStream,
    data: DataId,
    acked: bool,
    recorder: Option<Recorder>,
    /// The daemon's drop count of `data` when the current phase began.
    drops_at_begin: u64,
    stray: u64,
}

impl Sink {
    fn on_data(&mut self, metadata: &adora_node_api::Metadata, data: &[u8]) {
        let received = SystemTime::now();
        let sent = metadata.timestamp.get_time().to_system_time();
        match self.recorder.as_mut() {
            Some(r) if data.len() == r.size() => r.record(sent, received, data),
            _ => self.stray += 1,
        }
    }

    /// With acknowledgements: waits until the phase's `sent` messages are received or counted
    /// dropped (or the stream went quiet), so that none of them arrives in the next phase.
    fn drain(&mut self, sent: u64) -> Result<(), Error> {
        if !self.acked {
            return Ok(());
        }
        loop {
            let accounted = self.recorder.as_ref().map_or(sent, Recorder::received)
                + (self.events.drop_count(&self.data) - self.drops_at_begin);
            if accounted >= sent {
                return Ok(());
            }
            match self.events.recv_timeout(QUIET) {
                Some(Event::Input { id, metadata, data }) if id == self.data => {
                    self.on_data(&metadata, &data)
                }
                Some(Event::Stop) | None => return Ok(()),
                Some(_) => {}
            }
        }
    }

    fn on_marker(&mut self, marker: Marker) -> Result<(), Error> {
        match marker {
            Marker::Begin {
                size,
                phase,
                warmup,
            } => {
                self.drops_at_begin = self.events.drop_count(&self.data);
                self.recorder = Some(Recorder::new("adora", size, phase, warmup));
            }
            Marker::End { sent, .. } => {
                self.drain(sent)?;
                if let Some(r) = self.recorder.take() {
                    println!("{}", r.finish(sent).to_line());
                }
            }
        }
        if self.acked {
            self.node
                .send_output(&"ack".into(), MetadataParameters::new(), b"")?;
        }
        Ok(())
    }
}

fn main() -> Result<(), Error> {
    let (node, events) = AdoraNode::init_from_env()?;
    let mut sink = Sink {
        node,
        events,
        data: "data".into(),
        acked: std::env::var_os(env::ACK).is_some(),
        recorder: None,
        drops_at_begin: 0,
        stray: 0,
    };
    while let Some(event) = sink.events.recv() {
        match event {
            Event::Input { id, metadata, data } if id == sink.data => {
                sink.on_data(&metadata, &data)
            }
            Event::Input { id, data, .. } if id.as_str() == "control" => {
                sink.on_marker(Marker::from_bytes(&data)?)?
            }
            Event::Stop => break,
            Event::Error(e) => eprintln!("error event: {e}"),
            _ => {}
        }
    }
    if sink.stray > 0 {
        eprintln!(
            "{} data messages arrived outside a Begin/End pair",
            sink.stray
        );
    }
    Ok(())
}
