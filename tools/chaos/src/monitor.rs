//! What the soak watches continuously, on its own thread: live node processes (never two
//! instances of one node), the coordinator's memory and open files, and the drop counters the
//! coordinator reports for the chain's receivers.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::cluster::Cli;

/// How often the processes and the coordinator are sampled.
const SCAN_EVERY: Duration = Duration::from_millis(500);
/// Drop counters are read every this many scans.
const COUNTERS_EVERY: u32 = 4;

/// Limits the coordinator must stay within.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
    /// Open file descriptors.
    pub fds: usize,
}

/// A node's drop counter as the coordinator reports it: it starts again from 0 when its daemon
/// restarts (the routing state is new) or the dataflow is started again (a new uuid).
#[derive(Debug, Default, Clone, Copy)]
struct Counter {
    banked: u64,
    last: u64,
}

impl Counter {
    fn observe(&mut self, value: u64) {
        if value < self.last {
            self.banked += self.last;
        }
        self.last = value;
    }

    fn total(&self) -> u64 {
        self.banked + self.last
    }
}

/// What the monitor saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Violations, with when they were seen.
    pub violations: Vec<String>,
    /// Highest coordinator RSS and open file count, and how many samples.
    pub max_rss_bytes: u64,
    /// See `max_rss_bytes`.
    pub max_fds: usize,
    /// Coordinator samples taken.
    pub coordinator_samples: u64,
    /// RSS of the first and the latest sample of the current coordinator process.
    pub rss_first_last: (u64, u64),
    /// (dataflow uuid, node) → counted drops (`dropped`, which includes `remote_dropped`).
    drops: BTreeMap<(String, String), Counter>,
    /// (dataflow uuid, node) → counted remote drops.
    remote_drops: BTreeMap<(String, String), Counter>,
    /// Node → most live instances seen at once in one scan.
    pub max_instances: BTreeMap<String, usize>,
    /// Pairs of pids of one node seen alive in the previous scan.
    doubles: BTreeSet<(String, Vec<u32>)>,
    rss_pid: u32,
}

impl Seen {
    /// Counted drops of the chain's receivers (relay and sink), over every dataflow instance and
    /// daemon restart: (all, of which missing between machines).
    pub fn counted_drops(&self) -> (u64, u64) {
        let sum = |m: &BTreeMap<(String, String), Counter>| {
            m.iter()
                .filter(|((_, node), _)| node == "relay" || node == "sink")
                .map(|(_, c)| c.total())
                .sum()
        };
        (sum(&self.drops), sum(&self.remote_drops))
    }
}

