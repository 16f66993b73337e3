//! Built-in timer inputs: `adora/timer/millis/N`, `adora/timer/secs/N`, `adora/timer/hz/F`
//! (`dora/timer/...` is accepted as an alias so existing dataflows port unchanged).

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

/// The shortest timer interval accepted (guards against a `hz/1e9` busy loop).
pub const MIN_TIMER_INTERVAL: Duration = Duration::from_micros(100);

/// The longest timer interval accepted (30 days): far beyond any real tick, and small enough that
/// no deadline computed from it can overflow.
pub const MAX_TIMER_INTERVAL: Duration = Duration::from_secs(30 * 24 * 3600);

/// A parsed timer source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimerSpec {
    /// Tick interval.
    pub interval: Duration,
}

impl TimerSpec {
    /// Returns `None` when `source` is not a timer at all, `Some(Err)` when it is a malformed
    /// timer, and `Some(Ok)` for a valid one.
    pub fn parse_source(source: &str) -> Option<Result<Self, String>> {
        let rest = source
            .strip_prefix("adora/timer/")
            .or_else(|| source.strip_prefix("dora/timer/"));
        let rest = match rest {
            Some(rest) => rest,
            None if source == "adora/timer" || source == "dora/timer" => "",
            None => return None,
        };
        Some(Self::parse_rest(source, rest))
    }

    fn parse_rest(source: &str, rest: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid timer `{source}`: {why} (expected adora/timer/millis/N, adora/timer/secs/N or adora/timer/hz/F)"
            )
        };
        let (unit, value) = rest
            .split_once('/')
            .ok_or_else(|| bad("missing unit or value"))?;
        let interval = match unit {
            "millis" | "secs" => {
                let n: u64 = value
                    .parse()
                    .map_err(|_| bad(&format!("`{value}` is not a positive integer")))?;
                if n == 0 {
                    return Err(bad("the interval must be greater than zero"));
                }
                if unit == "millis" {
                    Duration::from_millis(n)
                } else {
                    Duration::from_secs(n)
                }
            }
            "hz" => {
                let f: f64 = value
                    .parse()
                    .map_err(|_| bad(&format!("`{value}` is not a number")))?;
                if !(f.is_finite() && f > 0.0) {
                    return Err(bad("the frequency must be a positive number"));
                }
                // A tiny frequency is an interval too long for a `Duration`: said below.
                Duration::try_from_secs_f64(1.0 / f).unwrap_or(Duration::MAX)
            }
            other => return Err(bad(&format!("unknown unit `{other}`"))),
        };
        if interval < MIN_TIMER_INTERVAL {
            return Err(bad(&format!(
                "interval {interval:?} is below the minimum of {MIN_TIMER_INTERVAL:?}"
            )));
        }
        if interval > MAX_TIMER_INTERVAL {
            return Err(bad("the interval is longer than the maximum of 30 days"));
        }
        Ok(TimerSpec { interval })
    }
}

impl fmt::Display for TimerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.interval.as_millis();
        if self.interval.subsec_nanos().is_multiple_of(1_000_000) {
            if ms.is_multiple_of(1000) {
                write!(f, "adora/timer/secs/{}", ms / 1000)
            } else {
                write!(f, "adora/timer/millis/{ms}")
            }
        } else {
            write!(f, "adora/timer/hz/{}", 1.0 / self.interval.as_secs_f64())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_alias() {
        let t = |s: &str| TimerSpec::parse_source(s).expect("is a timer");
        assert_eq!(
            t("adora/timer/millis/20"),
            Ok(TimerSpec {
                interval: Duration::from_millis(20)
            })
        );
        assert_eq!(
            t("dora/timer/secs/2"),
            Ok(TimerSpec {
                interval: Duration::from_secs(2)
            })
        );
        assert_eq!(
            t("adora/timer/hz/50"),
            Ok(TimerSpec {
                interval: Duration::from_millis(20)
            })
        );
        assert!(t("adora/timer/millis/0").is_err());
        assert!(t("adora/timer/millis/abc").is_err());
        assert!(t("adora/timer/weeks/1").is_err());
        assert!(t("adora/timer/hz/-1").is_err());
        // Hostile numbers are errors, never a panic or an overflow later.
        for source in [
            "adora/timer/hz/1e-300",
            "adora/timer/hz/5e-324",
            "adora/timer/secs/18446744073709551615",
            "adora/timer/millis/18446744073709551615",
            "adora/timer/secs/2592001",
        ] {
            let err = t(source).expect_err(source);
            assert!(err.contains("maximum of 30 days"), "{source}: {err}");
        }
        assert!(t("adora/timer/secs/2592000").is_ok());
        assert!(t("adora/timer").is_err());
        assert!(TimerSpec::parse_source("camera/frames").is_none());
    }
}
