//! The receiver side: mapping segments by name (cached) and read-only views of received samples.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

use crate::region::{canonical_os_id, stat_file_id, FileId, ShmRegion};
use crate::{Error, Result};

/// Most mappings a [`RegionCache`] keeps; beyond it the least recently used one is dropped
/// (samples still holding it keep it mapped).
pub const REGION_CACHE_CAPACITY: usize = 64;

/// How often [`RegionCache::get`] retries mapping a segment whose name was replaced (unlinked and
/// created again) while it was being opened.
const OPEN_ATTEMPTS: usize = 3;

struct CachedRegion {
    region: Arc<ShmRegion>,
    /// The file the mapping was made from.
    file: FileId,
    /// Value of the cache's use counter at the last hit.
    last_used: u64,
}

/// Maps segments by os_id and keeps the mappings (bounded LRU), so a region that the sender's pool
/// reuses for many samples is mapped only once.
///
/// A cached mapping is returned only while the name still refers to the same file: if the segment
/// was unlinked and a new one created under the same name (e.g. by a restarted node), the new one
/// is mapped. [`get`](Self::get) checks this with one `stat`; [`get_file`](Self::get_file), given
/// the file identity the sender announced, needs no system call at all on a hit.
#[derive(Default)]
pub struct RegionCache {
    entries: HashMap<String, CachedRegion>,
    uses: u64,
}

impl std::fmt::Debug for RegionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionCache")
            .field("mapped", &self.entries.len())
            .finish()
    }
}

impl RegionCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The mapping of the segment currently named `os_id`, from the cache or freshly mapped.
    pub fn get(&mut self, os_id: &str) -> Result<Arc<ShmRegion>> {
        let os_id = canonical_os_id(os_id)?;
        let current = stat_file_id(os_id);
        let cached = match &current {
            Ok(file) => self.hit(os_id, *file),
            Err(_) => None,
        };
        if let Some(region) = cached {
            return Ok(region);
        }
        // Gone or replaced: the old mapping must not be served for this name any more.
        self.entries.remove(os_id);
        current?;
        self.map(os_id)
    }

    /// The mapping of `file`, the segment the sender wrote into under the name `os_id`. On a hit
    /// no system call is made: while the cache maps `file`, no other file can have its identity.
    /// Otherwise the name is mapped; if it now refers to another file (the sender's was removed
    /// and the name reused), that is an error.
    pub fn get_file(&mut self, os_id: &str, file: FileId) -> Result<Arc<ShmRegion>> {
        let os_id = canonical_os_id(os_id)?;
        if let Some(region) = self.hit(os_id, file) {
            return Ok(region);
        }
        self.entries.remove(os_id);
        let region = self.map(os_id)?;
        if region.file_id() != file {
            return Err(Error::Stat {
                os_id: os_id.to_owned(),
                source: std::io::Error::other(
                    "the segment was removed and its name reused for another one",
                ),
            });
        }
        Ok(region)
    }

    /// The cached mapping of `os_id` if it maps `file`.
    fn hit(&mut self, os_id: &str, file: FileId) -> Option<Arc<ShmRegion>> {
        self.uses += 1;
        let entry = self.entries.get_mut(os_id)?;
        if entry.file != file {
            return None;
        }
        entry.last_used = self.uses;
        Some(entry.region.clone())
    }

    /// Maps `os_id` (not cached) and caches the mapping.
    fn map(&mut self, os_id: &str) -> Result<Arc<ShmRegion>> {
        let (region, file) = open_verified(os_id)?;
        let region = Arc::new(region);
        if self.entries.len() >= REGION_CACHE_CAPACITY {
            self.evict_least_recently_used();
        }
        self.entries.insert(
            os_id.to_owned(),
            CachedRegion {
                region: region.clone(),
                file,
                last_used: self.uses,
            },
        );
        Ok(region)
    }

    fn evict_least_recently_used(&mut self) {
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, entry)| entry.last_used)
            .map(|(os_id, _)| os_id.clone());
        if let Some(os_id) = oldest {
            self.entries.remove(&os_id);
        }
    }
}

/// Maps `os_id` and returns the identity of the file that was mapped: the name must refer to the
/// same file before and after mapping, otherwise it was replaced in between and we retry.
fn open_verified(os_id: &str) -> Result<(ShmRegion, FileId)> {
    for _ in 0..OPEN_ATTEMPTS {
        let before = stat_file_id(os_id)?;
        let region = ShmRegion::open(os_id)?;
        // `open` took the identity after mapping: the same before and after means no swap.
        if region.file_id() == before {
            return Ok((region, before));
        }
    }
    Err(Error::Stat {
        os_id: os_id.to_owned(),
        source: std::io::Error::other("segment kept being replaced while it was mapped"),
    })
}

