//! Transformer: forwards each sequence number from `counter` on `squared`, followed by its square.

use adora_node_api::{AdoraNode, Event};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut node, mut events) = AdoraNode::init_from_env()?;
    let output = "squared".into();
    let mut forwarded = 0u64;
    while let Some(event) = events.recv() {
        match event {
            Event::Input { id, metadata, data } if id.as_str() == "counter" => {
                let seq = u64::from_le_bytes(data.get(..8).ok_or("short message")?.try_into()?);
                let mut out = seq.to_le_bytes().to_vec();
                out.extend_from_slice(&seq.wrapping_mul(seq).to_le_bytes());
                node.send_output(&output, metadata.parameters, &out)?;
                forwarded += 1;
            }
            Event::InputClosed { id } => println!("input `{id}` closed"),
            Event::Stop => break,
            _ => {}
        }
    }
    println!("transformer done: {forwarded} messages forwarded");
    Ok(())
}
