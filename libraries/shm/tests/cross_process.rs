//! A sample written by this process is read by other processes: a re-run of this test binary that
//! maps it through the receiver API, and a plain `head` reading the segment's file in /dev/shm.

use std::process::Command;

use adora_shm::{RegionCache, SamplePool, SharedSlice, ShmRegion, SHM_DIR};

/// Set only in the child process: os_id of the sample to read.
const CHILD_SAMPLE_ENV: &str = "ADORA_SHM_TEST_CHILD_SAMPLE";
/// Set only in the child process: payload length of the sample.
const CHILD_LEN_ENV: &str = "ADORA_SHM_TEST_CHILD_LEN";
/// Set only in the child process: os_id of the region the child writes its reply into.
const CHILD_REPLY_ENV: &str = "ADORA_SHM_TEST_CHILD_REPLY";
/// Name of the test that acts as the child when the variables above are set.
const CHILD_TEST: &str = "child_reads_sample_and_replies";

/// Unlinks every segment with its prefix when dropped, even if the test panicked.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = adora_shm::unlink_all(&self.0);
    }
}

fn payload_byte(i: usize) -> u8 {
    (i % 251) as u8
}

#[test]
fn another_process_reads_a_sent_sample_and_writes_back() {
    let clean = Cleanup(format!("adora-shm-test-{}-cross-", std::process::id()));
    let mut pool = SamplePool::new(format!("{}sample-", clean.0));
    let len = 1024 * 1024 + 3;
    let mut sample = pool.allocate(len).expect("allocate");
    for (i, byte) in sample.iter_mut().enumerate() {
        *byte = payload_byte(i);
    }
    let handle = pool.send(sample);
    let reply_id = format!("{}reply", clean.0);
    let reply = ShmRegion::create(&reply_id, 4096).expect("reply region");

    let output = Command::new(std::env::current_exe().expect("test binary path"))
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_SAMPLE_ENV, &handle.os_id)
        .env(CHILD_LEN_ENV, handle.len.to_string())
        .env(CHILD_REPLY_ENV, &reply_id)
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "child test did not run: {stdout}"
    );

    // Written by the child after this process had mapped the region.
    let expected = format!("ok {len}");
    assert_eq!(&reply.as_slice()[..expected.len()], expected.as_bytes());

    assert!(pool.release(handle.token));
}

/// The child side of the test above; does nothing when run as part of the normal test suite.
#[test]
fn child_reads_sample_and_replies() {
    let (Ok(os_id), Ok(len), Ok(reply_id)) = (
        std::env::var(CHILD_SAMPLE_ENV),
        std::env::var(CHILD_LEN_ENV),
        std::env::var(CHILD_REPLY_ENV),
    ) else {
        return;
    };
    let len: usize = len.parse().expect("length");
    let mut cache = RegionCache::new();
    let slice = SharedSlice::new(cache.get(&os_id).expect("map sample"), len).expect("slice");
    assert_eq!(slice.len(), len);
    assert!(slice.iter().enumerate().all(|(i, &b)| b == payload_byte(i)));

    let mut reply = ShmRegion::open(&reply_id).expect("open reply");
    let text = format!("ok {len}");
    reply.as_mut_slice()[..text.len()].copy_from_slice(text.as_bytes());
}

#[test]
fn a_plain_file_reader_sees_the_sample_in_dev_shm() {
    let clean = Cleanup(format!("adora-shm-test-{}-head-", std::process::id()));
    let mut pool = SamplePool::new(clean.0.clone());
    let mut sample = pool.allocate(8192).expect("allocate");
    sample[..16].copy_from_slice(b"0123456789abcdef");
    let handle = pool.send(sample);

    let path = format!("{SHM_DIR}/{}", handle.os_id);
    let output = Command::new("head")
        .args(["-c", "16", &path])
        .output()
        .expect("run head");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(output.stdout, b"0123456789abcdef");
    assert!(pool.release(handle.token));
}
