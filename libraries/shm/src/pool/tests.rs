use super::*;
use crate::region::segment_path;
use crate::test_util::Cleanup;
use crate::{list_segments, ShmRegion};

const MIB: usize = 1024 * 1024;

#[test]
fn a_released_region_is_reused_for_a_smaller_or_equal_sample() {
    let clean = Cleanup::new("pool-reuse");
    let mut pool = SamplePool::new(clean.0.clone());
    let mut sample = pool.allocate(4 * MIB).expect("allocate");
    assert_eq!(sample.len(), 4 * MIB);
    sample.fill(7);
    sample[..5].copy_from_slice(b"frame");
    let first_id = sample.os_id().to_owned();
    assert!(first_id.starts_with(&clean.0));

    let handle = pool.send(sample);
    assert_eq!(handle.os_id, first_id);
    assert_eq!(handle.len, 4 * MIB);
    assert_eq!((pool.in_flight(), pool.free_regions()), (1, 0));

    // A receiver sees the payload through its own mapping.
    let receiver = ShmRegion::open(&handle.os_id).expect("receiver open");
    assert_eq!(&receiver.as_slice()[..5], b"frame");
    assert!(receiver.as_slice()[5..handle.len].iter().all(|&b| b == 7));
    drop(receiver);

    // While in flight the region is not handed out again.
    let other = pool.allocate(4 * MIB).expect("allocate while in flight");
    assert_ne!(other.os_id(), first_id);
    drop(other);

    assert!(pool.release(handle.token));
    assert_eq!(pool.in_flight(), 0);
    assert_eq!(pool.free_regions(), 2);
    let again = pool.allocate(4 * MIB - 100).expect("allocate again");
    assert_eq!(
        again.os_id(),
        first_id,
        "most recently freed of equal size reused"
    );
    assert_eq!(again.len(), 4 * MIB - 100);
    assert_eq!(pool.free_regions(), 1);
}

#[test]
fn unknown_and_repeated_tokens_are_ignored() {
    let clean = Cleanup::new("pool-unknown");
    let mut pool = SamplePool::new(clean.0.clone());
    assert!(!pool.release(SampleToken(12345)));
    let handle = sent(&mut pool, 8192);
    assert!(!pool.release(SampleToken(handle.token.0 ^ 1)));
    assert_eq!(pool.in_flight(), 1);
    assert!(pool.release(handle.token));
    assert!(
        !pool.release(handle.token),
        "second release of the same token"
    );
    assert_eq!((pool.in_flight(), pool.free_regions()), (0, 1));
}

fn pool_sample(pool: &mut SamplePool, len: usize) -> SampleMut {
    pool.allocate(len).expect("allocate")
}

fn sent(pool: &mut SamplePool, len: usize) -> SampleHandle {
    let sample = pool_sample(pool, len);
    pool.send(sample)
}

#[test]
fn an_unsent_sample_returns_its_region_when_dropped() {
    let clean = Cleanup::new("pool-unsent");
    let mut pool = SamplePool::new(clean.0.clone());
    let sample = pool_sample(&mut pool, 100_000);
    let os_id = sample.os_id().to_owned();
    drop(sample);
    assert_eq!((pool.in_flight(), pool.free_regions()), (0, 1));
    assert!(segment_path(&os_id).exists());
    assert_eq!(pool_sample(&mut pool, 90_000).os_id(), os_id);
}

#[test]
fn a_much_larger_free_region_is_not_used_for_a_small_sample() {
    let clean = Cleanup::new("pool-oversize");
    let mut pool = SamplePool::new(clean.0.clone());
    let big = pool_sample(&mut pool, 4 * MIB);
    let big_id = big.os_id().to_owned();
    drop(big);
    let small = pool_sample(&mut pool, 4096);
    assert_ne!(small.os_id(), big_id);
    assert_eq!(pool.free_regions(), 1, "the big region stays free");
    // Up to MAX_REUSE_OVERSIZE times larger is fine.
    assert_eq!(pool_sample(&mut pool, MIB).os_id(), big_id);
}

