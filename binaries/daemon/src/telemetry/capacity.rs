//! The machine's capacity and use for resource-aware placement: CPU cores, CPU use of the whole
//! machine from `/proc/stat` deltas between two heartbeats, and the GPU count of
//! `nvidia-smi -L`.
//!
//! CPU use is measured (busy jiffies over all jiffies since the previous sample), not derived
//! from the load average: load counts waiting tasks too, lags a minute behind, and is not bounded
//! by the core count. The first sample measures over [`FIRST_CPU_WINDOW`] so that even the first
//! heartbeat carries a figure.
//!
//! `nvidia-smi` is slow to start on machines without persistence mode and can hang on a wedged
//! driver: it is run at most every [`GPU_PROBE_INTERVAL`], killed after [`GPU_PROBE_TIMEOUT`],
//! and its count is kept in between. It runs on the heartbeat's blocking thread; a heartbeat
//! whose figures take longer than the heartbeat allows goes without them (the coordinator keeps
//! the previous ones), it never waits.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The window of the first CPU measurement (later ones span the heartbeat interval).
pub(crate) const FIRST_CPU_WINDOW: Duration = Duration::from_millis(200);
/// How often `nvidia-smi -L` is run again (GPUs rarely come and go).
pub(crate) const GPU_PROBE_INTERVAL: Duration = Duration::from_secs(300);
/// `nvidia-smi` is killed after this long, and the machine reports no GPU count.
pub(crate) const GPU_PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a running `nvidia-smi` is checked for having exited.
const GPU_PROBE_POLL: Duration = Duration::from_millis(20);

/// Jiffies of the `cpu` line of `/proc/stat`: busy and total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    /// Everything but idle and iowait.
    pub busy: u64,
    /// All fields (guest time is already part of user and nice, so it is left out).
    pub total: u64,
}

/// The aggregate `cpu` line of `/proc/stat`: `user nice system idle iowait irq softirq steal`.
pub(crate) fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if fields.len() < 4 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// Percent of busy time between two readings (`None` when no time passed or the counters went
/// back).
pub(crate) fn cpu_percent(before: CpuTimes, after: CpuTimes) -> Option<f64> {
    let total = after.total.checked_sub(before.total)?;
    let busy = after.busy.checked_sub(before.busy)?;
    (total > 0).then(|| (busy as f64 * 100.0 / total as f64).clamp(0.0, 100.0))
}

/// The number of GPUs in the output of `nvidia-smi -L` (`GPU 0: NVIDIA A100 (UUID: ...)`; MIG
/// devices, indented under their GPU, are not counted).
pub(crate) fn parse_nvidia_smi(text: &str) -> u32 {
    let count = text.lines().filter(|l| l.starts_with("GPU ")).count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// Runs `program -L` and counts its GPUs; `None` when it is missing, fails, or runs longer than
/// `timeout` (then it is killed).
pub(crate) fn probe_gpus(program: &Path, timeout: Duration) -> Option<u32> {
    let mut child = Command::new(program)
        .arg("-L")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(GPU_PROBE_POLL),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    let mut out = String::new();
    child.stdout.take()?.read_to_string(&mut out).ok()?;
    status.success().then(|| parse_nvidia_smi(&out))
}

/// What is kept between two samples: the previous CPU reading and the GPU count.
#[derive(Debug)]
pub(crate) struct CapacitySampler {
    previous_cpu: Option<CpuTimes>,
    /// `nvidia-smi`, looked up on `PATH` when it runs.
    nvidia_smi: PathBuf,
    /// The last GPU count and when it was probed.
    gpus: Option<(Instant, Option<u32>)>,
}

impl Default for CapacitySampler {
    fn default() -> Self {
        Self::with_nvidia_smi("nvidia-smi".into())
    }
}

impl CapacitySampler {
    /// A sampler running `nvidia_smi` for the GPU count.
    pub(crate) fn with_nvidia_smi(nvidia_smi: PathBuf) -> Self {
        Self {
            previous_cpu: None,
            nvidia_smi,
            gpus: None,
        }
    }

    /// CPU use since the previous call (over [`FIRST_CPU_WINDOW`] on the first). Blocking.
    pub(crate) fn cpu_percent(&mut self) -> Option<f64> {
        let read = || {
            std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|t| parse_proc_stat(&t))
        };
        let before = match self.previous_cpu {
            Some(before) => before,
            None => {
                let first = read()?;
                std::thread::sleep(FIRST_CPU_WINDOW);
                first
            }
        };
        let now = read();
        self.previous_cpu = now;
        cpu_percent(before, now?)
    }

    /// The GPU count, probed again when older than [`GPU_PROBE_INTERVAL`]. Blocking.
    pub(crate) fn gpus(&mut self) -> Option<u32> {
        match self.gpus {
            Some((at, count)) if at.elapsed() < GPU_PROBE_INTERVAL => count,
            _ => {
                let count = probe_gpus(&self.nvidia_smi, GPU_PROBE_TIMEOUT);
                self.gpus = Some((Instant::now(), count));
                count
            }
        }
    }
}

