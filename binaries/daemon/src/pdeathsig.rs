//! The parent-death signal: a node must not outlive its daemon, even when the daemon is killed
//! with SIGKILL and has no chance to clean up.
//!
//! Only the process itself can ask for it (`prctl(PR_SET_PDEATHSIG)`), and it survives `execve`.
//! Two ways to get it into a node:
//!
//! - **The trampoline** (what `adora daemon` and `adora run` use): the daemon spawns its own
//!   executable ([`NODE_TRAMPOLINE`]) with the node's program as first argument and
//!   [`TRAMPOLINE_ENV`] set; [`exec_node_if_requested`], first thing in that binary's `main`,
//!   sets the signal and execs the node in the same process. Nothing runs between fork and exec
//!   in the daemon, so the standard library spawns with posix_spawn (vfork), whose cost does not
//!   grow with the daemon's memory.
//! - **A pre-exec hook** ([`set_parent_death_signal`]) otherwise. It forces a real `fork`, which
//!   copies the daemon's page tables for every node (milliseconds each for a daemon already
//!   serving hundreds of nodes).
//!
//! This is the one place outside `adora-shm` with `unsafe`: `pre_exec` is unsafe because the
//! closure runs between `fork` and `exec`, where only async-signal-safe calls are allowed.

#![allow(unsafe_code)]

use std::os::unix::process::CommandExt as _;

use tokio::process::Command;

/// The daemon's own executable, through the link that survives the file being replaced (e.g.
/// by `adora cluster upgrade`).
pub const NODE_TRAMPOLINE: &str = "/proc/self/exe";

/// Set (to the daemon's pid) when an executable is started as the trampoline of a node.
pub(crate) const TRAMPOLINE_ENV: &str = "ADORA_NODE_TRAMPOLINE_PARENT";

/// Exit status of a trampoline that could not exec its node (like a shell's "cannot execute").
const TRAMPOLINE_EXEC_FAILED: i32 = 127;

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

/// When this process was started as a node's trampoline (see the module docs): sets the
/// parent-death signal and replaces itself with the node (`argv[1..]`); never returns then.
/// Otherwise returns at once. Call it first thing in `main`, before any thread starts.
pub fn exec_node_if_requested() {
    let Some(parent) = std::env::var_os(TRAMPOLINE_ENV) else {
        return;
    };
    let parent: i32 = parent
        .to_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| fail(format!("{TRAMPOLINE_ENV} is not a pid")));
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        fail(format!("cannot set the parent-death signal: {e}"));
    }
    // The daemon may have died before the signal was set; then nobody would ever kill the node.
    if nix::unistd::getppid().as_raw() != parent {
        std::process::exit(1);
    }
    let mut args = std::env::args_os().skip(1);
    let program = args
        .next()
        .unwrap_or_else(|| fail("no program given".into()));
    let error = std::process::Command::new(&program)
        .args(args)
        .env_remove(TRAMPOLINE_ENV)
        .exec();
    fail(format!(
        "cannot execute `{}`: {error}",
        program.to_string_lossy()
    ))
}

/// Ends a trampoline that cannot start its node; the message lands in the node's stderr (its log).
fn fail(what: String) -> ! {
    eprintln!("adora: cannot start the node: {what}");
    std::process::exit(TRAMPOLINE_EXEC_FAILED);
}
