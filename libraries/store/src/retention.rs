//! How long the coordinator remembers what is over: finished dataflows, answered requests and
//! builds. The coordinator applies these limits to its memory and to its [`Store`](crate::Store)
//! alike (at startup and then periodically), so neither grows while it runs.

use std::time::Duration;

/// Finished dataflows kept whatever their age: the latest this many.
pub const KEEP_FINISHED: usize = 100;
/// Finished dataflows kept whatever their number: those that ended within this time.
pub const KEEP_FINISHED_FOR: Duration = Duration::from_secs(24 * 3600);
/// How long answered requests are remembered for retries.
pub const REQUEST_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// At most this many answered requests are remembered (the latest); a retry of an older one runs
/// again.
pub const MAX_ANSWERED_REQUESTS: usize = 10_000;
/// How long builds (`adora build`) are kept for `adora start --build-id`.
pub const BUILD_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Which finished dataflows are kept: the latest `keep_last`, and every one that ended within
/// `keep_for` — whichever keeps more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The latest this many are kept whatever their age.
    pub keep_last: usize,
    /// Those that ended within this time are kept whatever their number.
    pub keep_for: Duration,
}

impl Default for Retention {
    /// The last [`KEEP_FINISHED`] or [`KEEP_FINISHED_FOR`], whichever keeps more.
    fn default() -> Self {
        Self {
            keep_last: KEEP_FINISHED,
            keep_for: KEEP_FINISHED_FOR,
        }
    }
}

impl Retention {
    /// Of the finished items `(key, ended_at_ms)`, the keys to forget at `now_ms`: those neither
    /// among the latest `keep_last` nor younger than `keep_for`.
    pub fn expired<K>(&self, finished: impl IntoIterator<Item = (K, u64)>, now_ms: u64) -> Vec<K> {
        let cutoff = now_ms.saturating_sub(millis(self.keep_for));
        let mut finished: Vec<(K, u64)> = finished.into_iter().collect();
        if finished.len() <= self.keep_last {
            return Vec::new();
        }
        // Newest first; the first `keep_last` stay.
        finished.sort_by_key(|item| std::cmp::Reverse(item.1));
        finished
            .into_iter()
            .skip(self.keep_last)
            .filter(|(_, at)| *at < cutoff)
            .map(|(key, _)| key)
            .collect()
    }
}

/// Of the answered requests `(key, at_ms)`, the keys to forget at `now_ms`: those older than
/// [`REQUEST_RETENTION`] and those beyond the latest [`MAX_ANSWERED_REQUESTS`].
pub fn expired_requests<K>(answered: impl IntoIterator<Item = (K, u64)>, now_ms: u64) -> Vec<K> {
    let cutoff = now_ms.saturating_sub(millis(REQUEST_RETENTION));
    let mut answered: Vec<(K, u64)> = answered.into_iter().collect();
    answered.sort_by_key(|item| std::cmp::Reverse(item.1));
    answered
        .into_iter()
        .enumerate()
        .filter(|(i, (_, at))| *i >= MAX_ANSWERED_REQUESTS || *at < cutoff)
        .map(|(_, (key, _))| key)
        .collect()
}

/// Whether a build completed at `created_at_ms` has expired at `now_ms` ([`BUILD_RETENTION`]).
pub fn build_expired(created_at_ms: u64, now_ms: u64) -> bool {
    created_at_ms < now_ms.saturating_sub(millis(BUILD_RETENTION))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: u64 = 3600 * 1000;

    #[test]
    fn finished_dataflows_are_kept_by_count_or_by_age_whichever_keeps_more() {
        let retention = Retention {
            keep_last: 2,
            keep_for: Duration::from_secs(3600),
        };
        let now = 100 * HOUR_MS;
        // Five ended 10, 20, 30, 40, 50 hours ago: only the latest two stay.
        let old: Vec<(u32, u64)> = (1..=5)
            .map(|i| (i, now - 10 * HOUR_MS * i as u64))
            .collect();
        let mut gone = retention.expired(old.clone(), now);
        gone.sort();
        assert_eq!(gone, vec![3, 4, 5]);
        // Five ended within the hour: all stay, whatever the count.
        let recent: Vec<(u32, u64)> = (1..=5).map(|i| (i, now - 60_000 * i as u64)).collect();
        assert!(retention.expired(recent, now).is_empty());
        // Fewer than the count: nothing goes, however old.
        assert!(retention.expired(old[..2].to_vec(), now).is_empty());
    }

    #[test]
    fn answered_requests_are_bounded_by_age_and_by_count() {
        let now = 100 * HOUR_MS;
        let aged = [(1, now - 25 * HOUR_MS), (2, now - HOUR_MS)];
        assert_eq!(expired_requests(aged, now), vec![1]);
        let many = (0..MAX_ANSWERED_REQUESTS as u64 + 3).map(|i| (i, now - i));
        let mut gone = expired_requests(many, now);
        gone.sort();
        let n = MAX_ANSWERED_REQUESTS as u64;
        assert_eq!(gone, vec![n, n + 1, n + 2]);
    }

    #[test]
    fn builds_expire_after_a_week() {
        let now = 1000 * HOUR_MS;
        assert!(!build_expired(now - 24 * HOUR_MS, now));
        assert!(build_expired(now - 8 * 24 * HOUR_MS, now));
    }
}