/// The monitor thread.
pub struct Monitor {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Starts watching the processes tagged `CHAOS_RUN=<run_tag>` and the coordinator whose pid
    /// `coordinator` holds (0 while it is down).
    pub fn start(run_tag: String, coordinator: Arc<AtomicU32>, cli: Cli, limits: Limits) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    let instances = node_instances(&run_tag);
                    let pid = coordinator.load(Ordering::SeqCst);
                    let counters = n
                        .is_multiple_of(COUNTERS_EVERY)
                        .then(|| cli.running_nodes())
                        .flatten();
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    check_instances(&mut seen, &instances);
                    if pid != 0 {
                        sample_coordinator(&mut seen, pid, limits);
                    }
                    if let Some(nodes) = counters {
                        count_drops(&mut seen, &nodes);
                    }
                    drop(seen);
                    n += 1;
                    std::thread::sleep(SCAN_EVERY);
                }
            })
        };
        Self {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Takes one more reading of the drop counters (after the last fault) and stops the thread.
    pub fn finish(mut self, cli: &Cli) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut seen = std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(nodes) = cli.running_nodes() {
            count_drops(&mut seen, &nodes);
        }
        seen
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Two live instances of one node: a violation when the same pids are seen in two scans in a
/// row (a process being killed may still be listed for a moment).
fn check_instances(seen: &mut Seen, instances: &BTreeMap<String, Vec<u32>>) {
    let mut doubles = BTreeSet::new();
    for (node, pids) in instances {
        let max = seen.max_instances.entry(node.clone()).or_default();
        *max = (*max).max(pids.len());
        if pids.len() > 1 {
            let key = (node.clone(), pids.clone());
            if seen.doubles.contains(&key) {
                seen.violations.push(format!(
                    "{}: two live instances of node `{node}`: pids {pids:?} (in two scans {SCAN_EVERY:?} apart)",
                    now()
                ));
            }
            doubles.insert(key);
        }
    }
    seen.doubles = doubles;
}

fn sample_coordinator(seen: &mut Seen, pid: u32, limits: Limits) {
    let Some(rss) = rss_bytes(pid) else {
        return;
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    seen.coordinator_samples += 1;
    seen.max_rss_bytes = seen.max_rss_bytes.max(rss);
    seen.max_fds = seen.max_fds.max(fds);
    if seen.rss_pid != pid {
        seen.rss_pid = pid;
        seen.rss_first_last.0 = rss;
    }
    seen.rss_first_last.1 = rss;
    if rss > limits.rss_bytes {
        seen.violations.push(format!(
            "{}: the coordinator's RSS is {} MiB, over the {} MiB limit",
            now(),
            rss >> 20,
            limits.rss_bytes >> 20
        ));
    }
    if fds > limits.fds {
        seen.violations.push(format!(
            "{}: the coordinator has {fds} open files, over the limit of {}",
            now(),
            limits.fds
        ));
    }
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn count_drops(seen: &mut Seen, nodes: &[serde_json::Value]) {
    // A restarted coordinator lists nodes without figures (zero) until their daemon reports:
    // not a counter that started again.
    for n in nodes.iter().filter(|n| !n["stats_age_ms"].is_null()) {
        let key = (
            n["dataflow_id"].as_str().unwrap_or_default().to_owned(),
            n["node"].as_str().unwrap_or_default().to_owned(),
        );
        let dropped = n["dropped"].as_u64().unwrap_or(0);
        let remote: u64 = n["remote_dropped"]
            .as_array()
            .map(|a| a.iter().filter_map(|d| d["count"].as_u64()).sum())
            .unwrap_or(0);
        seen.drops.entry(key.clone()).or_default().observe(dropped);
        seen.remote_drops.entry(key).or_default().observe(remote);
    }
}

/// Node id → pids of the live processes of this run's nodes (`CHAOS_RUN=<tag>` and
/// `CHAOS_NODE=<id>` in their environment), on every host: the hosts are network namespaces and
/// share the process table.
pub fn node_instances(run_tag: &str) -> BTreeMap<String, Vec<u32>> {
    let run = format!("CHAOS_RUN={run_tag}");
    let mut found: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (pid, env) in adora_test_support::live_environs() {
        let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
        if !vars.contains(&run.as_bytes()) {
            continue;
        }
        let node = vars
            .iter()
            .find_map(|v| v.strip_prefix(b"CHAOS_NODE="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        found.entry(node).or_default().push(pid);
    }
    for pids in found.values_mut() {
        pids.sort_unstable();
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_that_starts_again_keeps_what_it_counted_before() {
        let mut c = Counter::default();
        for v in [0, 3, 5, 2, 4, 0, 1] {
            c.observe(v);
        }
        assert_eq!(c.total(), 5 + 4 + 1);
    }

    #[test]
    fn nodes_without_figures_do_not_reset_the_counters() {
        let mut seen = Seen::default();
        let node = |dropped: u64, age: serde_json::Value| serde_json::json!({"dataflow_id": "d", "node": "sink", "dropped": dropped, "stats_age_ms": age});
        count_drops(&mut seen, &[node(7, 100.into())]);
        // The coordinator restarted: no figures yet, then the same cumulative count again.
        count_drops(&mut seen, &[node(0, serde_json::Value::Null)]);
        count_drops(&mut seen, &[node(9, 50.into())]);
        assert_eq!(seen.counted_drops(), (9, 0));
        // The daemon restarted: its counts start again from zero.
        count_drops(&mut seen, &[node(0, 10.into())]);
        count_drops(&mut seen, &[node(2, 10.into())]);
        assert_eq!(seen.counted_drops(), (11, 0));
    }

    #[test]
    fn two_instances_are_a_violation_only_when_seen_twice() {
        let mut seen = Seen::default();
        let two: BTreeMap<String, Vec<u32>> = [("relay".to_owned(), vec![10, 11])].into();
        let one: BTreeMap<String, Vec<u32>> = [("relay".to_owned(), vec![11])].into();
        check_instances(&mut seen, &two);
        check_instances(&mut seen, &one);
        assert!(seen.violations.is_empty());
        check_instances(&mut seen, &two);
        check_instances(&mut seen, &two);
        assert_eq!(seen.violations.len(), 1, "{:?}", seen.violations);
        assert_eq!(seen.max_instances["relay"], 2);
    }
}
