//! CPU, memory and uptime of node processes, read from `/proc` (Linux).
//!
//! Reading `/proc/<pid>/stat` and `/proc/<pid>/statm` ourselves is a few dozen lines; the
//! `sysinfo` crate would do the same on Linux at the cost of a large dependency, and the daemon
//! is Linux-only anyway (process groups, `PR_SET_PDEATHSIG`, `/dev/shm`). On other systems every
//! figure is zero.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// Process figures at one sampling.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ProcessFigures {
    /// CPU use since the previous sample of this pid (since the process started on the first
    /// sample), in percent of one core.
    pub cpu_percent: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// Time since the process started.
    pub uptime: Duration,
}

/// Samples processes; remembers each pid's CPU time to compute the CPU use between samples.
#[derive(Debug)]
pub(crate) struct ProcessSampler {
    previous: HashMap<u32, (f64, Instant)>,
    ticks_per_sec: f64,
    page_size: u64,
}

impl Default for ProcessSampler {
    fn default() -> Self {
        use nix::unistd::{sysconf, SysconfVar};
        let ticks = sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
        let page = sysconf(SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096);
        Self {
            previous: HashMap::new(),
            ticks_per_sec: ticks.max(1) as f64,
            page_size: page.max(1) as u64,
        }
    }
}

/// The fields of `/proc/<pid>/stat` we need, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StatLine {
    /// User + system CPU time.
    cpu_secs: f64,
    /// Start time after boot.
    start_secs: f64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may contain
/// spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat(text: &str, ticks_per_sec: f64) -> Option<StatLine> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name, fields[0] is field 3 (state): utime is field 14, stime 15, starttime 22.
    let num = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(StatLine {
        cpu_secs: (num(11)? + num(12)?) as f64 / ticks_per_sec,
        start_secs: num(19)? as f64 / ticks_per_sec,
    })
}

impl ProcessSampler {
    /// Figures of one process, or `None` when it is gone.
    pub fn sample(&mut self, pid: u32) -> Option<ProcessFigures> {
        let now = Instant::now();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let stat = parse_stat(&stat, self.ticks_per_sec)?;
        let rss_pages = std::fs::read_to_string(format!("/proc/{pid}/statm"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
        let boot_uptime = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        let uptime_secs = (boot_uptime - stat.start_secs).max(0.0);
        let cpu_percent = match self.previous.insert(pid, (stat.cpu_secs, now)) {
            Some((cpu, at)) if now > at => {
                (stat.cpu_secs - cpu).max(0.0) / (now - at).as_secs_f64() * 100.0
            }
            _ if uptime_secs > 0.0 => stat.cpu_secs / uptime_secs * 100.0,
            _ => 0.0,
        };
        Some(ProcessFigures {
            cpu_percent,
            rss_bytes: rss_pages * self.page_size,
            uptime: Duration::from_secs_f64(uptime_secs),
        })
    }

    /// Forgets pids not in `alive` (exited processes; pids are reused).
    pub fn retain(&mut self, alive: &[u32]) {
        self.previous.retain(|pid, _| alive.contains(pid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_a_tricky_name() {
        let line = "1234 (my node) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 5000 1000000 300 18446744073709551615";
        let stat = parse_stat(line, 100.0).expect("parses");
        assert_eq!(stat.cpu_secs, 3.0);
        assert_eq!(stat.start_secs, 50.0);
        assert_eq!(parse_stat("garbage", 100.0), None);
    }

    #[test]
    fn samples_a_busy_process() {
        let mut sampler = ProcessSampler::default();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        let me = std::process::id();
        let first = sampler.sample(me).expect("this process exists");
        assert!(first.rss_bytes > 0, "{first:?}");
        assert!(first.cpu_percent > 0.0, "{first:?}");
        sampler.retain(&[]);
        assert!(sampler.previous.is_empty());
        assert_eq!(sampler.sample(u32::MAX), None);
    }
}