/// A received, read-only view of the first `len` bytes of a shared region. Keeps the mapping
/// alive; cloning is cheap.
#[derive(Clone)]
pub struct SharedSlice {
    region: Arc<ShmRegion>,
    len: usize,
}

impl std::fmt::Debug for SharedSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSlice")
            .field("os_id", &self.os_id())
            .field("len", &self.len)
            .finish()
    }
}

impl SharedSlice {
    /// A view of the first `len` bytes of `region`; an error if the region is smaller.
    pub fn new(region: Arc<ShmRegion>, len: usize) -> Result<Self> {
        if len > region.size() {
            return Err(Error::OutOfBounds {
                os_id: region.os_id().to_owned(),
                len,
                size: region.size(),
            });
        }
        Ok(SharedSlice { region, len })
    }

    /// Name of the segment the bytes live in.
    pub fn os_id(&self) -> &str {
        self.region.os_id()
    }
}

#[cfg(feature = "arrow")]
impl SharedSlice {
    /// The bytes as an Arrow buffer, without copying. The mapping, and `owner`, live until the
    /// last clone or slice of the buffer is dropped: an `owner` that reports the sample released
    /// when dropped (the node API's) reports it only when every array using it is gone.
    pub fn into_arrow_buffer<O>(self, owner: O) -> arrow_buffer::Buffer
    where
        O: Send + Sync + 'static,
    {
        let ptr = std::ptr::NonNull::new(self.region.as_ptr().cast_mut())
            .expect("a mapped region never starts at address 0");
        let len = self.len;
        let owner: Arc<dyn arrow_buffer::alloc::Allocation> =
            Arc::new(std::panic::AssertUnwindSafe((self, owner)));
        // SAFETY: `ptr` is the start of the mapping held by `self.region`, which `owner` now keeps
        // alive (an `Arc<ShmRegion>` unmaps only on its last drop); `len <= region.size()` was
        // checked by `SharedSlice::new`, so `ptr..ptr + len` is mapped, readable memory for the
        // whole life of the buffer. The buffer only reads it, as a `SharedSlice` does (writes by
        // the sender follow the crate-level aliasing contract).
        unsafe { arrow_buffer::Buffer::from_custom_allocation(ptr, len, owner) }
    }
}

impl Deref for SharedSlice {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.region.as_slice()[..self.len]
    }
}

impl AsRef<[u8]> for SharedSlice {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::Cleanup;
    use crate::{unlink, SamplePool};

    #[test]
    fn a_region_reused_by_the_pool_is_mapped_once() {
        let clean = Cleanup::new("cache-reuse");
        let mut pool = SamplePool::new(clean.0.clone());
        let mut cache = RegionCache::new();

        let mut sample = pool.allocate(10_000).expect("allocate");
        sample[..3].copy_from_slice(b"one");
        let first = pool.send(sample);
        let first_region = cache.get(&first.os_id).expect("get");
        let slice = SharedSlice::new(first_region.clone(), first.len).expect("slice");
        assert_eq!(slice.len(), 10_000);
        assert_eq!(&slice[..3], b"one");
        drop(slice);
        assert!(pool.release(first.token));

        let mut sample = pool.allocate(9_000).expect("allocate");
        sample[..3].copy_from_slice(b"two");
        let second = pool.send(sample);
        assert_eq!(second.os_id, first.os_id);
        let second_region = cache.get(&second.os_id).expect("get");
        assert!(Arc::ptr_eq(&first_region, &second_region), "not re-mapped");
        let slice = SharedSlice::new(second_region, second.len).expect("slice");
        assert_eq!(&slice[..3], b"two");
        assert_eq!(slice.len(), 9_000);
    }

