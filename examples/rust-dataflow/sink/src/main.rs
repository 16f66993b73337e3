//! Sink: checks that sequence numbers arrive in order without gaps and that each square is right.
//! Exits non-zero on the first violation.

use adora_node_api::{AdoraNode, Event};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (_node, mut events) = AdoraNode::init_from_env()?;
    let mut expected = 0u64;
    while let Some(event) = events.recv() {
        match event {
            Event::Input { id, data, .. } if id.as_str() == "squared" => {
                let seq = u64::from_le_bytes(data.get(..8).ok_or("short message")?.try_into()?);
                let square =
                    u64::from_le_bytes(data.get(8..16).ok_or("short message")?.try_into()?);
                if seq != expected {
                    return Err(format!("out of order: expected {expected}, got {seq}").into());
                }
                if square != seq.wrapping_mul(seq) {
                    return Err(format!("wrong square for {seq}: {square}").into());
                }
                expected += 1;
                if expected.is_multiple_of(25) {
                    println!("received {expected} messages in order");
                }
            }
            Event::InputClosed { id } => println!("input `{id}` closed"),
            Event::Stop => break,
            Event::Error(e) => eprintln!("error event: {e}"),
            _ => {}
        }
    }
    println!("sink done: {expected} messages received in order");
    Ok(())
}
