//! The two ends of the chaos soak's chain (`tools/chaos`): a source whose messages name the
//! instance that sent them, and a sink that records what arrived. Both write their records to
//! files in `CHAOS_DIR` (every test host shares the file system), one line per message, written
//! at once so that a `kill -9` loses at most the line of the message being handled.
//!
//! - `chaos-source`: on every `tick` sends `[instance: u64 LE][seq: u64 LE]` padded to
//!   `PAYLOAD_BYTES` (default 64, at least 16) with the sequence number's low byte, and appends
//!   `<seq> <unix ms>` to `sent-<instance>.txt` once the send returned. A restarted source is a
//!   new instance (a new random id) counting from 0 again.
//! - `chaos-sink`: appends `<source instance> <seq> <unix ms>` to `recv-<own instance>.txt` for
//!   every message of input `in`, `corrupt <source instance> <seq> ...` (where and how much
//!   differs) for a bad payload, and
//!   `drops <n>` whenever its input's drop count (full queue, or missing between machines)
//!   changed. It judges nothing: the soak reads the files.

use std::{
    fs::File,
    io::Write,
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use adora_node_api::{AdoraNode, DataId, Event, MetadataParameters};

use crate::{env_u64, Result};

/// Header bytes: the instance id and the sequence number.
const HEADER: usize = 16;

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// A random, non-zero instance id (time and pid mixed; unique enough for one soak).
fn instance_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    // splitmix64 finaliser: nearby inputs give unrelated ids.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)).max(1)
}

/// The record file `<prefix>-<instance>.txt` in `CHAOS_DIR`, opened for appending.
fn record_file(prefix: &str, instance: u64) -> Result<File> {
    let dir = PathBuf::from(std::env::var("CHAOS_DIR").map_err(|_| "CHAOS_DIR is not set")?);
    let path = dir.join(format!("{prefix}-{instance:016x}.txt"));
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?)
}

/// `chaos-source`: see the module docs.
pub fn source() -> Result {
    let (mut node, mut events) = AdoraNode::init_from_env()?;
    let output = "data".into();
    let len = (env_u64("PAYLOAD_BYTES", 64) as usize).max(HEADER);
    let instance = instance_id();
    let mut record = record_file("sent", instance)?;
    let mut seq = 0u64;
    while let Some(event) = events.recv() {
        match event {
            Event::Input { .. } => {
                let mut payload = vec![seq as u8; len];
                payload[..8].copy_from_slice(&instance.to_le_bytes());
                payload[8..HEADER].copy_from_slice(&seq.to_le_bytes());
                node.send_output(&output, MetadataParameters::new(), &payload)?;
                record.write_all(format!("{seq} {}\n", unix_ms()).as_bytes())?;
                seq += 1;
            }
            Event::Stop => break,
            _ => {}
        }
    }
    println!("chaos-source {instance:016x} sent={seq}");
    Ok(())
}

/// `chaos-sink`: see the module docs.
pub fn sink() -> Result {
    let (_node, mut events) = AdoraNode::init_from_env()?;
    let instance = instance_id();
    let mut record = record_file("recv", instance)?;
    let input: DataId = "in".into();
    let mut drops = 0u64;
    let mut received = 0u64;
    while let Some(event) = events.recv() {
        match event {
            Event::Input { data, .. } => {
                let line = match data.get(..HEADER) {
                    Some(header) => {
                        let source = u64::from_le_bytes(header[..8].try_into()?);
                        let seq = u64::from_le_bytes(header[8..].try_into()?);
                        let body = &data[HEADER..];
                        match body.iter().position(|b| *b != seq as u8) {
                            None => format!("{source:016x} {seq} {}\n", unix_ms()),
                            Some(at) => format!(
                                "corrupt {source:016x} {seq} len={} first_bad_offset={} byte={} bad_bytes={} t={}\n",
                                data.len(),
                                at + HEADER,
                                body[at],
                                body.iter().filter(|b| **b != seq as u8).count(),
                                unix_ms()
                            ),
                        }
                    }
                    None => format!("corrupt short {}\n", data.len()),
                };
                record.write_all(line.as_bytes())?;
                received += 1;
            }
            Event::Stop => break,
            _ => {}
        }
        let now = events.drop_count(&input);
        if now != drops {
            drops = now;
            record.write_all(format!("drops {drops}\n").as_bytes())?;
        }
    }
    println!("chaos-sink {instance:016x} received={received} drops={drops}");
    Ok(())
}
