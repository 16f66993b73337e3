//! Control-plane benchmark node: the trivial node `adora-bench control-plane` starts by the
//! hundred. It connects to its daemon through the node API; as soon as `init_from_env` returns
//! (the node is registered and released from the start barrier: it is running) it sends one
//! datagram `<node id> <wall-clock ns since the Unix epoch>` to the Unix socket named by
//! `ADORA_BENCH_READY_SOCKET` (a datagram rather than a file: creating a thousand files would
//! cost more than what is measured), then waits for Stop.

use std::{
    os::unix::net::UnixDatagram,
    time::{SystemTime, UNIX_EPOCH},
};

use adora_node_api::{AdoraNode, Event};

/// The runner's socket (unset: the node reports nothing).
const READY_SOCKET_ENV: &str = "ADORA_BENCH_READY_SOCKET";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (node, mut events) = AdoraNode::init_from_env()?;
    let running_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    if let Some(path) = std::env::var_os(READY_SOCKET_ENV) {
        let socket = UnixDatagram::unbound()?;
        socket.send_to(format!("{} {running_at}", node.id()).as_bytes(), path)?;
    }
    while let Some(event) = events.recv() {
        if let Event::Stop = event {
            break;
        }
    }
    Ok(())
}
