//! Delays between attempts of something that failed and is tried again: a daemon reconnecting to
//! its coordinator, a CLI request retried while the coordinator restarts, the coordinator
//! re-spawning the nodes of a restarted daemon. One type, so every retry loop in Adora reads the
//! same and its delays are tested once.

use std::time::Duration;

use rand::Rng;

/// The delays of a retry loop: [`Backoff::exponential`] (doubling, with jitter) or
/// [`Backoff::constant`]. Ask [`Backoff::next_delay`] before each new attempt;
/// [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    jitter: bool,
    next: Duration,
}

impl Backoff {
    /// Exponential backoff with jitter: each delay is drawn from `[d/2, d]`, `d` starting at
    /// `first` and doubling up to `max`. Jitter keeps many clients that lost the same server from
    /// reconnecting in lockstep.
    pub fn exponential(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
            jitter: true,
            next: first,
        }
    }

    /// The same `delay` before every attempt.
    pub fn constant(delay: Duration) -> Self {
        Self {
            first: delay,
            max: delay,
            jitter: false,
            next: delay,
        }
    }

    /// The delay to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        if !self.jitter {
            return d;
        }
        let half = d / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    /// Starts over from the first delay (after an attempt succeeded).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon's reconnect delays.
    const RECONNECT_MIN: Duration = Duration::from_millis(500);
    const RECONNECT_MAX: Duration = Duration::from_secs(30);

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let mut b = Backoff::exponential(RECONNECT_MIN, RECONNECT_MAX);
        let first = b.next_delay();
        assert!(first >= RECONNECT_MIN / 2 && first <= RECONNECT_MIN);
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= RECONNECT_MAX, "{d:?}");
        }
        let capped = b.next_delay();
        assert!(capped >= RECONNECT_MAX / 2, "{capped:?}");
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::exponential(RECONNECT_MIN, RECONNECT_MAX);
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= RECONNECT_MIN);
    }

    #[test]
    fn constant_backoff_never_changes() {
        let pause = Duration::from_millis(500);
        let mut b = Backoff::constant(pause);
        for _ in 0..5 {
            assert_eq!(b.next_delay(), pause);
        }
    }
}
