//! Control-plane benchmark node: the trivial node `adora-bench control-plane` starts by the
//! hundred. It connects to its daemon through the node API; as soon as `init_from_env` returns
//! (the node is registered and released from the start barrier: it is running) it writes the
//! wall-clock time in nanoseconds since the Unix epoch to `$ADORA_BENCH_READY_DIR/<node id>`,
//! then waits for Stop.

use std::{
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use adora_node_api::{AdoraNode, Event};

/// Directory the node writes its ready file into (unset: it writes nothing).
const READY_DIR_ENV: &str = "ADORA_BENCH_READY_DIR";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (node, mut events) = AdoraNode::init_from_env()?;
    let running_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    if let Some(dir) = std::env::var_os(READY_DIR_ENV) {
        let dir = PathBuf::from(dir);
        // Written under a temporary name and renamed, so the runner never reads a partial file.
        let tmp = dir.join(format!(".{}", node.id()));
        std::fs::write(&tmp, running_at.to_string())?;
        std::fs::rename(&tmp, dir.join(node.id().as_str()))?;
    }
    while let Some(event) = events.recv() {
        if let Event::Stop = event {
            break;
        }
    }
    Ok(())
}
