//! The machine's figures sent with every heartbeat (`adora cluster status`, placement): OS,
//! kernel, architecture, uptime, load, memory and free disk, read from `/etc/os-release` and
//! `/proc` (Linux) like [`crate::process_stats`]; CPU cores, CPU use and GPUs in [`capacity`]. A figure that cannot be read is left out, never an
//! error: telemetry must not break the heartbeat.
//!
//! Parsing is separate from reading so that the parsers are tested on fixed text.

use std::path::Path;

use adora_message::stats::MachineTelemetry;

pub(crate) mod capacity;

pub(crate) use capacity::CapacitySampler;

/// Where the OS name comes from (`PRETTY_NAME`), see os-release(5).
const OS_RELEASE: &str = "/etc/os-release";
/// The fallback of [`OS_RELEASE`] named by os-release(5).
const OS_RELEASE_FALLBACK: &str = "/usr/lib/os-release";

/// Reads the machine's figures now; `state_dir` is the directory whose file system's free space
/// is reported (the nearest existing ancestor when it does not exist yet); `capacity` keeps the
/// CPU reading and GPU count between heartbeats. Blocking: call it off the runtime.
pub(crate) fn sample(state_dir: &Path, capacity: &mut CapacitySampler) -> MachineTelemetry {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let os = read(OS_RELEASE)
        .or_else(|| read(OS_RELEASE_FALLBACK))
        .and_then(|text| parse_os_release(&text))
        .unwrap_or_default();
    let kernel = read("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    let memory = read("/proc/meminfo").map(|text| parse_meminfo(&text));
    MachineTelemetry {
        adora_version: adora_message::ADORA_VERSION.to_owned(),
        os,
        kernel,
        arch: std::env::consts::ARCH.to_owned(),
        uptime_secs: read("/proc/uptime").and_then(|text| parse_uptime(&text)),
        load: read("/proc/loadavg").and_then(|text| parse_loadavg(&text)),
        memory_total_bytes: memory.and_then(|m| m.total),
        memory_available_bytes: memory.and_then(|m| m.available),
        disk_free_bytes: disk_free(state_dir),
        cpus: capacity::cpu_cores(),
        cpu_percent: capacity.cpu_percent(),
        gpus: capacity.gpus(),
    }
}

/// `PRETTY_NAME` of an os-release file, unquoted; `NAME` when there is no pretty name.
pub(crate) fn parse_os_release(text: &str) -> Option<String> {
    let value = |key: &str| {
        text.lines().find_map(|line| {
            let rest = line.trim().strip_prefix(key)?.strip_prefix('=')?;
            let unquoted = rest
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .or_else(|| rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
                .unwrap_or(rest);
            Some(unquoted.replace("\\\"", "\"").replace("\\\\", "\\"))
        })
    };
    value("PRETTY_NAME")
        .or_else(|| value("NAME"))
        .filter(|v| !v.is_empty())
}

/// Whole seconds since boot: the first field of `/proc/uptime`.
pub(crate) fn parse_uptime(text: &str) -> Option<u64> {
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then_some(secs as u64)
}

/// The 1, 5 and 15 minute load averages: the first three fields of `/proc/loadavg`.
pub(crate) fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    let mut next = || fields.next()?.ok();
    Some([next()?, next()?, next()?])
}

/// Total and available memory in bytes, from `/proc/meminfo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Memory {
    /// `MemTotal`.
    pub total: Option<u64>,
    /// `MemAvailable`.
    pub available: Option<u64>,
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo` (given in kB, that is KiB) in bytes.
pub(crate) fn parse_meminfo(text: &str) -> Memory {
    let bytes = |key: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            let mut parts = rest.split_whitespace();
            let value: u64 = parts.next()?.parse().ok()?;
            match parts.next() {
                Some("kB") => value.checked_mul(1024),
                None => Some(value),
                Some(_) => None,
            }
        })
    };
    Memory {
        total: bytes("MemTotal"),
        available: bytes("MemAvailable"),
    }
}

/// Bytes available to unprivileged users on the file system holding `dir` (or its nearest
/// existing ancestor).
fn disk_free(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let stat = nix::sys::statvfs::statvfs(existing).ok()?;
    // `fsblkcnt_t` and `c_ulong` are 32 bits on some targets, 64 on this one.
    #[allow(clippy::useless_conversion)]
    u64::from(stat.blocks_available()).checked_mul(u64::from(stat.fragment_size()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_pretty_name_unquoted() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
                      VERSION_ID=\"12\"\nID=debian\n";
        assert_eq!(
            parse_os_release(debian).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            parse_os_release("NAME='Alpine Linux'\nID=alpine\n").as_deref(),
            Some("Alpine Linux")
        );
        assert_eq!(parse_os_release("NAME=NixOS\n").as_deref(), Some("NixOS"));
        assert_eq!(
            parse_os_release("PRETTY_NAME=\"A \\\"quoted\\\" name\"\n").as_deref(),
            Some("A \"quoted\" name")
        );
        // `PRETTY_NAME_X` is another key, not `PRETTY_NAME`.
        assert_eq!(parse_os_release("PRETTY_NAME_X=no\nID=x\n"), None);
        assert_eq!(parse_os_release(""), None);
    }

    #[test]
    fn uptime_and_load() {
        assert_eq!(parse_uptime("35321.17 139212.88\n"), Some(35321));
        assert_eq!(parse_uptime("garbage"), None);
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 2/1012 123456\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(parse_loadavg("0.52 0.58\n"), None);
    }

    #[test]
    fn meminfo_in_bytes() {
        let text = "MemTotal:       16303852 kB\nMemFree:         1049332 kB\n\
                    MemAvailable:    9876543 kB\nBuffers:          123456 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Memory {
                total: Some(16_303_852 * 1024),
                available: Some(9_876_543 * 1024),
            }
        );
        // An old kernel without `MemAvailable`.
        assert_eq!(
            parse_meminfo("MemTotal: 1024 kB\n"),
            Memory {
                total: Some(1024 * 1024),
                available: None,
            }
        );
    }

    #[test]
    fn sampling_this_machine_reads_every_figure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut capacity = CapacitySampler::default();
        let figures = sample(&dir.path().join("not/yet/created"), &mut capacity);
        assert_eq!(figures.adora_version, adora_message::ADORA_VERSION);
        assert!(!figures.kernel.is_empty());
        assert!(figures.uptime_secs.is_some());
        assert!(figures.load.is_some());
        let total = figures.memory_total_bytes.expect("MemTotal");
        assert!(figures.memory_available_bytes.expect("MemAvailable") <= total);
        assert!(figures.disk_free_bytes.expect("statvfs") > 0);
        assert!(figures.cpus.expect("cores") >= 1);
        assert!(figures.cpu_percent.is_some());
    }
}
