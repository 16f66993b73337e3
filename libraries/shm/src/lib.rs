//! Shared-memory regions and the sample pool of Adora's local data plane.
//!
//! A node that sends a large payload allocates a [`SampleMut`] from its own [`SamplePool`], writes the
//! payload straight into it and hands it back to the pool with [`SamplePool::send`], which returns the
//! small [`SampleHandle`] `{os_id, len, token, file}` that travels to the daemon. Receivers map the
//! segment by `os_id` through a [`RegionCache`] (which reuses its mapping of `file` without a
//! system call) and read it as a [`SharedSlice`] without copying. When every
//! receiver has dropped it, the daemon reports the [`SampleToken`] as free and
//! [`SamplePool::release`] makes the region reusable for a later sample.
//!
//! ```
//! use adora_shm::{RegionCache, SamplePool, SharedSlice};
//!
//! let prefix = format!("adora-shm-doc-{}-", std::process::id());
//! // Sender process:
//! let mut pool = SamplePool::new(prefix.clone());
//! let mut sample = pool.allocate(8192)?;
//! sample[..5].copy_from_slice(b"hello");
//! let handle = pool.send(sample); // {os_id, len, token, file} goes to the daemon
//!
//! // Receiver process:
//! let mut regions = RegionCache::new();
//! let data = SharedSlice::new(regions.get_file(&handle.os_id, handle.file)?, handle.len)?;
//! assert_eq!(&data[..5], b"hello");
//! drop(data);
//!
//! // Sender, once the daemon reports the token dropped by every receiver:
//! assert!(pool.release(handle.token));
//! # drop(pool);
//! # adora_shm::unlink_all(&prefix)?;
//! # Ok::<(), adora_shm::Error>(())
//! ```
//!
//! # Naming
//!
//! An `os_id` is the name given to `shm_open(3)`. On Linux (glibc and musl) leading slashes are
//! ignored and the segment is the file `/dev/shm/{os_id without leading '/'}`; this crate stores and
//! returns os_ids in that canonical slash-less form, so the names returned by [`list_segments`] can
//! be passed straight to [`ShmRegion::open`] and [`unlink`].
//!
//! # Lifetime rules
//!
//! Dropping a [`ShmRegion`] only unmaps it; segments are removed only by [`unlink`] /
//! [`unlink_all`], by a pool evicting or dropping its *free* regions, or by an unsent [`SampleMut`]
//! outliving its pool. In-flight samples are never unlinked by the sender: receivers may still need
//! to open them, so the daemon removes leftovers (by prefix) when a node or dataflow ends.
//!
//! # Aliasing contract
//!
//! The type system cannot see other mappings of the same segment (in this or another process).
//! Soundness of the safe slice accessors relies on the data-plane protocol: only the sender writes
//! a sample, and only before [`SamplePool::send`]; the region is written again only after the
//! daemon has reported that every receiver dropped it.
//!
//! This is the only Adora crate allowed to contain `unsafe`; every block carries a `SAFETY` note.

mod bell;
mod cache;
mod holders;
mod lane;
mod pool;
mod region;

pub use bell::Bell;
pub use cache::{RegionCache, SharedSlice, REGION_CACHE_CAPACITY};
pub use holders::{
    holders, lanes_released, release_lane, Holders, HOLDERS_BYTES, MAX_LANE_HOLDERS,
};
pub use lane::{Batch, Entry, Lane, LaneCounters, Pushed, LANE_MAX_SLOTS, LANE_SLOT_BYTES};
pub use pool::{
    SampleHandle, SampleMut, SamplePool, SampleToken, MAX_CREATE_ATTEMPTS, MAX_FREE_BYTES,
    MAX_FREE_REGIONS, MAX_REUSE_OVERSIZE, REGION_SIZE_GRANULE,
};
pub use region::{list_segments, unlink, unlink_all, FileId, ShmRegion, MAX_OS_ID_LEN, SHM_DIR};

/// Errors of shared-memory operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The os_id cannot name a POSIX shared-memory segment.
    #[error("invalid shared-memory id {os_id:?}: {reason}")]
    InvalidOsId {
        /// The rejected id.
        os_id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Creating a segment failed (including: it already exists).
    #[error("could not create shared-memory segment {os_id:?} of {size} bytes")]
    Create {
        /// The segment's os_id.
        os_id: String,
        /// The requested size.
        size: usize,
        /// The underlying error.
        #[source]
        source: shared_memory::ShmemError,
    },
    /// Opening and mapping an existing segment failed.
    #[error("could not open shared-memory segment {os_id:?}")]
    Open {
        /// The segment's os_id.
        os_id: String,
        /// The underlying error.
        #[source]
        source: shared_memory::ShmemError,
    },
    /// Looking up a segment's file in [`SHM_DIR`] failed.
    #[error("could not inspect shared-memory segment {os_id:?}")]
    Stat {
        /// The segment's os_id.
        os_id: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `shm_unlink` failed for a reason other than "does not exist".
    #[error("could not unlink shared-memory segment {os_id:?}")]
    Unlink {
        /// The segment's os_id.
        os_id: String,
        /// The underlying error.
        #[source]
        source: nix::Error,
    },
    /// Reading [`SHM_DIR`] failed.
    #[error("could not list shared-memory segments in {SHM_DIR}")]
    List {
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A view was requested beyond the end of a region.
    #[error("{len} bytes requested from shared-memory segment {os_id:?} of only {size} bytes")]
    OutOfBounds {
        /// The segment's os_id.
        os_id: String,
        /// The requested length.
        len: usize,
        /// The region's mapped size.
        size: usize,
    },
    /// The pool found no unused name for a new segment.
    #[error(
        "no free shared-memory name with prefix {prefix:?} after {MAX_CREATE_ATTEMPTS} attempts"
    )]
    NamesExhausted {
        /// The pool's prefix.
        prefix: String,
    },
}

/// Result of shared-memory operations.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
pub(crate) mod test_util {
    /// A prefix unique to this process and test, so tests can run in parallel.
    pub fn prefix(test: &str) -> String {
        format!("adora-shm-test-{}-{test}-", std::process::id())
    }

    /// Unlinks every segment with its prefix when dropped, even if the test panicked.
    pub struct Cleanup(pub String);

    impl Cleanup {
        pub fn new(test: &str) -> Self {
            Cleanup(prefix(test))
        }
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = crate::unlink_all(&self.0);
        }
    }
}
