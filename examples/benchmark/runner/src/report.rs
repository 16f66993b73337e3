//! Collected results: the machine header, the table, the CSV and the comparison with the targets.

use std::fmt::Write as _;

use benchmark_common::{format_size, Phase, Plan, Report, Summary};

use crate::python::{PYTHON, RUST_TO_PYTHON};

/// CPU model and logical core count, from `/proc/cpuinfo`.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `model name` of the first processor.
    pub cpu: String,
    /// Number of `processor` entries.
    pub cores: usize,
}

impl Machine {
    /// Reads `/proc/cpuinfo` (falls back to `unknown` and the available parallelism).
    pub fn detect() -> Self {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |line: &str, name: &str| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        };
        let cpu = info
            .lines()
            .find_map(|l| field(l, "model name"))
            .unwrap_or_else(|| "unknown".into());
        let cores = info
            .lines()
            .filter(|l| field(l, "processor").is_some())
            .count();
        let cores = if cores > 0 {
            cores
        } else {
            std::thread::available_parallelism().map_or(0, |n| n.get())
        };
        Machine { cpu, cores }
    }
}

/// One table row: a transport at one size.
#[derive(Debug, Clone, Default)]
pub(crate) struct Row {
    pub latency: Option<Summary>,
    pub msgs_per_s: Option<f64>,
    pub mib_per_s: Option<f64>,
    sent: u64,
    received: u64,
    bad: u64,
}

/// Every report of a run, by transport (`raw`, `same-daemon`, ...).
#[derive(Debug)]
pub struct Results {
    machine: Machine,
    plan: Plan,
    /// How many times each transport was measured (`--rounds`).
    rounds: u16,
    transports: Vec<(String, Vec<Report>)>,
    /// Cross-machine placements measured with their baselines (`<label> zenoh`, `<label> tcp`).
    networks: Vec<String>,
}

