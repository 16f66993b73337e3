//! One mapped POSIX shared-memory segment, and the name-level operations on segments
//! (unlink, list) that do not need a mapping.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use nix::errno::Errno;
use shared_memory::{Shmem, ShmemConf};

use crate::{Error, Result};

/// Directory where Linux exposes POSIX shared-memory segments: `shm_open("name")` and
/// `shm_open("/name")` both create the file `/dev/shm/name`.
pub const SHM_DIR: &str = "/dev/shm";

/// Longest accepted os_id in bytes (without leading '/'). The kernel's `NAME_MAX` is 255 (and
/// glibc 2.36 accepts 255), but older glibc releases reject names whose length + 1 reaches
/// `NAME_MAX`, so 253 is the longest name that works everywhere.
pub const MAX_OS_ID_LEN: usize = 253;

/// A mapped shared-memory segment.
///
/// Dropping it unmaps the segment but never unlinks it: removing a segment is always explicit
/// ([`unlink`], [`unlink_all`]).
pub struct ShmRegion {
    shmem: Shmem,
    /// Canonical (slash-less) name, i.e. the file name in [`SHM_DIR`].
    os_id: String,
    /// The file that is mapped.
    file: FileId,
}

// SAFETY: `Shmem` is `!Send` only because it stores the raw pointer and file descriptor of the
// mapping. A `MAP_SHARED` mapping belongs to the whole process, not to the thread that created it,
// and the pointer stays valid until `Drop` (munmap + close), which may run on any thread.
unsafe impl Send for ShmRegion {}

// SAFETY: through `&ShmRegion` the mapping can only be read (`as_slice`, `as_ptr`, `size`,
// `os_id`) or changed atomically (`word`); writing requires `&mut ShmRegion`, so there is no
// non-atomic interior mutability that several threads could race on. Writes by *other* mappings follow the crate-level aliasing contract.
unsafe impl Sync for ShmRegion {}

impl std::fmt::Debug for ShmRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmRegion")
            .field("os_id", &self.os_id)
            .field("size", &self.size())
            .finish()
    }
}

impl ShmRegion {
    /// Creates a new segment of `size` bytes (zero-filled) and maps it.
    ///
    /// Fails if a segment with this os_id already exists or `size` is 0.
    pub fn create(os_id: &str, size: usize) -> Result<ShmRegion> {
        let os_id = canonical_os_id(os_id)?;
        let mut shmem = ShmemConf::new()
            .os_id(os_id)
            .size(size)
            .create()
            .map_err(|source| Error::Create {
                os_id: os_id.to_owned(),
                size,
                source,
            })?;
        // Never unlink on drop: receivers and the pool decide when a segment goes away.
        shmem.set_owner(false);
        // Nobody else knows the name yet (creation fails if it exists), so this is our file.
        let file = stat_file_id(os_id)?;
        Ok(ShmRegion {
            shmem,
            os_id: os_id.to_owned(),
            file,
        })
    }

    /// Maps an existing segment; its whole current size is mapped.
    ///
    /// If the name is removed and created again while this runs, [`Self::file_id`] may describe
    /// the newer file; compare it with the identity seen before opening to rule that out.
    pub fn open(os_id: &str) -> Result<ShmRegion> {
        let os_id = canonical_os_id(os_id)?;
        let mut shmem = ShmemConf::new()
            .os_id(os_id)
            .open()
            .map_err(|source| Error::Open {
                os_id: os_id.to_owned(),
                source,
            })?;
        // `open` already marks the mapping as not owned; keep that explicit.
        shmem.set_owner(false);
        let file = stat_file_id(os_id)?;
        Ok(ShmRegion {
            shmem,
            os_id: os_id.to_owned(),
            file,
        })
    }

    /// Identity of the mapped file: travels with a sample so that receivers holding a mapping of
    /// the same file can reuse it without a system call.
    pub fn file_id(&self) -> FileId {
        self.file
    }

    /// The segment's name, without leading '/': the file name in [`SHM_DIR`].
    pub fn os_id(&self) -> &str {
        &self.os_id
    }

    /// The mapped size in bytes (at least the size requested at creation).
    pub fn size(&self) -> usize {
        self.shmem.len()
    }