/// CPU cores this process may use (affinity and cgroup quota included).
pub(crate) fn cpu_cores() -> Option<u32> {
    std::thread::available_parallelism()
        .ok()
        .and_then(|n| u32::try_from(n.get()).ok())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn proc_stat_deltas_give_the_busy_percent() {
        let before = parse_proc_stat(
            "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\nintr 1\n",
        )
        .expect("a cpu line");
        assert_eq!(
            before,
            CpuTimes {
                busy: 200,
                total: 1000
            }
        );
        let after = parse_proc_stat("cpu  400 0 100 1000 100 0 0 0 0 0\n").expect("a cpu line");
        assert_eq!(cpu_percent(before, after), Some(50.0));
        assert_eq!(cpu_percent(before, before), None, "no time passed");
        assert_eq!(cpu_percent(after, before), None, "counters went back");
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_proc_stat("cpu  x y\n"), None);
    }

    #[test]
    fn nvidia_smi_lines_are_counted() {
        let out =
            "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1)\n  MIG 1g.5gb Device 0: (UUID: MIG-1)\n\
                   GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-2)\n";
        assert_eq!(parse_nvidia_smi(out), 2);
        assert_eq!(parse_nvidia_smi(""), 0);
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    #[test]
    fn gpu_probe_counts_fails_and_times_out_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let two = script(
            dir.path(),
            "two",
            "[ \"$1\" = -L ] || exit 9\necho 'GPU 0: A (UUID: 1)'\necho 'GPU 1: B (UUID: 2)'",
        );
        assert_eq!(probe_gpus(&two, GPU_PROBE_TIMEOUT), Some(2));
        let failing = script(dir.path(), "failing", "echo 'GPU 0: A'\nexit 1");
        assert_eq!(probe_gpus(&failing, GPU_PROBE_TIMEOUT), None);
        assert_eq!(
            probe_gpus(&dir.path().join("absent"), GPU_PROBE_TIMEOUT),
            None
        );
        let hung = script(dir.path(), "hung", "exec sleep 30");
        let started = Instant::now();
        assert_eq!(probe_gpus(&hung, Duration::from_millis(200)), None);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "killed at the timeout"
        );
        // The count is kept between probes.
        let mut sampler = CapacitySampler::with_nvidia_smi(two.clone());
        assert_eq!(sampler.gpus(), Some(2));
        std::fs::remove_file(&two).expect("remove");
        assert_eq!(sampler.gpus(), Some(2));
    }

    #[test]
    fn this_machine_reports_cores_and_cpu_use() {
        assert!(cpu_cores().expect("available_parallelism") >= 1);
        let mut sampler = CapacitySampler::default();
        let first = sampler
            .cpu_percent()
            .expect("the first sample has a figure");
        assert!((0.0..=100.0).contains(&first), "{first}");
        std::thread::sleep(Duration::from_millis(100));
        assert!(sampler.cpu_percent().is_some());
    }
}
