//! Timer-driven sender: on every tick sends the next sequence number (u64, little endian) on
//! `counter`, `MESSAGES` times (default 100), then exits. `PAYLOAD_BYTES` pads each message.

use adora_node_api::{AdoraNode, Event, MetadataParameters, Parameter};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let messages = env_usize("MESSAGES", 100) as u64;
    let payload = env_usize("PAYLOAD_BYTES", 8).max(8);
    let (mut node, mut events) = AdoraNode::init_from_env()?;
    let output = "counter".into();
    let mut seq = 0u64;
    while let Some(event) = events.recv() {
        match event {
            Event::Input { id, .. } if id.as_str() == "tick" => {
                let mut sample = node.allocate_sample(payload)?;
                sample[..8].copy_from_slice(&seq.to_le_bytes());
                let mut params = MetadataParameters::new();
                params.insert("seq".into(), Parameter::Integer(seq as i64));
                node.send_sample(&output, params, sample)?;
                seq += 1;
                if seq.is_multiple_of(25) {
                    println!("sent {seq} messages");
                }
                if seq == messages {
                    break;
                }
            }
            Event::Stop => {
                println!("stop requested after {seq} messages");
                break;
            }
            _ => {}
        }
    }
    println!("sender done: {seq} messages sent");
    Ok(())
}