    /// The whole mapping, read-only.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the pointer comes from a successful mmap of `size()` bytes that stays mapped
        // until `self` is dropped, so it is valid and aligned for the returned lifetime. Within
        // this process no `&mut` to the same mapping can coexist (writing needs `&mut self`);
        // writes through other mappings are excluded by the crate-level aliasing contract.
        unsafe { self.shmem.as_slice() }
    }

    /// The whole mapping, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, the pointer is valid for `size()` bytes while `self` lives;
        // `&mut self` guarantees no other reference into this mapping exists in this process.
        unsafe { self.shmem.as_slice_mut() }
    }

    /// Start address of this mapping (differs between two mappings of the same segment).
    pub fn as_ptr(&self) -> *const u8 {
        self.shmem.as_ptr()
    }

    /// The 8 bytes at `offset` as a word that processes sharing the segment change in place
    /// (`None`: `offset` is not a multiple of 8, or the word does not fit in the mapping). Such
    /// bytes must only ever be accessed atomically, and never be part of a slice read or written
    /// as payload.
    pub fn word(&self, offset: usize) -> Option<&AtomicU64> {
        if !offset.is_multiple_of(8) || offset.checked_add(8)? > self.size() {
            return None;
        }
        // SAFETY: `offset + 8 <= size()`, so the word lies inside the mapping, which stays mapped
        // while `self` lives (the reference borrows `self`); the mapping is page aligned and
        // `offset` a multiple of 8, so the word is aligned for `AtomicU64`. Every access to it is
        // atomic (the contract above), so sharing it between threads and processes is sound.
        unsafe { Some(&*(self.as_ptr().add(offset) as *const AtomicU64)) }
    }
}

/// Removes the segment's name; existing mappings stay valid until unmapped.
///
/// Succeeds if the segment does not exist (already removed).
pub fn unlink(os_id: &str) -> Result<()> {
    unlink_existing(canonical_os_id(os_id)?).map(|_| ())
}

/// The os_ids (canonical, without leading '/') of all segments (and bells) whose name starts with `prefix`,
/// sorted. A leading '/' in `prefix` is ignored, like in os_ids.
pub fn list_segments(prefix: &str) -> Result<Vec<String>> {
    let prefix = prefix.trim_start_matches('/');
    let entries = std::fs::read_dir(SHM_DIR).map_err(|source| Error::List { source })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::List { source })?;
        let Ok(name) = entry.file_name().into_string() else {
            continue; // not produced by Adora: os_ids are UTF-8
        };
        // Segments are files; a lane's bell is a FIFO named like them (`lane.rs`).
        let ours = |t: std::fs::FileType| t.is_file() || t.is_fifo();
        if name.starts_with(prefix) && entry.file_type().is_ok_and(ours) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Unlinks every segment whose name starts with `prefix` and returns how many it removed.
