//! The soak: start the system, inject one fault at a time at random moments, wait for each
//! recovery, then account for every message and check the teardown.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use adora_test_support::hosts::TestHosts;

use crate::{
    cluster::{Cluster, Settings, NAME, NODES},
    faults::{self, FaultKind},
    monitor::{self, Limits, Monitor},
    records::{Accounting, Records},
};

/// Messages sent this long before a fault may still be in flight when it hits: they count as
/// sent inside its window.
const WINDOW_MARGIN_MS: u64 = 2_000;
/// How long the system may take to run the dataflow the first time.
const FIRST_START: Duration = Duration::from_secs(120);
/// How long the teardown may take to leave nothing behind.
const TEARDOWN: Duration = Duration::from_secs(30);

/// What the soak does.
pub struct Config {
    /// How long faults are injected.
    pub duration: Duration,
    /// The generator's seed.
    pub seed: u64,
    /// The kinds of fault to inject.
    pub kinds: Vec<FaultKind>,
    /// Every node must run and the chain deliver again within this after a fault healed.
    pub recover_within: Duration,
    /// Quiet time between a recovery and the next fault: drawn from this range (ms).
    pub gap_ms: (u64, u64),
    /// The coordinator's limits.
    pub limits: Limits,
    /// The system.
    pub settings: Settings,
}

/// One injected fault.
pub struct Fault {
    /// Its kind.
    pub kind: FaultKind,
    /// What was done.
    pub detail: String,
    /// Unix ms of the injection.
    pub injected_ms: u64,
    /// Time from the heal to the recovery (`None`: not recovered in time).
    pub recovery: Option<Duration>,
    /// Unix ms of the recovery (or of the end of the soak).
    pub recovered_ms: u64,
    /// Whether messages the chain lost in its window are excused (see
    /// [`faults::Plan::hits_the_chain`]).
    pub hits_the_chain: bool,
}

/// Everything the soak found.
pub struct Outcome {
    /// The faults, in order.
    pub faults: Vec<Fault>,
    /// Message accounting.
    pub accounting: Accounting,
    /// Drops the coordinator counted on the relay's and sink's inputs: (all, between machines).
    pub counted_drops: (u64, u64),
    /// Drops the sink instances saw in their own drop counts.
    pub sink_seen_drops: u64,
    /// The monitor's findings.
    pub seen: monitor::Seen,
    /// Violations, each naming its invariant.
    pub violations: Vec<String>,
}

