//! Benchmark sink node. Times every message on `data` (send timestamp from the metadata → the
//! moment `recv` handed it over), reads and checks every byte, and at each `End` marker on
//! `control` prints one report line (`ADORA_BENCH_REPORT {json}`) for the runner.

use std::time::SystemTime;

use adora_node_api::{AdoraNode, Event};
use benchmark_common::{Marker, Recorder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (_node, mut events) = AdoraNode::init_from_env()?;
    let mut recorder: Option<Recorder> = None;
    let mut stray = 0u64;
    while let Some(event) = events.recv() {
        match event {
            Event::Input { id, metadata, data } if id.as_str() == "data" => {
                let received = SystemTime::now();
                let sent = metadata.timestamp.get_time().to_system_time();
                // Across machines `data` and `control` are separate streams, ordered each on its
                // own but not with each other: a late message of the previous size is stray.
                match recorder.as_mut() {
                    Some(r) if data.len() == r.size() => r.record(sent, received, &data),
                    _ => stray += 1,
                }
            }
            Event::Input { id, data, .. } if id.as_str() == "control" => {
                match Marker::from_bytes(&data)? {
                    Marker::Begin {
                        size,
                        phase,
                        warmup,
                    } => recorder = Some(Recorder::new("adora", size, phase, warmup)),
                    Marker::End { sent, .. } => {
                        if let Some(r) = recorder.take() {
                            println!("{}", r.finish(sent).to_line());
                        }
                    }
                }
            }
            Event::Stop => break,
            Event::Error(e) => eprintln!("error event: {e}"),
            _ => {}
        }
    }
    if stray > 0 {
        eprintln!("{stray} data messages arrived outside a Begin/End pair");
    }
    Ok(())
}
