//! Node restart policies: whether, and after how long, a node that exited is started again.
//!
//! - `never` (default): never.
//! - `on-failure`: after a non-zero exit or a signal.
//! - `always`: after any exit, unless the dataflow is stopping.
//!
//! At most `max_restarts` restarts within `restart_window` (over the node's whole life when no
//! window is set). The delay before a restart starts at `restart_delay` and doubles with each
//! restart counted in the window, up to `max_restart_delay`.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use adora_core::descriptor::{NodeSpec, RestartPolicy};

/// Delay before the first restart when `restart_delay` is not set.
pub const DEFAULT_RESTART_DELAY: Duration = Duration::from_millis(500);
/// Upper bound of the doubling delay when `max_restart_delay` is not set.
pub const DEFAULT_MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// What to do after a node exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartDecision {
    /// Leave it stopped: the policy does not ask for a restart.
    Stay,
    /// Start it again after `after`; this is restart number `attempt` (1-based, lifetime count).
    Restart {
        /// Delay before the restart.
        after: Duration,
        /// Lifetime restart count including this one.
        attempt: u32,
    },
    /// The policy asked for a restart but the limit is reached: the node failed for good.
    GiveUp {
        /// Why, for logs and `adora list`.
        reason: String,
    },
}

/// Restart bookkeeping of one node.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    max_restarts: Option<u32>,
    window: Option<Duration>,
    base_delay: Duration,
    max_delay: Duration,
    recent: VecDeque<Instant>,
    total: u32,
}

impl RestartTracker {
    /// The tracker of a node as configured in its descriptor.
    pub fn new(spec: &NodeSpec) -> Self {
        let base_delay = spec
            .restart_delay
            .map(|d| d.0)
            .unwrap_or(DEFAULT_RESTART_DELAY);
        Self {
            policy: spec.restart_policy,
            max_restarts: spec.max_restarts,
            window: spec.restart_window.map(|d| d.0),
            base_delay,
            max_delay: spec
                .max_restart_delay
                .map(|d| d.0)
                .unwrap_or(DEFAULT_MAX_RESTART_DELAY)
                .max(base_delay),
            recent: VecDeque::new(),
            total: 0,
        }
    }

    /// Restarts so far over the node's life.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Decides after an exit at `now`. `failed`: non-zero status or signal; `stopping`: the
    /// dataflow is being stopped (then nothing restarts).
    pub fn on_exit(&mut self, failed: bool, stopping: bool, now: Instant) -> RestartDecision {
        let wanted = match self.policy {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Always => true,
        };
        if !wanted || stopping {
            return RestartDecision::Stay;
        }
        if let Some(window) = self.window {
            while self
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) > window)
            {
                self.recent.pop_front();
            }
        }
        let counted = self.recent.len() as u32;
        if let Some(max) = self.max_restarts {
            if counted >= max {
                let within = match self.window {
                    Some(w) => format!(" within {}", humantime::format_duration(w)),
                    None => String::new(),
                };
                return RestartDecision::GiveUp {
                    reason: format!(
                        "restarted {counted} time{}{within}; max_restarts is {max}",
                        if counted == 1 { "" } else { "s" }
                    ),
                };
            }
        }
        let factor = 2u32.saturating_pow(counted.min(31));
        let after = self.base_delay.saturating_mul(factor).min(self.max_delay);
        self.recent.push_back(now);
        self.total += 1;
        RestartDecision::Restart {
            after,
            attempt: self.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn tracker(fields: &str) -> RestartTracker {
        let yaml = format!("nodes:\n  - id: n\n    path: n\n{fields}");
        let d = adora_core::Descriptor::parse(&yaml, Path::new("t.yml")).expect("valid");
        RestartTracker::new(&d.nodes[0])
    }

    fn delays(decisions: &[RestartDecision]) -> Vec<u64> {
        decisions
            .iter()
            .map(|d| match d {
                RestartDecision::Restart { after, .. } => after.as_millis() as u64,
                other => panic!("expected a restart, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn never_does_not_restart() {
        let mut t = tracker("");
        assert_eq!(
            t.on_exit(true, false, Instant::now()),
            RestartDecision::Stay
        );
    }

    #[test]
    fn on_failure_restarts_failures_only_up_to_max_restarts() {
        let mut t = tracker(
            "    restart_policy: on-failure\n    max_restarts: 2\n    restart_delay: 100ms\n",
        );
        let now = Instant::now();
        assert_eq!(
            t.on_exit(false, false, now),
            RestartDecision::Stay,
            "clean exit stays down"
        );
        let first = t.on_exit(true, false, now);
        let second = t.on_exit(true, false, now);
        assert_eq!(delays(&[first, second]), vec![100, 200]);
        match t.on_exit(true, false, now) {
            RestartDecision::GiveUp { reason } => {
                assert_eq!(reason, "restarted 2 times; max_restarts is 2")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.total(), 2);
    }

    #[test]
    fn always_restarts_clean_exits_but_not_while_stopping() {
        let mut t = tracker("    restart_policy: always\n    restart_delay: 10ms\n");
        let now = Instant::now();
        assert!(matches!(
            t.on_exit(false, false, now),
            RestartDecision::Restart { attempt: 1, .. }
        ));
        assert!(matches!(
            t.on_exit(true, false, now),
            RestartDecision::Restart { attempt: 2, .. }
        ));
        assert_eq!(t.on_exit(false, true, now), RestartDecision::Stay);
    }

    #[test]
    fn delay_doubles_up_to_the_maximum() {
        let mut t = tracker(
            "    restart_policy: always\n    restart_delay: 1s\n    max_restart_delay: 5s\n",
        );
        let now = Instant::now();
        let d: Vec<_> = (0..5).map(|_| t.on_exit(true, false, now)).collect();
        assert_eq!(delays(&d), vec![1000, 2000, 4000, 5000, 5000]);
    }

    #[test]
    fn window_forgets_old_restarts_and_resets_the_delay() {
        let mut t = tracker("    restart_policy: on-failure\n    max_restarts: 2\n    restart_window: 10s\n    restart_delay: 1s\n");
        let start = Instant::now();
        let d = vec![
            t.on_exit(true, false, start),
            t.on_exit(true, false, start + Duration::from_secs(1)),
        ];
        assert_eq!(delays(&d), vec![1000, 2000]);
        assert!(matches!(
            t.on_exit(true, false, start + Duration::from_secs(2)),
            RestartDecision::GiveUp { .. }
        ));
        // 20 s later both restarts left the window: allowed again, with the base delay.
        let later = t.on_exit(true, false, start + Duration::from_secs(22));
        assert_eq!(delays(&[later]), vec![1000]);
        assert_eq!(t.total(), 3);
    }
}