#[test]
fn evicting_beyond_max_free_regions_unlinks_the_oldest() {
    let clean = Cleanup::new("pool-evict-count");
    let mut pool = SamplePool::new(clean.0.clone());
    let samples: Vec<_> = (0..=MAX_FREE_REGIONS)
        .map(|_| pool_sample(&mut pool, 4096))
        .collect();
    let handles: Vec<_> = samples.into_iter().map(|s| pool.send(s)).collect();
    assert_eq!(
        list_segments(&clean.0).expect("list").len(),
        MAX_FREE_REGIONS + 1
    );
    for h in &handles {
        assert!(pool.release(h.token));
    }
    assert_eq!(pool.free_regions(), MAX_FREE_REGIONS);
    assert!(!segment_path(&handles[0].os_id).exists(), "oldest evicted");
    for h in &handles[1..] {
        assert!(segment_path(&h.os_id).exists(), "{} kept", h.os_id);
    }
}

#[test]
fn a_free_region_larger_than_max_free_bytes_is_unlinked_but_others_kept() {
    let clean = Cleanup::new("pool-evict-bytes");
    let mut pool = SamplePool::new(clean.0.clone());
    let small = sent(&mut pool, 4096);
    // Untouched pages of a tmpfs segment use no memory, so this is cheap.
    let huge = sent(&mut pool, MAX_FREE_BYTES + 1);
    assert!(segment_path(&huge.os_id).exists());
    assert!(pool.release(small.token));
    assert!(pool.release(huge.token));
    assert_eq!(pool.free_regions(), 1);
    assert!(!segment_path(&huge.os_id).exists(), "huge region unlinked");
    assert!(segment_path(&small.os_id).exists(), "small region kept");
}

#[test]
fn free_bytes_beyond_the_limit_evict_the_oldest() {
    let clean = Cleanup::new("pool-evict-total");
    let mut pool = SamplePool::new(clean.0.clone());
    // Three regions of 40% of the limit each: the third pushes the total over it.
    let len = MAX_FREE_BYTES / 5 * 2;
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let s = pool_sample(&mut pool, len);
            pool.send(s)
        })
        .collect();
    for h in &handles {
        assert!(pool.release(h.token));
    }
    assert_eq!(pool.free_regions(), 2);
    assert!(!segment_path(&handles[0].os_id).exists());
    assert!(segment_path(&handles[1].os_id).exists() && segment_path(&handles[2].os_id).exists());
}

#[test]
fn dropping_the_pool_leaves_only_in_flight_segments() {
    let clean = Cleanup::new("pool-drop");
    let mut pool = SamplePool::new(clean.0.clone());
    let in_flight = sent(&mut pool, 8192);
    let released = sent(&mut pool, 8192);
    drop(pool_sample(&mut pool, 50_000)); // unsent, back on the free list
    assert!(pool.release(released.token));
    assert_eq!(list_segments(&clean.0).expect("list").len(), 3);

    drop(pool);
    assert_eq!(
        list_segments(&clean.0).expect("list"),
        vec![in_flight.os_id.clone()]
    );
    // Receivers can still open the in-flight sample (its payload and the holder words).
    let size = ShmRegion::open(&in_flight.os_id).expect("open").size();
    assert!(size >= 8192 + crate::HOLDERS_BYTES, "{size}");
}

#[test]
fn an_unsent_sample_outliving_its_pool_is_unlinked() {
    let clean = Cleanup::new("pool-outlive");
    let mut pool = SamplePool::new(clean.0.clone());
    let mut sample = pool_sample(&mut pool, 8192);
    drop(pool);
    sample[0] = 1; // still mapped and writable
    let os_id = sample.os_id().to_owned();
    drop(sample);
    assert!(!segment_path(&os_id).exists());
}

#[test]
fn names_taken_by_leftovers_are_skipped() {
    let clean = Cleanup::new("pool-collide");
    let leftover = ShmRegion::create(&format!("{}0", clean.0), 4096).expect("leftover");
    let mut pool = SamplePool::new(clean.0.clone());
    let sample = pool_sample(&mut pool, 4096);
    assert_eq!(sample.os_id(), format!("{}1", clean.0));
    drop(sample);
    drop(pool);
    // The pool never unlinks a segment it did not create.
    assert_eq!(
        list_segments(&clean.0).expect("list"),
        vec![leftover.os_id().to_owned()]
    );
}

#[test]
fn an_invalid_prefix_is_an_error() {
    let mut pool = SamplePool::new("adora/bad-");
    assert!(matches!(pool.allocate(10), Err(Error::InvalidOsId { .. })));
}