    #[test]
    fn get_file_serves_the_announced_file_and_rejects_a_replaced_one() {
        let clean = Cleanup::new("cache-get-file");
        let mut pool = SamplePool::new(clean.0.clone());
        let mut cache = RegionCache::new();
        let mut sample = pool.allocate(5_000).expect("allocate");
        sample[..3].copy_from_slice(b"one");
        let handle = pool.send(sample);
        let first = cache.get_file(&handle.os_id, handle.file).expect("map");
        assert_eq!(&first.as_slice()[..3], b"one");

        // A hit: the same mapping, even once the name is gone (no lookup by name is made).
        unlink(&handle.os_id).expect("unlink");
        let again = cache.get_file(&handle.os_id, handle.file).expect("hit");
        assert!(Arc::ptr_eq(&first, &again));

        // The name now refers to another file: a handle for it maps the new one...
        let mut new = ShmRegion::create(&handle.os_id, 4096).expect("recreate");
        new.as_mut_slice()[..3].copy_from_slice(b"two");
        let second = cache
            .get_file(&handle.os_id, new.file_id())
            .expect("new file");
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(&second.as_slice()[..3], b"two");
        // ...and the stale handle is refused rather than served the wrong bytes.
        assert!(matches!(
            cache.get_file(&handle.os_id, handle.file),
            Err(Error::Stat { .. })
        ));
        assert_eq!(&first.as_slice()[..3], b"one", "old mapping stays valid");
    }

    #[test]
    fn a_recreated_segment_with_the_same_name_is_mapped_again() {
        let clean = Cleanup::new("cache-recreate");
        let os_id = format!("{}seg", clean.0);
        let mut cache = RegionCache::new();
        let mut old = ShmRegion::create(&os_id, 4096).expect("create");
        old.as_mut_slice()[0] = 1;
        let old_mapping = cache.get(&os_id).expect("get");

        unlink(&os_id).expect("unlink");
        assert!(cache.get(&os_id).is_err(), "an unlinked name is not served");

        let mut new = ShmRegion::create(&os_id, 8192).expect("recreate");
        new.as_mut_slice()[0] = 2;
        let new_mapping = cache.get(&os_id).expect("get");
        assert!(!Arc::ptr_eq(&old_mapping, &new_mapping));
        assert_eq!((new_mapping.size(), new_mapping.as_slice()[0]), (8192, 2));
        assert_eq!(old_mapping.as_slice()[0], 1, "old mapping stays valid");
    }

    #[test]
    fn the_cache_is_bounded_and_drops_the_least_recently_used() {
        let clean = Cleanup::new("cache-lru");
        let ids: Vec<String> = (0..=REGION_CACHE_CAPACITY)
            .map(|i| format!("{}{i}", clean.0))
            .collect();
        for id in &ids {
            drop(ShmRegion::create(id, 4096).expect("create"));
        }
        let mut cache = RegionCache::new();
        let first = cache.get(&ids[0]).expect("get");
        for id in &ids[1..REGION_CACHE_CAPACITY] {
            cache.get(id).expect("get");
        }
        // Touch the first so the second becomes the least recently used.
        assert!(Arc::ptr_eq(&first, &cache.get(&ids[0]).expect("get")));
        let second = cache.get(&ids[1]).expect("get");
        cache.get(&ids[2]).expect("get"); // now ids[3] is the least recently used
        cache
            .get(&ids[REGION_CACHE_CAPACITY])
            .expect("get one more");

        assert_eq!(cache.entries.len(), REGION_CACHE_CAPACITY);
        assert!(!cache.entries.contains_key(&ids[3]), "LRU entry evicted");
        assert!(Arc::ptr_eq(&first, &cache.get(&ids[0]).expect("get")));
        assert!(Arc::ptr_eq(&second, &cache.get(&ids[1]).expect("get")));
    }

    #[test]
    fn a_slice_keeps_its_mapping_alive_and_is_bounded() {
        let clean = Cleanup::new("cache-slice");
        let os_id = format!("{}seg", clean.0);
        let mut writer = ShmRegion::create(&os_id, 4096).expect("create");
        writer.as_mut_slice()[..4].copy_from_slice(b"keep");
        let mut cache = RegionCache::new();
        let region = cache.get(&os_id).expect("get");
        assert!(matches!(
            SharedSlice::new(region.clone(), 4097),
            Err(Error::OutOfBounds {
                len: 4097,
                size: 4096,
                ..
            })
        ));
        let slice = SharedSlice::new(region, 4).expect("slice");
        drop(cache);
        unlink(&os_id).expect("unlink");
        assert_eq!(&*slice, b"keep");
        assert_eq!(slice.os_id(), os_id);
        let on_other_thread = std::thread::spawn(move || slice.to_vec())
            .join()
            .expect("thread");
        assert_eq!(on_other_thread, b"keep");
    }

    #[test]
    fn a_missing_segment_is_an_error() {
        let mut cache = RegionCache::new();
        let os_id = format!("{}missing", crate::test_util::prefix("cache-missing"));
        assert!(matches!(cache.get(&os_id), Err(Error::Stat { .. })));
    }
}
