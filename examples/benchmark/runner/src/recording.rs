//! `adora-bench --record`: the same-daemon phases again with a recorder attached (`adora run
//! --record`: a lossless tap in the daemon, or a lossy one with `--record-lossy`, the MCAP writer
//! in the `adora run` process, zstd chunks), compared with the run without: p50 and msgs/s per
//! size, and what the recorder wrote (and dropped).

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader},
    path::Path,
    process::Stdio,
};

use anyhow::{bail, Context};
use benchmark_common::{format_size, Plan, Report};

use crate::report::Results;

/// Row label of the recorded run.
pub const LABEL: &str = "same-daemon+record";

/// What `adora run --record` said it wrote: its line `recorded N message(s), X MiB in Ys (Z
/// MiB/s) into FILE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorder {
    /// Messages written.
    pub messages: u64,
    /// Payload MiB written.
    pub mib: f64,
    /// Over the whole run (latency phases included).
    pub mib_per_s: f64,
    /// The file's size on disk, MiB (after compression).
    pub file_mib: f64,
    /// Lossy: messages dropped (`None` when lossless).
    pub dropped: Option<u64>,
}

/// The recorded run: the sink's reports and the recorder's figures.
pub struct Recorded {
    /// The sink's reports.
    pub reports: Vec<Report>,
    /// The recorder's figures.
    pub recorder: Recorder,
}

/// Runs the same-daemon dataflow with `--record file` (and `--lossy`).
pub fn run(
    adora: &Path,
    dataflow: &Path,
    plan: &Plan,
    file: &Path,
    lossy: bool,
) -> anyhow::Result<Recorded> {
    let mut command = crate::adora_run_command(adora, dataflow, plan);
    command.arg("--record").arg(file).stderr(Stdio::piped());
    if lossy {
        command.arg("--lossy");
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {} (build it first)", adora.display()))?;
    let stdout = child.stdout.take().context("adora's stdout is piped")?;
    let stderr = child.stderr.take().context("adora's stderr is piped")?;
    let lines = std::thread::spawn(move || {
        let (mut recorded, mut dropped) = (None, 0);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            recorded = recorded.or_else(|| parse_recorded(&line));
            dropped += parse_dropped(&line).unwrap_or(0);
        }
        recorded.map(|r| Recorder {
            dropped: lossy.then_some(dropped),
            ..r
        })
    });
    let reports = crate::collect_reports(stdout)?;
    let status = child.wait()?;
    let recorded = lines.join().ok().flatten();
    if !status.success() {
        bail!("`adora run --record` failed ({status})");
    }
    let mut recorder = recorded.context("`adora run --record` printed no `recorded ...` line")?;
    recorder.file_mib = std::fs::metadata(file).map_or(0.0, |m| m.len() as f64 / 1048576.0);
    let _ = std::fs::remove_file(file);
    Ok(Recorded { reports, recorder })
}

/// Reads `recorded 1200 message(s), 40.5 MiB in 3.2s (12.7 MiB/s) into ...`.
fn parse_recorded(line: &str) -> Option<Recorder> {
    let rest = line.strip_prefix("recorded ")?;
    let (messages, rest) = rest.split_once(" message(s), ")?;
    let (mib, rest) = rest.split_once(" MiB in ")?;
    let (_, rest) = rest.split_once(" (")?;
    let (rate, _) = rest.split_once(" MiB/s)")?;
    Some(Recorder {
        messages: messages.parse().ok()?,
        mib: mib.parse().ok()?,
        mib_per_s: rate.parse().ok()?,
        file_mib: 0.0,
        dropped: None,
    })
}

/// Reads `dropped: 12 message(s) of sender/data (--lossy)`.
fn parse_dropped(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("dropped: ")?;
    let (count, _) = rest.split_once(" message(s) of ")?;
    count.parse().ok()
}

/// The with/without table.
pub fn compare(results: &Results, plan: &Plan, recorder: &Recorder) -> String {
    let kind = match recorder.dropped {
        Some(_) => "lossy",
        None => "lossless",
    };
    let mut out = format!(
        "\nrecording: same-daemon with a recorder attached (adora run --record, {kind}, zstd) / without\n"
    );
    let _ = writeln!(
        out,
        "{:>8}  {:>10} {:>10} {:>7}  {:>10} {:>10} {:>7}  {:>14}",
        "size", "p50 µs", "+record", "ratio", "msgs/s", "+record", "ratio", "rec. MiB/s"
    );
    for &size in &plan.sizes {
        let (Some(plain), Some(recorded)) =
            (results.row("same-daemon", size), results.row(LABEL, size))
        else {
            continue;
        };
        let p50 = |r: &crate::report::Row| r.latency.map(|l| l.p50 as f64 / 1000.0);
        let (a, b) = (p50(&plain), p50(&recorded));
        let (c, d) = (plain.msgs_per_s, recorded.msgs_per_s);
        let num = |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
        let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) if x > 0.0 => format!("{:.2}x", y / x),
            _ => "-".into(),
        };
        // Lossless: during the throughput phase the recorder wrote every message the sink got.
        // Lossy: not known per phase (see the drops below).
        let written = d
            .filter(|_| recorder.dropped.is_none())
            .map(|m| m * size as f64 / 1048576.0);
        let _ = writeln!(
            out,
            "{:>8}  {:>10} {:>10} {:>7}  {:>10} {:>10} {:>7}  {:>14}",
            format_size(size),
            num(a, 1),
            num(b, 1),
            ratio(a, b),
            num(c, 0),
            num(d, 0),
            ratio(c, d),
            num(written, 1),
        );
    }
    let _ = writeln!(
        out,
        "recorder: {} message(s), {:.1} MiB of payload in the whole run ({:.1} MiB/s on average, idle latency phases included); file {:.1} MiB",
        recorder.messages, recorder.mib, recorder.mib_per_s, recorder.file_mib
    );
    if let Some(dropped) = recorder.dropped {
        let _ = writeln!(out, "recorder dropped {dropped} message(s) (lossy)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorder_line_is_read() {
        let line = "recorded 1200 message(s), 40.5 MiB in 3.2s (12.7 MiB/s) into /tmp/x.mcap";
        let recorder = parse_recorded(line).expect("parses");
        assert_eq!(recorder.messages, 1200);
        assert_eq!(recorder.mib, 40.5);
        assert_eq!(recorder.mib_per_s, 12.7);
        assert!(parse_recorded("dropped: none").is_none());
        assert_eq!(
            parse_dropped("dropped: 12 message(s) of sender/data (--lossy)"),
            Some(12)
        );
        assert_eq!(parse_dropped("dropped: none"), None);
    }
}