#[test]
fn tokens_are_unique_and_carry_the_process_salt() {
    let clean = Cleanup::new("pool-tokens");
    let mut a = SamplePool::new(format!("{}a-", clean.0));
    let mut b = SamplePool::new(format!("{}b-", clean.0));
    let mut tokens = std::collections::HashSet::new();
    for _ in 0..10 {
        assert!(tokens.insert(sent(&mut a, 10).token));
        assert!(tokens.insert(sent(&mut b, 10).token));
    }
    let salts: std::collections::HashSet<_> = tokens.iter().map(|t| t.0 >> 32).collect();
    assert_eq!(salts.len(), 1, "one salt per process");
}

#[test]
fn zero_length_samples_work() {
    let clean = Cleanup::new("pool-zero");
    let mut pool = SamplePool::new(clean.0.clone());
    let sample = pool_sample(&mut pool, 0);
    assert!(sample.is_empty());
    assert_eq!(&*sample, &[] as &[u8]);
    let handle = pool.send(sample);
    assert_eq!(handle.len, 0);
}

#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SamplePool>();
    assert_send_sync::<SampleMut>();
    assert_send_sync::<ShmRegion>();
    assert_send_sync::<crate::SharedSlice>();
    assert_send_sync::<crate::RegionCache>();
}

#[test]
fn a_sample_held_by_lanes_is_reused_once_every_receiver_released_it_without_the_daemon() {
    let clean = Cleanup::new("pool-lanes");
    let mut pool = SamplePool::new(clean.0.clone());
    let handle = sent(&mut pool, 8192);
    let id = handle.os_id.clone();
    pool.for_output(handle.token, 2);
    for bit in [0, 5] {
        pool.hold_in_lane(handle.token, bit);
        pool.pushed_to_lane(handle.token, (bit, bit), 0);
    }
    pool.lanes_only(handle.token);
    assert_eq!(pool.in_flight(), 1, "two lanes hold it");

    // The receivers release it through their own mappings; the daemon can read who holds it.
    let receiver = ShmRegion::open(&id).expect("receiver open");
    let expected = crate::Holders {
        lanes: 0b100001,
        token: handle.token.0,
        output: Some(2),
    };
    assert_eq!(crate::holders(&receiver), Some(expected));
    crate::release_lane(&receiver, 0);
    assert_eq!(pool.in_flight(), 1, "lane 5 still holds it");
    crate::release_lane(&receiver, 5);
    assert_eq!(pool.in_flight(), 0);
    assert_eq!(pool.allocate(8192).expect("allocate").os_id(), id, "reused");
}

#[test]
fn the_daemon_and_the_lanes_both_release_a_sample_they_share() {
    let clean = Cleanup::new("pool-both");
    let mut pool = SamplePool::new(clean.0.clone());
    let handle = sent(&mut pool, 8192);
    pool.hold_in_lane(handle.token, 1);
    // Not `lanes_only`: the daemon routes it too.
    let receiver = ShmRegion::open(&handle.os_id).expect("receiver open");
    crate::release_lane(&receiver, 1);
    assert_eq!(pool.in_flight(), 1, "the daemon still holds it");
    assert!(pool.release(handle.token));
    assert_eq!(pool.in_flight(), 0);

    // The other order: the daemon first, then the lane.
    let handle = sent(&mut pool, 8192);
    pool.hold_in_lane(handle.token, 1);
    assert!(pool.release(handle.token));
    assert_eq!(pool.in_flight(), 1, "the lane still holds it");
    pool.release_lane(handle.token, 1); // evicted by its full lane
    assert_eq!(pool.in_flight(), 0);
}

#[test]
fn what_an_ended_receiver_took_is_released_and_what_its_lane_still_queues_is_kept() {
    let clean = Cleanup::new("pool-taken");
    let mut pool = SamplePool::new(clean.0.clone());
    let lane = (3, 2); // the node's lane 3, holder bit 2 of its output
    let tokens: Vec<SampleToken> = (0..4)
        .map(|at| {
            let token = sent(&mut pool, 8192).token;
            pool.hold_in_lane(token, lane.1);
            pool.pushed_to_lane(token, lane, at);
            pool.lanes_only(token);
            token
        })
        .collect();
    // Its instance took entries 0..2 and died; 2 and 3 wait for the next instance.
    pool.release_taken(lane.0, 2);
    assert_eq!(pool.in_flight(), 2);
    pool.release_taken(7, u64::MAX); // another lane: nothing
    assert_eq!(pool.in_flight(), 2);
    // Gone for good: everything.
    pool.release_taken(lane.0, u64::MAX);
    assert_eq!(pool.in_flight(), 0);
    assert!(!pool.release(tokens[3]), "no longer in flight");
}