impl Outcome {
    /// Messages missing outside every fault window and not covered by a counted drop.
    pub fn unaccounted(&self) -> u64 {
        self.accounting
            .missing_outside_faults
            .saturating_sub(self.counted_drops.0)
    }
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the soak on `hosts`; the hosts' logs (daemons) are copied to `<run dir>/hosts` at the end.
pub fn run(hosts: TestHosts, config: &Config) -> anyhow::Result<Outcome> {
    let mut cluster = Cluster::start(hosts, &config.settings)?;
    let outcome = soak(&mut cluster, config);
    for host in cluster.hosts.hosts() {
        let to = config.settings.run_dir.join("hosts").join(host.name());
        let _ = copy_dir(host.log_dir(), &to);
    }
    outcome
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)?.flatten() {
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// The faults, one at a time until the duration is over (or a recovery failed).
fn inject_all(
    cluster: &mut Cluster,
    records: &mut Records,
    config: &Config,
    ids: &mut BTreeSet<String>,
    violations: &mut Vec<String>,
) -> Vec<Fault> {
    let mut schedule = faults::Schedule::new(config.seed, &config.kinds, config.gap_ms);
    let started = Instant::now();
    let mut faults = Vec::new();
    loop {
        std::thread::sleep(schedule.gap());
        if started.elapsed() >= config.duration {
            return faults;
        }
        let plan = schedule.fault();
        let fault = one_fault(cluster, records, &plan, started, config, ids);
        let failed = fault.recovery.is_none();
        if failed {
            violations.push(format!(
                "recovery: {} did not recover within {:?}: {}",
                fault.kind, config.recover_within, fault.detail
            ));
        }
        faults.push(fault);
        if failed {
            return faults; // more faults on a broken system say nothing more
        }
    }
}

fn soak(cluster: &mut Cluster, config: &Config) -> anyhow::Result<Outcome> {
    let tag = config.settings.run_tag.clone();
    let mut records = Records::new(&config.settings.run_dir.join("records"));
    let mut ids = BTreeSet::new();
    let mut violations = Vec::new();
    cluster.start_dataflow()?;
    let since = unix_ms();
    if let Err(missing) = wait_recovered(cluster, &mut records, since, FIRST_START, &tag, &mut ids)
    {
        anyhow::bail!("the dataflow did not run within {FIRST_START:?}: {missing}");
    }
    let monitor = Monitor::start(
        tag.clone(),
        cluster.coordinator_pid.clone(),
        cluster.cli.clone(),
        config.limits,
    );
    let faults = inject_all(cluster, &mut records, config, &mut ids, &mut violations);
    std::thread::sleep(Duration::from_secs(3));
    let seen = monitor.finish(&cluster.cli);
    violations.extend(seen.violations.iter().map(|v| format!("monitor: {v}")));
    let stop_ms = unix_ms();
    if !cluster.stop_dataflow() {
        violations.push("stop: the final `adora stop` failed".into());
    }
    records.poll()?;
    let mut windows: Vec<(u64, u64, String)> = faults
        .iter()
        .filter(|f| f.hits_the_chain)
        .map(|f| {
            let from = f.injected_ms.saturating_sub(WINDOW_MARGIN_MS);
            (from, f.recovered_ms, f.kind.name().to_owned())
        })
        .collect();
    windows.push((
        stop_ms.saturating_sub(WINDOW_MARGIN_MS),
        u64::MAX,
        "final stop".into(),
    ));
    let accounting = records.account(&windows);
    violations.extend(
        accounting
            .violations
            .iter()
            .map(|v| format!("messages: {v}")),
    );
    if let Some(rows) = cluster.cli.dataflows() {
        ids.extend(rows.into_iter().map(|(id, _)| id));
    }
    violations.extend(teardown(cluster, &tag, &ids));
    let mut outcome = Outcome {
        faults,
        counted_drops: seen.counted_drops(),
        sink_seen_drops: records.sink_counted_drops(),
        accounting,
        seen,
        violations,
    };
    if outcome.unaccounted() > 0 {
        outcome.violations.push(format!(
            "messages: {} message(s) missing outside every fault window, only {} counted dropped",
            outcome.accounting.missing_outside_faults, outcome.counted_drops.0
        ));
    }
    Ok(outcome)
}

/// Injects one fault and waits for the recovery.
fn one_fault(
    cluster: &mut Cluster,
    records: &mut Records,
    plan: &faults::Plan,
    started: Instant,
    config: &Config,
    ids: &mut BTreeSet<String>,
) -> Fault {
    let at = started.elapsed();
    let injected_ms = unix_ms();
    let tag = &config.settings.run_tag;
    let detail =
        faults::inject(cluster, plan, tag).unwrap_or_else(|e| format!("not injected: {e}"));
    let healed = Instant::now();
    let healed_ms = unix_ms();
    let result = wait_recovered(cluster, records, healed_ms, config.recover_within, tag, ids);
    let recovery = result.as_ref().ok().map(|()| healed.elapsed());
    let (sent, received) = records.counts();
    println!(
        "[{:>6.1}s] {:<16} {detail}: {} (messages so far: {sent} sent, {received} received)",
        at.as_secs_f64(),
        plan.kind.name(),
        match (&result, recovery) {
            (Ok(()), Some(r)) => format!("recovered in {:.1}s", r.as_secs_f64()),
            (Err(why), _) => format!("NOT RECOVERED: {why}"),
            _ => String::new(),
        }
    );
    Fault {
        kind: plan.kind,
        detail: match result {
            Ok(()) => detail,
            Err(why) => format!("{detail}; {why}"),
        },
        injected_ms,
        recovery,
        recovered_ms: unix_ms(),
        hits_the_chain: plan.hits_the_chain(),
    }
}

/// Waits until the dataflow runs with one live process per node and the sink received a message
/// sent after `since_ms`; `Err` names what is still missing after `timeout`.
fn wait_recovered(
    cluster: &Cluster,
    records: &mut Records,
    since_ms: u64,
    timeout: Duration,
    tag: &str,
    ids: &mut BTreeSet<String>,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let missing = what_is_missing(cluster, records, since_ms, tag, ids);
        match missing {
            None => return Ok(()),
            Some(why) if started.elapsed() > timeout => return Err(why),
            Some(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

fn what_is_missing(
    cluster: &Cluster,
    records: &mut Records,
    since_ms: u64,
    tag: &str,
    ids: &mut BTreeSet<String>,
) -> Option<String> {
    let instances = monitor::node_instances(tag);
    let wrong: Vec<String> = NODES
        .iter()
        .filter(|(n, _)| instances.get(*n).map_or(0, Vec::len) != 1)
        .map(|(n, _)| format!("{n}: {} live", instances.get(*n).map_or(0, Vec::len)))
        .collect();
    if !wrong.is_empty() {
        return Some(format!("node processes: {}", wrong.join(", ")));
    }
    let Some(rows) = cluster.cli.dataflows() else {
        return Some("the coordinator does not answer `adora list`".into());
    };
    ids.extend(rows.iter().map(|(id, _)| id.clone()));
    let running: Vec<&String> = rows
        .iter()
        .filter(|r| r.1 == "running")
        .map(|r| &r.0)
        .collect();
    let [id] = running.as_slice() else {
        return Some(format!(
            "{} dataflows named `{NAME}` running",
            running.len()
        ));
    };
    let Some(nodes) = cluster.cli.nodes(id) else {
        return Some("the coordinator does not answer `adora node list`".into());
    };
    let not_running: Vec<&str> = NODES
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| {
            !nodes.iter().any(|r| {
                r["dataflow_id"].as_str() == Some(id.as_str())
                    && r["node"] == *n
                    && r["status"] == "running"
            })
        })
        .collect();
    if !not_running.is_empty() {
        return Some(format!("not listed running: {}", not_running.join(", ")));
    }
    if let Err(e) = records.poll() {
        return Some(format!("cannot read the records: {e}"));
    }
    (records.last_delivered_sent_ms() < since_ms)
        .then(|| "the sink has not received a message sent after the heal".to_owned())
}

/// `adora cluster down`, then: no process of the run left (coordinator, daemons, nodes), no
/// shared-memory segment of its dataflows.
fn teardown(cluster: &mut Cluster, tag: &str, ids: &BTreeSet<String>) -> Vec<String> {
    let mut violations = Vec::new();
    match cluster.down() {
        Ok(out) if !out.success => violations.push(format!(
            "teardown: `adora cluster down` failed:\n{}{}",
            out.stdout, out.stderr
        )),
        Ok(_) => {}
        Err(e) => violations.push(format!("teardown: {e}")),
    }
    let state = cluster.state().display().to_string();
    let sshds: Vec<u32> = cluster.hosts.hosts().iter().map(|h| h.sshd_pid()).collect();
    let mut left = Vec::new();
    let clean = adora_test_support::wait_until(TEARDOWN, || {
        left = cluster
            .hosts
            .hosts()
            .iter()
            .flat_map(|h| h.pids())
            .filter(|p| !sshds.contains(p) && adora_test_support::process_alive(*p))
            .collect();
        left.extend(monitor::node_instances(tag).into_values().flatten());
        left.extend(adora_test_support::pids_with_env("ADORA_STATE_DIR", &state));
        left.sort_unstable();
        left.dedup();
        left.is_empty()
    });
    if !clean {
        let described: Vec<String> = left.iter().map(|p| describe(*p)).collect();
        violations.push(format!(
            "orphans: processes left {TEARDOWN:?} after `adora cluster down`: {}",
            described.join("; ")
        ));
    }
    if !cluster.coordinator_exited() {
        violations.push("orphans: the coordinator did not exit".into());
    }
    for id in ids {
        let prefix: String = format!("adora-{}-", &id.replace('-', "")[..12.min(id.len())]);
        let segments = adora_test_support::shm_segments(&prefix);
        if !segments.is_empty() {
            violations.push(format!(
                "shared memory: dataflow {id} left {} segment(s) in /dev/shm: {segments:?}",
                segments.len()
            ));
        }
    }
    violations
}

/// `pid (command line)`.
fn describe(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    format!("{pid} ({})", cmdline.trim())
}
