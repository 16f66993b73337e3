//! The parent-death signal: a node must not outlive its daemon, even when the daemon is killed
//! with SIGKILL and has no chance to clean up.
//!
//! This is the one place outside `adora-shm` with `unsafe`: `pre_exec` is unsafe because the
//! closure runs between `fork` and `exec`, where only async-signal-safe calls are allowed.

#![allow(unsafe_code)]

use tokio::process::Command;

/// Makes the child receive SIGKILL when the thread that spawned it exits. Spawn from a runtime
/// worker thread (not `spawn_blocking`, whose threads exit when idle).
pub(crate) fn set_parent_death_signal(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure only calls `prctl` and `getppid` (both async-signal-safe system calls) and
    // `_exit`; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            // The parent may have died between fork and prctl; then nobody would ever kill us.
            if nix::unistd::getppid() != parent {
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
}
