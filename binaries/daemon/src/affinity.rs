//! A node's `cpu_affinity`: the cores it may run on, set in the child process before it executes
//! the node (so every thread the node starts inherits them).
//!
//! Cores this daemon may not use (beyond the machine's, or outside the daemon's own CPU set) are
//! skipped with a warning; when none is left the node runs without an affinity, with a warning.

use adora_core::NodeId;
use nix::{sched::CpuSet, unistd::Pid};

/// The CPU set for `wanted`, restricted to the cores this daemon may use; `None` when no core is
/// left (each problem is logged).
pub(crate) fn cpu_set(node: &NodeId, wanted: &[usize]) -> Option<CpuSet> {
    let available = match nix::sched::sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => set,
        Err(e) => {
            tracing::warn!(
                "node `{node}`: cpu_affinity ignored: cannot read this daemon's CPU set: {e}"
            );
            return None;
        }
    };
    let usable = |core: usize| available.is_set(core).unwrap_or(false);
    let mut set = CpuSet::new();
    let mut any = false;
    for &core in wanted {
        if usable(core) && set.set(core).is_ok() {
            any = true;
        } else {
            tracing::warn!(
                "node `{node}`: cpu_affinity: core {core} is not available on this machine \
                 (available: {}); skipped",
                describe(&available)
            );
        }
    }
    if !any {
        tracing::warn!(
            "node `{node}`: no core of cpu_affinity is available; running without affinity"
        );
        return None;
    }
    Some(set)
}

/// `0-3,6`: the cores of `set`.
fn describe(set: &CpuSet) -> String {
    let cores: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect();
    let mut ranges: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cores.len() {
        let start = cores[i];
        while i + 1 < cores.len() && cores[i + 1] == cores[i] + 1 {
            i += 1;
        }
        ranges.push(if cores[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", cores[i])
        });
        i += 1;
    }
    ranges.join(",")
}

/// Makes `cmd`'s child set its CPU affinity to `set` between fork and exec.
// The one `unsafe` of the daemon: `pre_exec` is unsafe because the closure runs in the forked
// child, where only async-signal-safe work is allowed.
#[allow(unsafe_code)]
pub(crate) fn apply(cmd: &mut tokio::process::Command, set: CpuSet) {
    // SAFETY: the closure only makes the `sched_setaffinity` system call (async-signal-safe) on a
    // `CpuSet` copied into it, and turns its errno into an `io::Error` without allocating; it
    // touches no lock, no allocator and no state shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::sched_setaffinity(Pid::from_raw(0), &set)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_compact() {
        let mut set = CpuSet::new();
        for c in [0, 1, 2, 5, 7, 8] {
            set.set(c).unwrap();
        }
        assert_eq!(describe(&set), "0-2,5,7-8");
    }

    #[test]
    fn out_of_range_cores_are_skipped_and_none_left_means_no_affinity() {
        let node = NodeId::from("n");
        assert!(cpu_set(&node, &[1000]).is_none());
        let set = cpu_set(&node, &[0, 1000]).expect("core 0 is available to the tests");
        assert!(set.is_set(0).unwrap());
        assert!(!set.is_set(1000).unwrap());
    }
}
