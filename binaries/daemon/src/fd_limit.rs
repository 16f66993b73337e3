//! The daemon's open-file limit. Every node costs the daemon several descriptors (three Unix
//! socket connections, its stdout and stderr pipes, a pidfd or signal pipe while it is watched),
//! so a dataflow of a few hundred nodes exhausts the usual soft limit of 1024. The soft limit is
//! only a default the process may raise itself up to the hard limit; the daemon does so once at
//! startup.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit when it is lower, and returns the soft limit
/// in force afterwards (`None` when it cannot be read). Failing to raise it is logged, not fatal:
/// small dataflows run fine with the default.
pub fn raise_fd_limit() -> Option<u64> {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!("cannot read the open-file limit: {e}");
            return None;
        }
    };
    if soft >= hard {
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            tracing::debug!("raised the open-file limit from {soft} to {hard}");
            Some(hard)
        }
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}; large dataflows may fail to start");
            Some(soft)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let soft = raise_fd_limit().expect("RLIMIT_NOFILE is readable");
        let (now, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("readable");
        assert_eq!(soft, now);
        // An unlimited hard limit cannot be the soft one (the kernel caps it at `nr_open`).
        if hard != nix::sys::resource::RLIM_INFINITY {
            assert_eq!(now, hard);
        }
    }
}
