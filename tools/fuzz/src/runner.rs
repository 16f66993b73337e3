//! Runs a target's cases: each case from its own seeded generator (so one case can be replayed
//! alone), isolated with `catch_unwind`, timed against a limit, watched for hangs by a second
//! thread; property violations, panics and slow cases become [`Finding`]s.

use std::{
    cell::{Cell, RefCell},
    panic::{self, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Once,
    },
    time::{Duration, Instant},
};

use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// A fuzz target: one parser or decoder and the properties it must keep.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Name used by `--target` and in reports.
    pub name: &'static str,
    /// What it feeds to what.
    pub about: &'static str,
    /// Generates one input from the runner's seeded generator and checks it; `Err` is a property
    /// violation, described.
    pub case: fn(&mut TestRunner) -> Result<(), String>,
}

/// What went wrong in one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    /// The code under test panicked.
    Panic,
    /// A property failed (garbage accepted, a round trip changed the value, memory unbounded).
    Property,
    /// The case took longer than the time limit.
    Slow,
}

/// A case that broke a property, with what reproduces it.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The target.
    pub target: &'static str,
    /// The run's seed.
    pub seed: u64,
    /// The case's index in the run (`--seed S --case N --target T` replays it).
    pub case: u64,
    /// What kind of failure.
    pub kind: FindingKind,
    /// The panic message, the violated property, or the time taken.
    pub message: String,
}

/// How to run a target.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Number of cases.
    pub cases: u64,
    /// The run's seed; case `n` of target `t` always gets the same input for one seed.
    pub seed: u64,
    /// Index of the first case (to replay one case: `start = n`, `cases = 1`).
    pub start: u64,
    /// A case taking longer is a finding; a case still running after twice this is reported
    /// while it runs (a hang).
    pub time_limit: Duration,
}

/// Most findings a report keeps in full (all are counted).
pub const MAX_KEPT_FINDINGS: usize = 20;

/// What a run of one target found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target.
    pub target: &'static str,
    /// Cases run.
    pub cases: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// The slowest case and its index.
    pub slowest: (Duration, u64),
    /// Findings counted (more than kept).
    pub finding_count: u64,
    /// The first [`MAX_KEPT_FINDINGS`] findings.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Cases per second.
    pub fn rate(&self) -> f64 {
        self.cases as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

thread_local! {
    /// Set while this thread runs cases: its panics are recorded here instead of printed.
    static CAPTURE: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CAPTURE.with(Cell::get) {
                let location = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let payload = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(non-string panic)".into());
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{payload}{location}")));
            } else {
                previous(info);
            }
        }));
    });
}

/// The generator of case `case` of `target` in a run seeded `seed`.
pub fn case_runner(target: &str, seed: u64, case: u64) -> TestRunner {
    let name = target.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut state = seed ^ name.rotate_left(17) ^ case.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut bytes = [0u8; 16];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    let config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::XorShift, &bytes))
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Runs one case; `None` when every property held within the time limit.
pub fn run_case(target: &Target, seed: u64, case: u64, time_limit: Duration) -> Option<Finding> {
    install_panic_hook();
    let mut runner = case_runner(target.name, seed, case);
    CAPTURE.with(|c| c.set(true));
    let started = Instant::now();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| (target.case)(&mut runner)));
    let took = started.elapsed();
    CAPTURE.with(|c| c.set(false));
    let (kind, message) = match outcome {
        Err(_) => {
            let message = LAST_PANIC.with(|p| p.borrow_mut().take());
            (
                FindingKind::Panic,
                message.unwrap_or_else(|| "panic".into()),
            )
        }
        Ok(Err(violation)) => (FindingKind::Property, violation),
        Ok(Ok(())) if took > time_limit => (
            FindingKind::Slow,
            format!("took {took:?} (limit {time_limit:?})"),
        ),
        Ok(Ok(())) => return None,
    };
    Some(Finding {
        target: target.name,
        seed,
        case,
        kind,
        message,
    })
}

/// Runs `config.cases` cases of `target`, with a watchdog thread that reports a case still
/// running after twice the time limit (on stderr, with what reproduces it).
pub fn run(target: &Target, config: &RunConfig) -> Report {
    const IDLE: u64 = u64::MAX;
    let run_start = Instant::now();
    let current = AtomicU64::new(IDLE);
    let case_started_ms = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let mut report = Report {
        target: target.name,
        cases: 0,
        elapsed: Duration::ZERO,
        slowest: (Duration::ZERO, config.start),
        finding_count: 0,
        findings: Vec::new(),
    };
    std::thread::scope(|scope| {
        scope.spawn(|| watchdog(target, config, run_start, &current, &case_started_ms, &done));
        for case in config.start..config.start.saturating_add(config.cases) {
            case_started_ms.store(millis(run_start.elapsed()), Ordering::Relaxed);
            current.store(case, Ordering::Relaxed);
            let started = Instant::now();
            let finding = run_case(target, config.seed, case, config.time_limit);
            let took = started.elapsed();
            current.store(IDLE, Ordering::Relaxed);
            if took > report.slowest.0 {
                report.slowest = (took, case);
            }
            report.cases += 1;
            if let Some(finding) = finding {
                report.finding_count += 1;
                if report.findings.len() < MAX_KEPT_FINDINGS {
                    report.findings.push(finding);
                }
            }
        }
        done.store(true, Ordering::Relaxed);
    });
    report.elapsed = run_start.elapsed();
    report
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn watchdog(
    target: &Target,
    config: &RunConfig,
    run_start: Instant,
    current: &AtomicU64,
    case_started_ms: &AtomicU64,
    done: &AtomicBool,
) {
    let mut reported = u64::MAX;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        let case = current.load(Ordering::Relaxed);
        let running_ms =
            millis(run_start.elapsed()).saturating_sub(case_started_ms.load(Ordering::Relaxed));
        if case != u64::MAX && case != reported && running_ms > 2 * millis(config.time_limit) {
            reported = case;
            eprintln!(
                "adora-fuzz: target {} case {case} has run for {running_ms} ms (hang?); replay: \
                 --target {} --seed {} --case {case}",
                target.name, target.name, config.seed
            );
        }
    }
}