/// Row label of Rust → Rust on one daemon, the reference of the Python rows.
const RUST: &str = "same-daemon";
/// The target: Python → Python p50 at most this many times Rust → Rust p50...
const PYTHON_TARGET: f64 = 1.5;
/// ...at these sizes.
const PYTHON_TARGET_SIZES: [usize; 3] = [8, 4 << 10, 4 << 20];

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl Results {
    /// No results yet; each transport will be measured `rounds` times.
    pub fn new(machine: Machine, plan: Plan, rounds: u16) -> Self {
        Results {
            machine,
            plan,
            rounds,
            transports: Vec::new(),
            networks: Vec::new(),
        }
    }

    /// Adds the reports of one transport (of one more round, if it has some already).
    pub fn add(&mut self, transport: &str, reports: Vec<Report>) {
        match self.transports.iter_mut().find(|(t, _)| t == transport) {
            Some((_, kept)) => kept.extend(reports),
            None => self.transports.push((transport.to_owned(), reports)),
        }
    }

    /// Adds a cross-machine placement and its baselines, compared in [`Self::network`].
    pub fn add_network(&mut self, label: &str, measured: crate::distributed::Measured) {
        self.add(label, measured.adora);
        if !measured.zenoh.is_empty() {
            self.add(&format!("{label} zenoh"), measured.zenoh);
            self.add(&format!("{label} tcp"), measured.tcp);
            if !self.networks.iter().any(|n| n == label) {
                self.networks.push(label.to_owned()); // once, however many rounds
            }
        }
    }

    /// The figures of `transport` at `size`, if measured; over several rounds, each figure's
    /// median (and the sums of the message counts).
    pub(crate) fn row(&self, transport: &str, size: usize) -> Option<Row> {
        let (_, reports) = self.transports.iter().find(|(t, _)| t == transport)?;
        let mut row = Row::default();
        let mut found = false;
        let (mut latencies, mut msgs, mut mib) = (Vec::new(), Vec::new(), Vec::new());
        for r in reports.iter().filter(|r| r.size == size) {
            found = true;
            row.bad += r.bad;
            match r.phase {
                Phase::Latency => latencies.extend(r.latency_ns),
                Phase::Throughput => {
                    msgs.extend(r.msgs_per_s);
                    mib.extend(r.mib_per_s);
                    row.sent += r.sent;
                    row.received += r.received;
                }
            }
        }
        row.latency = median_summary(&latencies);
        row.msgs_per_s = median(msgs);
        row.mib_per_s = median(mib);
        found.then_some(row)
    }

    fn ratios(&self, transport: &str, size: usize) -> (Option<f64>, Option<f64>) {
        if transport == "raw" {
            return (None, None);
        }
        let (Some(row), Some(raw)) = (self.row(transport, size), self.row("raw", size)) else {
            return (None, None);
        };
        let p50 = match (row.latency, raw.latency) {
            (Some(a), Some(b)) if b.p50 > 0 => Some(a.p50 as f64 / b.p50 as f64),
            _ => None,
        };
        let msgs = match (row.msgs_per_s, raw.msgs_per_s) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        (p50, msgs)
    }

    fn header(&self, comment: &str) -> String {
        let p = &self.plan;
        let rounds = match self.rounds {
            1 => String::new(),
            n => format!("\n{comment}each figure: the median of {n} rounds (baseline and placements alternating); dropped: the sum"),
        };
        format!(
            "{comment}adora-bench: CPU {} ({} cores, /proc/cpuinfo)\n{comment}plan: {} timed latency samples per size (after {} warm-up), paced >= {:?}; {:?} back-to-back per size{rounds}\n",
            self.machine.cpu, self.machine.cores, p.samples, p.warmup, p.pace, p.throughput_time
        )
    }

    /// The human-readable table, latency in microseconds.
    pub fn table(&self) -> String {
        let mut out = String::from("\n");
        out += &self.header("");
        let _ = writeln!(
            out,
            "\n{:>8}  {:<18} {:>8} {:>8} {:>8} {:>8} {:>8}  {:>10} {:>9}  {:>8} {:>10}",
            "size",
            "transport",
            "min µs",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "max µs",
            "msgs/s",
            "MiB/s",
            "p50/raw",
            "msgs/raw"
        );
        for &size in &self.plan.sizes {
            for (transport, _) in &self.transports {
                let Some(row) = self.row(transport, size) else {
                    continue;
                };
                let lat = |f: fn(&Summary) -> u64| {
                    row.latency
                        .map_or("-".into(), |s| format!("{:.1}", us(f(&s))))
                };
                let (p50_ratio, msgs_ratio) = self.ratios(transport, size);
                let ratio = |r: Option<f64>| r.map_or(String::new(), |r| format!("{r:.2}x"));
                let _ = writeln!(
                    out,
                    "{:>8}  {:<18} {:>8} {:>8} {:>8} {:>8} {:>8}  {:>10} {:>9}  {:>8} {:>10}{}",
                    format_size(size),
                    transport,
                    lat(|s| s.min),
                    lat(|s| s.p50),
                    lat(|s| s.p90),
                    lat(|s| s.p99),
                    lat(|s| s.max),
                    row.msgs_per_s.map_or("-".into(), |m| format!("{m:.0}")),
                    row.mib_per_s.map_or("-".into(), |m| format!("{m:.1}")),
                    ratio(p50_ratio),
                    ratio(msgs_ratio),
                    notes(&row),
                );
            }
        }
        out += &self.targets();
        for label in &self.networks {
            out += &self.network(label);
        }
        out += &self.python_vs_rust();
        out
    }

    /// A cross-machine placement against its baselines of the same run, and the targets:
    /// p50 <= 1.1x plain Zenoh at every size, p50 <= 3x plain TCP at 8 B and 64 KiB, 8 B msgs/s
    /// >= 50% and 4 MiB MiB/s >= 70% of plain Zenoh's.
    fn network(&self, label: &str) -> String {
        let (zenoh, tcp) = (format!("{label} zenoh"), format!("{label} tcp"));
        let p50 = |t: &str, size| self.row(t, size)?.latency.map(|s| s.p50 as f64);
        let rate = |t: &str, size, f: fn(&Row) -> Option<f64>| f(&self.row(t, size)?);
        let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?.max(1e-9));
        let fmt = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}x"));
        let mut out = format!(
            "
{label} against plain Zenoh and plain TCP between the same two places (same run):
{:>8}  {:>9} {:>9} {:>9}  {:>8} {:>8}  {:>12} {:>12}
",
            "size",
            "adora p50",
            "zenoh p50",
            "tcp p50",
            "/zenoh",
            "/tcp",
            "msgs /zenoh",
            "MiB/s /zenoh"
        );
        let mut worst_zenoh: Option<(f64, usize)> = None;
        let mut worst_tcp: Option<(f64, usize)> = None;
        for &size in &self.plan.sizes {
            let to_zenoh = ratio(p50(label, size), p50(&zenoh, size));
            let to_tcp = ratio(p50(label, size), p50(&tcp, size));
            let keep_worst = |worst: &mut Option<(f64, usize)>, r: Option<f64>| {
                if let Some(r) = r {
                    if worst.is_none_or(|(w, _)| r > w) {
                        *worst = Some((r, size));
                    }
                }
            };
            keep_worst(&mut worst_zenoh, to_zenoh);
            if size == 8 || size == 64 << 10 {
                keep_worst(&mut worst_tcp, to_tcp);
            }
            let us = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1}", v / 1000.0));
            let _ = writeln!(
                out,
                "{:>8}  {:>9} {:>9} {:>9}  {:>8} {:>8}  {:>12} {:>12}",
                format_size(size),
                us(p50(label, size)),
                us(p50(&zenoh, size)),
                us(p50(&tcp, size)),
                fmt(to_zenoh),
                fmt(to_tcp),
                fmt(ratio(
                    rate(label, size, |r| r.msgs_per_s),
                    rate(&zenoh, size, |r| r.msgs_per_s)
                )),
                fmt(ratio(
                    rate(label, size, |r| r.mib_per_s),
                    rate(&zenoh, size, |r| r.mib_per_s)
                )),
            );
        }
        out + &self.network_targets(label, worst_zenoh, worst_tcp)
    }

    /// The targets for a cross-machine placement, from the worst p50 ratios of its table.
    fn network_targets(
        &self,
        label: &str,
        worst_zenoh: Option<(f64, usize)>,
        worst_tcp: Option<(f64, usize)>,
    ) -> String {
        let zenoh = format!("{label} zenoh");
        let rate = |t: &str, size, f: fn(&Row) -> Option<f64>| f(&self.row(t, size)?);
        let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?.max(1e-9));
        let mut out = String::new();
        let verdict = |ok: bool| if ok { "met" } else { "missed" };
        let _ = writeln!(out, "targets ({label}):");
        if let Some((r, size)) = worst_zenoh {
            let _ = writeln!(
                out,
                "  p50 <= 1.1x plain Zenoh at every size: worst {r:.2}x at {} -> {}",
                format_size(size),
                verdict(r <= 1.1)
            );
        }
        if let Some((r, size)) = worst_tcp {
            let _ = writeln!(
                out,
                "  p50 <= 3x plain TCP at 8 B and 64 KiB: worst {r:.2}x at {} -> {}",
                format_size(size),
                verdict(r <= 3.0)
            );
        }
        let share =
            |size, f: fn(&Row) -> Option<f64>| ratio(rate(label, size, f), rate(&zenoh, size, f));
        if let Some(r) = share(8, |r| r.msgs_per_s) {
            let _ = writeln!(
                out,
                "  8 B msgs/s >= 50% of plain Zenoh: {:.0}% -> {}",
                r * 100.0,
                verdict(r >= 0.5)
            );
        }
        if let Some(r) = share(4 << 20, |r| r.mib_per_s) {
            let _ = writeln!(
                out,
                "  4 MiB MiB/s >= 70% of plain Zenoh: {:.0}% -> {}",
                r * 100.0,
                verdict(r >= 0.7)
            );
        }
        out
    }

    /// A baseline or cross-machine row: the local targets (against `raw`) do not apply.
    fn is_network(&self, transport: &str) -> bool {
        self.networks.iter().any(|label| {
            transport == label
                || transport
                    .strip_prefix(label.as_str())
                    .is_some_and(|rest| rest == " zenoh" || rest == " tcp")
        })
    }

    /// p50 of `transport` over p50 of `same-daemon` (Rust → Rust) at `size`.
    fn p50_vs_rust(&self, transport: &str, size: usize) -> Option<f64> {
        let p50 = |t| self.row(t, size)?.latency.map(|s| s.p50);
        Some(p50(transport)? as f64 / p50(RUST)?.max(1) as f64)
    }

    /// With the `python` placement and `same-daemon` in one run: the Python rows' p50 over the
    /// Rust → Rust p50 per size, and the target (Python → Python <= 1.5x Rust → Rust at
    /// 8 B, 4 KiB and 4 MiB).
    fn python_vs_rust(&self) -> String {
        let has = |t: &str| self.transports.iter().any(|(name, _)| name == t);
        if !has(RUST) || !(has(PYTHON) || has(RUST_TO_PYTHON)) {
            return String::new();
        }
        let mut out = format!("\np50 / {RUST} p50 (Rust -> Rust of this run):\n");
        for &size in &self.plan.sizes {
            let ratio = |t| {
                self.p50_vs_rust(t, size)
                    .map_or("-".into(), |r| format!("{r:.2}x"))
            };
            let _ = writeln!(
                out,
                "  {:>8}  {PYTHON} {:>7}  {RUST_TO_PYTHON} {:>7}",
                format_size(size),
                ratio(PYTHON),
                ratio(RUST_TO_PYTHON)
            );
        }
        let worst = PYTHON_TARGET_SIZES
            .iter()
            .filter_map(|&size| Some((self.p50_vs_rust(PYTHON, size)?, size)))
            .reduce(|a, b| if b.0 > a.0 { b } else { a });
        if let Some((ratio, size)) = worst {
            let verdict = if ratio <= PYTHON_TARGET {
                "met"
            } else {
                "missed"
            };
            let _ = writeln!(
                out,
                "  {PYTHON} p50 <= {PYTHON_TARGET}x {RUST} at 8 B, 4 KiB, 4 MiB (those measured): \
                 worst {ratio:.2}x at {} -> {verdict}",
                format_size(size)
            );
        }
        out
    }

    /// The local data plane's targets, evaluated on this run (information, not a test): p50
    /// <= 1.3x raw at every size, p99 <= 2x raw p99, 8 B msgs/s >= 70% of raw, and a fan-out
    /// placement's 4 MiB p50 within 2x of the 1 -> 1 p50.
    fn targets(&self) -> String {
        let mut out = String::new();
        let local = |t: &str| t != "raw" && !self.is_network(t);
        for (transport, _) in self.transports.iter().filter(|(t, _)| local(t)) {
            let _ = writeln!(out, "\ntargets ({transport}):");
            let worst = |ratio: &dyn Fn(usize) -> Option<f64>| {
                (self.plan.sizes.iter())
                    .filter_map(|&s| Some((ratio(s)?, s)))
                    .reduce(|a, b| if b.0 > a.0 { b } else { a })
            };
            let verdict = |ok: bool| if ok { "met" } else { "missed" };
            if let Some((r, size)) = worst(&|s| self.ratios(transport, s).0) {
                let _ = writeln!(
                    out,
                    "  p50 <= 1.3x raw at every size: worst {r:.2}x ({}) -> {}",
                    format_size(size),
                    verdict(r <= 1.3)
                );
            }
            let p99 = |t: &str, s| self.row(t, s)?.latency.map(|l| l.p99 as f64);
            let p99_ratio = |s| Some(p99(transport, s)? / p99("raw", s)?.max(1.0));
            if let Some((r, size)) = worst(&p99_ratio) {
                let _ = writeln!(
                    out,
                    "  p99 <= 2x raw p99: worst {r:.2}x ({}) -> {}",
                    format_size(size),
                    verdict(r <= 2.0)
                );
            }
            if let (_, Some(r)) = self.ratios(transport, 8) {
                let _ = writeln!(
                    out,
                    "  8 B msgs/s >= 70% of raw: {:.0}% -> {}",
                    r * 100.0,
                    verdict(r >= 0.7)
                );
            }
            let p50 = |t: &str| self.row(t, 4 << 20)?.latency.map(|l| l.p50 as f64);
            if transport.starts_with("fan-out") {
                if let (Some(fan), Some(one)) = (p50(transport), p50("same-daemon")) {
                    let r = fan / one.max(1.0);
                    let _ = writeln!(
                        out,
                        "  4 MiB p50 within 2x of 1 -> 1 (same-daemon): {r:.2}x -> {}",
                        verdict(r <= 2.0)
                    );
                }
            }
        }
        out
    }

    /// CSV with the machine and plan as `#` comment lines first; latency in microseconds.
    pub fn csv(&self) -> String {
        let mut out = self.header("# ");
        out += "transport,size_bytes,samples,lat_min_us,lat_p50_us,lat_p90_us,lat_p99_us,lat_max_us,msgs_per_s,mib_per_s,sent,received,bad,p50_ratio_to_raw,msgs_ratio_to_raw\n";
        for &size in &self.plan.sizes {
            for (transport, _) in &self.transports {
                let Some(row) = self.row(transport, size) else {
                    continue;
                };
                let opt = |v: Option<f64>, prec: usize| {
                    v.map_or(String::new(), |v| format!("{v:.prec$}"))
                };
                let lat = |f: fn(&Summary) -> u64| opt(row.latency.map(|s| us(f(&s))), 2);
                let (p50_ratio, msgs_ratio) = self.ratios(transport, size);
                let _ = writeln!(
                    out,
                    "{transport},{size},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    row.latency.map_or(0, |s| s.samples),
                    lat(|s| s.min),
                    lat(|s| s.p50),
                    lat(|s| s.p90),
                    lat(|s| s.p99),
                    lat(|s| s.max),
                    opt(row.msgs_per_s, 1),
                    opt(row.mib_per_s, 2),
                    row.sent,
                    row.received,
                    row.bad,
                    opt(p50_ratio, 3),
                    opt(msgs_ratio, 3),
                );
            }
        }
        out
    }

    /// An error when a size is missing from a transport or a message arrived corrupted.
    pub fn check_complete(&self) -> anyhow::Result<()> {
        for (transport, _) in &self.transports {
            for &size in &self.plan.sizes {
                match self.row(transport, size) {
                    None => anyhow::bail!("{transport}: no report for {}", format_size(size)),
                    Some(row) if row.bad > 0 => anyhow::bail!(
                        "{transport}: {} message(s) of {} arrived corrupted or out of order",
                        row.bad,
                        format_size(size)
                    ),
                    Some(row) if row.latency.is_none() && self.plan.samples > 0 => {
                        anyhow::bail!("{transport}: no latency samples at {}", format_size(size))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}

/// The median of `values` (the mean of the middle two of an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Each statistic's median over `summaries` (the rounds of one size); the samples add up.
fn median_summary(summaries: &[Summary]) -> Option<Summary> {
    let of = |f: fn(&Summary) -> u64| {
        let values = summaries.iter().map(|s| f(s) as f64).collect();
        median(values).map_or(0, |m| m.round() as u64)
    };
    (!summaries.is_empty()).then(|| Summary {
        samples: summaries.iter().map(|s| s.samples).sum(),
        min: of(|s| s.min),
        p50: of(|s| s.p50),
        p90: of(|s| s.p90),
        p99: of(|s| s.p99),
        max: of(|s| s.max),
    })
}

fn notes(row: &Row) -> String {
    let mut notes = Vec::new();
    if row.received < row.sent {
        notes.push(format!("{} dropped", row.sent - row.received));
    }
    if row.bad > 0 {
        notes.push(format!("{} BAD", row.bad));
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!("  ({})", notes.join(", "))
    }
}

#[cfg(test)]
mod tests;