///
/// Every matching segment is attempted; if some failed, the first error is returned. An empty
/// prefix is rejected because it would match every segment of every program.
pub fn unlink_all(prefix: &str) -> Result<usize> {
    if prefix.trim_start_matches('/').is_empty() {
        return Err(Error::InvalidOsId {
            os_id: prefix.to_owned(),
            reason: "an empty prefix would match every segment",
        });
    }
    let mut removed = 0;
    let mut first_error = None;
    for name in list_segments(prefix)? {
        match unlink_existing(&name) {
            Ok(true) => removed += 1,
            Ok(false) => {} // removed concurrently by someone else
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}

/// Unlinks a canonical os_id; `Ok(false)` if it did not exist.
pub(crate) fn unlink_existing(os_id: &str) -> Result<bool> {
    match nix::sys::mman::shm_unlink(os_id) {
        Ok(()) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(source) => Err(Error::Unlink {
            os_id: os_id.to_owned(),
            source,
        }),
    }
}

/// Identity of the file behind a segment name (device and inode number): changes when the name
/// is unlinked and created again, even if the new segment has the same name and size. While a
/// mapping of the file exists, no other file can get the same identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    /// Device number of the file system.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

/// [`file_id`] with the crate's error type.
pub(crate) fn stat_file_id(os_id: &str) -> Result<FileId> {
    file_id(os_id).map_err(|source| Error::Stat {
        os_id: os_id.to_owned(),
        source,
    })
}

/// The identity of the file behind a canonical os_id.
pub(crate) fn file_id(os_id: &str) -> std::io::Result<FileId> {
    let meta = std::fs::metadata(segment_path(os_id))?;
    Ok(FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// The file in [`SHM_DIR`] backing a canonical os_id.
pub(crate) fn segment_path(os_id: &str) -> PathBuf {
    PathBuf::from(SHM_DIR).join(os_id)
}

/// Validates an os_id and strips leading slashes, which `shm_open` ignores.
pub(crate) fn canonical_os_id(os_id: &str) -> Result<&str> {
    let invalid = |reason| {
        Err(Error::InvalidOsId {
            os_id: os_id.to_owned(),
            reason,
        })
    };
    let name = os_id.trim_start_matches('/');
    if name.is_empty() {
        invalid("empty name")
    } else if name.contains('/') {
        invalid("contains '/' after the leading one")
    } else if name.contains('\0') {
        invalid("contains a NUL byte")
    } else if name == "." || name == ".." {
        invalid("'.' and '..' are not segment names")
    } else if name.len() > MAX_OS_ID_LEN {
        invalid("longer than MAX_OS_ID_LEN bytes")
    } else {
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::Cleanup;

    #[test]
    fn bytes_written_in_one_mapping_are_seen_through_another() {
        let clean = Cleanup::new("two-mappings");
        let os_id = format!("{}seg", clean.0);
        let mut first = ShmRegion::create(&os_id, 8192).expect("create");
        first.as_mut_slice()[..5].copy_from_slice(b"hello");

        let mut second = ShmRegion::open(&os_id).expect("open");
        assert_eq!(second.size(), 8192);
        assert_eq!(second.os_id(), os_id);
        assert_ne!(first.as_ptr(), second.as_ptr(), "two distinct mappings");
        assert_eq!(&second.as_slice()[..5], b"hello");

        // Same backing memory in both directions, also for writes after `open`.
        first.as_mut_slice()[8191] = 0xAB;
        assert_eq!(second.as_slice()[8191], 0xAB);
        second.as_mut_slice()[100..103].copy_from_slice(b"abc");
        assert_eq!(&first.as_slice()[100..103], b"abc");
    }

    #[test]
    fn a_word_changed_in_one_mapping_is_seen_through_another_and_stays_inside() {
        use std::sync::atomic::Ordering;
        let clean = Cleanup::new("word");
        let os_id = format!("{}seg", clean.0);
        let first = ShmRegion::create(&os_id, 4096).expect("create");
        let second = ShmRegion::open(&os_id).expect("open");
        let (last, other) = (
            first.word(4088).expect("word"),
            second.word(4088).expect("word"),
        );
        last.store(7, Ordering::Release);
        assert_eq!(other.fetch_add(1, Ordering::AcqRel), 7);
        assert_eq!(last.load(Ordering::Acquire), 8);
        assert_eq!(second.word(0).expect("word").load(Ordering::Acquire), 0);
        assert!(first.word(4092).is_none(), "unaligned");
        assert!(first.word(4096).is_none(), "beyond the mapping");
        assert!(first.word(usize::MAX - 7).is_none(), "overflowing offset");
    }

    #[test]
    fn create_fails_if_the_segment_exists() {
        let clean = Cleanup::new("create-exists");
        let os_id = format!("{}seg", clean.0);
        let _first = ShmRegion::create(&os_id, 4096).expect("create");
        let err = ShmRegion::create(&os_id, 4096).expect_err("second create");
        assert!(
            matches!(
                err,
                Error::Create {
                    source: shared_memory::ShmemError::MappingIdExists,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn open_of_a_missing_segment_fails() {
        let os_id = format!("{}missing", crate::test_util::prefix("open-missing"));
        assert!(matches!(ShmRegion::open(&os_id), Err(Error::Open { .. })));
    }

    #[test]
    fn dropping_a_region_unmaps_but_keeps_the_segment() {
        let clean = Cleanup::new("drop-keeps");
        let os_id = format!("{}seg", clean.0);
        let mut region = ShmRegion::create(&os_id, 4096).expect("create");
        region.as_mut_slice()[0] = 42;
        drop(region);
        assert!(segment_path(&os_id).exists());
        let reopened = ShmRegion::open(&os_id).expect("reopen after drop");
        assert_eq!(reopened.as_slice()[0], 42);
    }

    #[test]
    fn os_id_is_the_file_name_in_dev_shm_with_or_without_leading_slash() {
        let clean = Cleanup::new("naming");
        let bare = format!("{}seg", clean.0);
        let slashed = format!("/{bare}");
        let mut region = ShmRegion::create(&slashed, 4096).expect("create with '/'");
        assert_eq!(region.os_id(), bare, "os_id is stored without '/'");
        region.as_mut_slice()[..4].copy_from_slice(b"name");

        // The file is /dev/shm/<name without '/'> and holds the segment's bytes.
        let on_disk = std::fs::read(format!("{SHM_DIR}/{bare}")).expect("file in /dev/shm");
        assert_eq!(on_disk.len(), 4096);
        assert_eq!(&on_disk[..4], b"name");

        // Both spellings name the same segment.
        assert!(ShmRegion::create(&bare, 4096).is_err());
        assert_eq!(
            &ShmRegion::open(&bare).expect("open").as_slice()[..4],
            b"name"
        );
        assert_eq!(list_segments(&clean.0).expect("list"), vec![bare.clone()]);
        assert_eq!(
            list_segments(&format!("/{}", clean.0)).expect("list"),
            vec![bare.clone()]
        );

        unlink(&slashed).expect("unlink with '/'");
        assert!(!segment_path(&bare).exists());
        unlink(&bare).expect("unlinking a missing segment is Ok");
    }

    #[test]
    fn longest_portable_os_id_works_and_longer_is_rejected() {
        let clean = Cleanup::new("long");
        let longest = format!("{}{}", clean.0, "x".repeat(MAX_OS_ID_LEN - clean.0.len()));
        assert_eq!(longest.len(), MAX_OS_ID_LEN);
        drop(ShmRegion::create(&longest, 4096).expect("create longest"));
        assert!(segment_path(&longest).exists());
        let too_long = format!("{longest}x");
        assert!(matches!(
            ShmRegion::create(&too_long, 4096),
            Err(Error::InvalidOsId { .. })
        ));
        for bad in ["", "/", "a/b", "..", "a\0b"] {
            assert!(
                matches!(ShmRegion::open(bad), Err(Error::InvalidOsId { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unlink_all_removes_exactly_the_prefixed_segments() {
        let clean = Cleanup::new("unlink-all");
        let other = Cleanup::new("other-unlink-all");
        let a = format!("{}a", clean.0);
        let b = format!("{}b", clean.0);
        let keep = format!("{}a", other.0);
        for id in [&a, &b, &keep] {
            drop(ShmRegion::create(id, 4096).expect("create"));
        }
        assert_eq!(
            list_segments(&clean.0).expect("list"),
            vec![a.clone(), b.clone()]
        );

        assert_eq!(unlink_all(&clean.0).expect("unlink_all"), 2);
        assert!(list_segments(&clean.0).expect("list").is_empty());
        assert!(!segment_path(&a).exists() && !segment_path(&b).exists());
        assert_eq!(list_segments(&other.0).expect("list"), vec![keep.clone()]);
        assert_eq!(unlink_all(&clean.0).expect("nothing left"), 0);
        assert!(matches!(unlink_all(""), Err(Error::InvalidOsId { .. })));
        assert!(matches!(unlink_all("/"), Err(Error::InvalidOsId { .. })));
    }

    #[test]
    fn file_id_changes_when_a_name_is_recreated() {
        let clean = Cleanup::new("file-id");
        let os_id = format!("{}seg", clean.0);
        // Keep the first segment mapped so its inode cannot be recycled for the second one.
        let _first = ShmRegion::create(&os_id, 4096).expect("create");
        let before = file_id(&os_id).expect("stat");
        unlink(&os_id).expect("unlink");
        let _second = ShmRegion::create(&os_id, 4096).expect("create again");
        assert_ne!(before, file_id(&os_id).expect("stat"));
    }
}
