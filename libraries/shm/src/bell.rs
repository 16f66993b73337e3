//! A receiving node's bell: how a sender wakes a node that sleeps waiting for its lanes
//! (see [`crate::Lane`]).

use std::{
    io::{ErrorKind, Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

/// A receiving node's doorbell: a FIFO in [`crate::SHM_DIR`] (removed with the dataflow's shared
/// memory) that senders write a byte to when the node sleeps waiting for its lanes.
#[derive(Debug)]
pub struct Bell {
    fifo: std::fs::File,
    path: PathBuf,
}

impl Bell {
    /// The FIFO's path for a name in the shared-memory directory.
    pub fn path(name: &str) -> PathBuf {
        Path::new(crate::SHM_DIR).join(name)
    }

    /// Creates the FIFO (the daemon, once per receiving node).
    pub fn create(path: &Path) -> std::io::Result<()> {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(std::io::Error::from)
    }

    /// Opens the bell to listen on (the receiving node): readable when rung.
    pub fn listen(path: &Path) -> std::io::Result<Bell> {
        // Read and write: a FIFO opened for reading alone reports a hang-up whenever no sender
        // has it open.
        Self::open(path, true)
    }

    /// Opens the bell to ring it (a sending node).
    pub fn ringer(path: &Path) -> std::io::Result<Bell> {
        Self::open(path, false)
    }

    fn open(path: &Path, read: bool) -> std::io::Result<Bell> {
        let fifo = std::fs::OpenOptions::new()
            .read(read)
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(path)?;
        Ok(Bell {
            fifo,
            path: path.to_owned(),
        })
    }

    /// Wakes the receiver. A full FIFO already has a wake-up pending. The daemon keeps every
    /// bell open for reading, so a ring never meets a FIFO without reader (`SIGPIPE`).
    pub fn ring(&self) -> std::io::Result<()> {
        match (&self.fifo).write(&[1]) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(std::io::Error::new(
                e.kind(),
                format!("cannot ring {}: {e}", self.path.display()),
            )),
        }
    }

    /// Consumes pending rings (a receiver does it before it sleeps again, not on waking up:
    /// the message that woke it comes first).
    pub fn quiet(&self) {
        let mut buf = [0u8; 64];
        while let Ok(n) = (&self.fifo).read(&mut buf) {
            if n < buf.len() {
                break;
            }
        }
    }

    /// The file descriptor to poll for readability.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fifo.as_fd()
    }
}
