//! The rolling upgrade of a fleet (`adora cluster upgrade`) as a state machine, independent of
//! SSH and of the coordinator: the remote work goes through a [`RolloutHost`] (the CLI's one runs
//! the [`crate::upgrade`] scripts over SSH and asks the coordinator; the unit tests use a fake).
//!
//! Per machine: [`Step::Copy`] (to a temporary file, SHA-256 checked there) → [`Step::Check`]
//! (`--version` of the copy) → [`Step::Swap`] (the previous binary kept beside it) →
//! [`Step::Restart`] → [`Step::Gate`] → upgraded; a failure from the restart on rolls the machine
//! back ([`Step::Revert`], then [`Step::RevertGate`]) unless [`Policy::auto_revert`] is off.
//!
//! Order (Nomad's update block): every machine is reached first — an unreachable one stops the
//! rollout before anything is touched; then the first [`Policy::canary`] machines go one at a
//! time, then the rest at most [`Policy::max_parallel`] at a time. The first failure stops the
//! rollout: machines not started are reported [`Outcome::Untouched`], the ones in flight finish.

mod gate;
#[cfg(test)]
mod tests;

use std::time::Duration;

use adora_core::cluster::Machine;
use futures_util::{stream::FuturesUnordered, StreamExt};
use serde::Serialize;
use tokio::time::Instant;

pub use gate::{verdict, DaemonSeen, Fingerprint, NodeSeen, Observation, Verdict};

/// How often the health gate asks the coordinator.
pub const GATE_POLL: Duration = Duration::from_millis(500);

/// How the rollout goes (the flags of `cluster upgrade`).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Machines upgraded at once after the canaries (at least 1).
    pub max_parallel: usize,
    /// The first machines, upgraded one at a time; each must pass its gate before the rest go.
    pub canary: usize,
    /// How long a machine must stay healthy (same processes, no restart) to pass its gate.
    pub min_healthy_time: Duration,
    /// How long after its restart a machine has to pass its gate.
    pub healthy_deadline: Duration,
    /// Roll a machine that failed after the swap back to its previous binary.
    pub auto_revert: bool,
    /// How long to wait for a machine's update locks to be released.
    pub lock_timeout: Duration,
    /// What a machine still locked at `lock_timeout` does to the rollout.
    pub on_lock_timeout: OnLockTimeout,
    /// Upgrade locked machines anyway.
    pub force: bool,
}

/// What a machine still locked at the lock timeout does to the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLockTimeout {
    /// Leave it untouched ([`Outcome::Locked`]) and go on with the others; the rollout fails.
    Skip,
    /// Stop the rollout there, like any failed machine.
    Fail,
}

/// How often a locked machine is asked again.
pub const LOCK_POLL: Duration = Duration::from_secs(2);

/// Why a machine could not be claimed for the upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimError {
    /// It has update locks (the message names them); asked again until the lock timeout.
    Locked(String),
    /// Anything else (another operation has it, the coordinator does not answer).
    Refused(StepError),
}

/// A step of one machine's upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// SSH connection, install directory and how the daemon runs.
    Connect,
    /// The machine taken for the upgrade at the coordinator, once its update locks are gone.
    Claim,
    /// The binary copied to a temporary file beside the installed one, SHA-256 checked there.
    Copy,
    /// The copy runs there (`--version`) and can talk to the coordinator.
    Check,
    /// The previous binary kept, the copy renamed over it.
    Swap,
    /// The daemon restarted (systemd unit or ad-hoc daemon).
    Restart,
    /// The health gate.
    Gate,
    /// The previous binary put back and the daemon restarted.
    Revert,
    /// The health gate after the rollback (previous version).
    RevertGate,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Claim => "claim (update locks released)",
            Self::Copy => "copy binary (sha256 checked)",
            Self::Check => "check new binary",
            Self::Swap => "swap binary",
            Self::Restart => "restart daemon",
            Self::Gate => "health gate",
            Self::Revert => "roll back",
            Self::RevertGate => "health gate after rollback",
        })
    }
}

/// A failed remote step: what went wrong and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct StepError {
    /// What went wrong.
    pub reason: String,
    /// What to try.
    pub hint: Option<String>,
}

impl StepError {
    /// A failure with a hint.
    pub fn new(reason: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            hint: Some(hint.into()),
        }
    }
}

/// How one machine ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Runs the new version and passed the gate.
    Upgraded,
    /// Failed after the swap and was put back on its previous binary, healthy again.
    RolledBack,
    /// Failed after the swap; the rollback failed too (see the error).
    RollbackFailed,
    /// Failed after the swap and was left on the new binary (`--no-auto-revert`).
    NotReverted,
    /// Failed before the swap: still on its previous binary, nothing changed.
    Failed,
    /// Could not be reached: the rollout did not start.
    Unreachable,
    /// Not touched, because the rollout stopped.
    Untouched,
    /// Not touched: its update locks were held until the lock timeout.
    Locked,
}

/// How long one step took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepTime {
    /// The step.
    pub step: Step,
    /// Its duration in seconds.
    pub seconds: f64,
    /// Whether it succeeded.
    pub ok: bool,
}

/// One machine's line of the rollout's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MachineReport {
    /// Machine id.
    pub id: String,
    /// `user@host`.
    pub destination: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The version its daemon runs now, when known.
    pub version: Option<String>,
    /// Seconds from its first step to its last (0 when untouched).
    pub seconds: f64,
    /// Every step it went through.
    pub steps: Vec<StepTime>,
    /// The failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl MachineReport {
    fn new(m: &Machine, outcome: Outcome) -> Self {
        Self {
            id: m.id.clone(),
            destination: m.destination(),
            outcome,
            version: None,
            seconds: 0.0,
            steps: Vec::new(),
            error: None,
            hint: None,
        }
    }
}

/// What the progress callback hears.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress<'a> {
    /// A step of machine `id` ended after `elapsed`, with its error when it failed.
    Step {
        /// Machine id.
        id: &'a str,
        /// The step.
        step: Step,
        /// How long it took.
        elapsed: Duration,
        /// Its failure.
        error: Option<&'a StepError>,
    },
    /// Machine `id` is done.
    Done(&'a MachineReport),
    /// Machine `id` waits for its update locks (`why` names them); said again when it changes.
    Waiting {
        /// Machine id.
        id: &'a str,
        /// Who holds the locks and why.
        why: &'a str,
    },
}

/// The remote side of the rollout: one machine's steps, each on the connection `connect` opened.
/// Implemented over SSH and the coordinator by the CLI; by a fake in the unit tests.
// The rollout drives every machine from one task (it never spawns), so the futures need not be
// `Send` and `async fn` is the plainest signature.
#[allow(async_fn_in_trait)]
pub trait RolloutHost {
    /// The connection to one machine and what the steps learn on the way (temporary path, ...).
    type Conn;
    /// Connects and finds where `adora` lives and how the daemon runs.
    async fn connect(&self, machine: &Machine) -> Result<Self::Conn, StepError>;
    /// The machine through the coordinator (for the gate, and before the restart).
    async fn observe(&self, machine: &Machine) -> Result<Observation, StepError>;
    /// Copies the binary next to the installed one and checks its SHA-256 there.
    async fn copy(&self, conn: &mut Self::Conn) -> Result<(), StepError>;
    /// Runs the copy's `--version`; returns the version the daemon must come back with.
    async fn check(&self, conn: &mut Self::Conn) -> Result<String, StepError>;
    /// Keeps the previous binary and renames the copy over the installed one.
    async fn swap(&self, conn: &mut Self::Conn) -> Result<(), StepError>;
    /// Restarts the daemon (systemd unit or ad-hoc).
    async fn restart(&self, conn: &mut Self::Conn) -> Result<(), StepError>;
    /// Puts the previous binary back and restarts the daemon.
    async fn revert(&self, conn: &mut Self::Conn) -> Result<(), StepError>;
    /// Removes the copy of a machine that failed before the swap (best effort).
    async fn discard(&self, conn: &mut Self::Conn);
    /// The end of the daemon's log, for the message of a failed gate.
    async fn daemon_log(&self, conn: &mut Self::Conn) -> String;
    /// Closes the connection.
    async fn close(&self, conn: Self::Conn);
    /// Takes the machine for the upgrade at the coordinator (refused while another operation
    /// has it, or while it has update locks unless `force`), and keeps it until `release`.
    async fn claim(&self, machine: &Machine, force: bool) -> Result<(), ClaimError>;
    /// Gives the machine back (best effort: an unreleased claim lapses).
    async fn release(&self, machine: &Machine);
}

/// Upgrades `machines` per `policy`; returns one report per machine, in order.
pub async fn run<H: RolloutHost>(
    host: &H,
    machines: &[Machine],
    policy: &Policy,
    progress: &dyn Fn(Progress<'_>),
) -> Vec<MachineReport> {
    let mut conns = Vec::with_capacity(machines.len());
    let mut unreachable = false;
    for m in machines {
        let begin = Instant::now();
        let conn = host.connect(m).await;
        let error = conn.as_ref().err();
        progress(Progress::Step {
            id: &m.id,
            step: Step::Connect,
            elapsed: begin.elapsed(),
            error,
        });
        unreachable |= conn.is_err();
        conns.push(conn);
    }
    if unreachable {
        return stop_before_start(host, machines, conns, progress).await;
    }
    let conns = conns.into_iter().flatten().collect();
    roll(host, machines, conns, policy, progress).await
}

/// Reports every machine when one cannot be reached: that one unreachable, the others untouched.
async fn stop_before_start<H: RolloutHost>(
    host: &H,
    machines: &[Machine],
    conns: Vec<Result<H::Conn, StepError>>,
    progress: &dyn Fn(Progress<'_>),
) -> Vec<MachineReport> {
    let mut reports = Vec::new();
    for (m, conn) in machines.iter().zip(conns) {
        let report = match conn {
            Ok(conn) => {
                host.close(conn).await;
                MachineReport::new(m, Outcome::Untouched)
            }
            Err(e) => MachineReport {
                error: Some(e.reason),
                hint: e.hint,
                ..MachineReport::new(m, Outcome::Unreachable)
            },
        };
        progress(Progress::Done(&report));
        reports.push(report);
    }
    reports
}

/// Canaries one at a time, then the rest `max_parallel` at a time; stops at the first failure.
async fn roll<H: RolloutHost>(
    host: &H,
    machines: &[Machine],
    conns: Vec<H::Conn>,
    policy: &Policy,
    progress: &dyn Fn(Progress<'_>),
) -> Vec<MachineReport> {
    let mut reports: Vec<Option<MachineReport>> = vec![None; machines.len()];
    let mut pending = machines.iter().enumerate().zip(conns);
    let mut failed = false;
    let mut in_flight = FuturesUnordered::new();
    let (mut started, mut finished) = (0, 0);
    let canaries = policy.canary.min(machines.len());
    loop {
        // Start what the order allows (none once a machine failed).
        loop {
            let may_start = !failed
                && if started < canaries {
                    in_flight.is_empty()
                } else {
                    finished >= canaries && in_flight.len() < policy.max_parallel.max(1)
                };
            let Some(((i, m), conn)) = may_start.then(|| pending.next()).flatten() else {
                break;
            };
            started += 1;
            in_flight.push(async move { (i, upgrade_one(host, m, conn, policy, progress).await) });
        }
        let Some((i, report)) = in_flight.next().await else {
            break;
        };
        finished += 1;
        failed |= !matches!(report.outcome, Outcome::Upgraded | Outcome::Locked);
        progress(Progress::Done(&report));
        reports[i] = Some(report);
    }
    for ((i, m), conn) in pending {
        host.close(conn).await;
        let report = MachineReport::new(m, Outcome::Untouched);
        progress(Progress::Done(&report));
        reports[i] = Some(report);
    }
    reports
        .into_iter()
        .zip(machines)
        .map(|(r, m)| r.unwrap_or_else(|| MachineReport::new(m, Outcome::Untouched)))
        .collect()
}

/// One machine's report as its steps go.
struct Run<'a> {
    report: MachineReport,
    begin: Instant,
    progress: &'a dyn Fn(Progress<'_>),
}

impl Run<'_> {
    /// Runs one step, timing and reporting it.
    async fn step<T>(
        &mut self,
        step: Step,
        work: impl std::future::Future<Output = Result<T, StepError>>,
    ) -> Result<T, StepError> {
        let begin = Instant::now();
        let result = work.await;
        let elapsed = begin.elapsed();
        (self.progress)(Progress::Step {
            id: &self.report.id,
            step,
            elapsed,
            error: result.as_ref().err(),
        });
        self.report.steps.push(StepTime {
            step,
            seconds: elapsed.as_secs_f64(),
            ok: result.is_ok(),
        });
        result
    }

    fn end(mut self, outcome: Outcome, error: Option<StepError>) -> MachineReport {
        self.report.outcome = outcome;
        self.report.seconds = self.begin.elapsed().as_secs_f64();
        if let Some(e) = error {
            self.report.error = Some(e.reason);
            self.report.hint = e.hint;
        }
        self.report
    }
}

/// What every step of one machine needs.
struct Ctx<'a, H> {
    host: &'a H,
    m: &'a Machine,
    policy: &'a Policy,
    /// `dataflow/node` of the nodes that ran there before: they must run again.
    expected: Vec<String>,
}

/// The steps of one machine, then its outcome.
async fn upgrade_one<H: RolloutHost>(
    host: &H,
    m: &Machine,
    conn: H::Conn,
    policy: &Policy,
    progress: &dyn Fn(Progress<'_>),
) -> MachineReport {
    let mut run = Run {
        report: MachineReport::new(m, Outcome::Failed),
        begin: Instant::now(),
        progress,
    };
    if let Err((outcome, e)) = run
        .step(Step::Claim, claim(host, m, policy, progress))
        .await
        .map_err(|e| {
            let outcome = match policy.on_lock_timeout {
                OnLockTimeout::Skip if e.hint.as_deref() == Some(LOCKED_HINT) => Outcome::Locked,
                _ => Outcome::Failed,
            };
            (outcome, e)
        })
    {
        host.close(conn).await;
        return run.end(outcome, Some(e));
    }
    let report = upgrade_claimed(host, m, conn, policy, run).await;
    host.release(m).await;
    report
}

/// The hint of a machine still locked at the lock timeout.
const LOCKED_HINT: &str =
    "wait for the lock holders, raise --lock-timeout, or upgrade anyway with --force";

/// How often an unchanged wait for update locks is said again.
const WAITING_REPEAT: Duration = Duration::from_secs(30);

/// A lock message without the ages of its locks (`, held for 12s`), to tell new holders from
/// older ones.
fn without_ages(why: &str) -> String {
    let mut out = String::with_capacity(why.len());
    let mut rest = why;
    while let Some(i) = rest.find(", held for ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + ", held for ".len()..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        rest = after[digits..]
            .strip_prefix('s')
            .unwrap_or(&after[digits..]);
    }
    out.push_str(rest);
    out
}

/// Claims the machine, asking again while it is locked, until the policy's lock timeout.
async fn claim<H: RolloutHost>(
    host: &H,
    m: &Machine,
    policy: &Policy,
    progress: &dyn Fn(Progress<'_>),
) -> Result<(), StepError> {
    let deadline = Instant::now() + policy.lock_timeout;
    let mut said: Option<(String, Instant)> = None;
    loop {
        match host.claim(m, policy.force).await {
            Ok(()) => return Ok(()),
            Err(ClaimError::Refused(e)) => return Err(e),
            Err(ClaimError::Locked(why)) => {
                if Instant::now() >= deadline {
                    return Err(StepError::new(
                        format!("still locked after {:?}: {why}", policy.lock_timeout),
                        LOCKED_HINT,
                    ));
                }
                // Said when the holders change, and every WAITING_REPEAT while they do not.
                let holders = without_ages(&why);
                let repeat = said
                    .as_ref()
                    .is_none_or(|(last, at)| *last != holders || at.elapsed() >= WAITING_REPEAT);
                if repeat {
                    progress(Progress::Waiting {
                        id: &m.id,
                        why: &why,
                    });
                    said = Some((holders, Instant::now()));
                }
            }
        }
        tokio::time::sleep(LOCK_POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// The steps of a claimed machine, then its outcome.
async fn upgrade_claimed<H: RolloutHost>(
    host: &H,
    m: &Machine,
    mut conn: H::Conn,
    policy: &Policy,
    mut run: Run<'_>,
) -> MachineReport {
    let before = host.observe(m).await.unwrap_or_default();
    let old_version = before.daemon.as_ref().map(|d| d.version.clone());
    run.report.version = old_version.clone();
    let ctx = Ctx {
        host,
        m,
        policy,
        expected: before.running_nodes(),
    };
    let staged = async {
        run.step(Step::Copy, host.copy(&mut conn)).await?;
        let version = run.step(Step::Check, host.check(&mut conn)).await?;
        run.step(Step::Swap, host.swap(&mut conn)).await?;
        Ok::<_, StepError>(version)
    }
    .await;
    let version = match staged {
        Ok(version) => version,
        Err(e) => {
            host.discard(&mut conn).await;
            host.close(conn).await;
            return run.end(Outcome::Failed, Some(e));
        }
    };
    let restarted = Instant::now();
    let upgraded = match run.step(Step::Restart, host.restart(&mut conn)).await {
        Ok(()) => run.step(Step::Gate, ctx.healthy(&version, restarted)).await,
        Err(e) => Err(e),
    };
    let report = match upgraded {
        Ok(()) => {
            run.report.version = Some(version);
            run.end(Outcome::Upgraded, None)
        }
        Err(e) => {
            let e = with_log(e, host.daemon_log(&mut conn).await);
            if policy.auto_revert {
                ctx.roll_back(&mut conn, run, e, old_version).await
            } else {
                run.report.version = Some(version);
                run.end(Outcome::NotReverted, Some(e))
            }
        }
    };
    host.close(conn).await;
    report
}

/// Appends the end of the daemon's log to a failure.
fn with_log(e: StepError, log: String) -> StepError {
    if log.trim().is_empty() {
        return e;
    }
    StepError {
        reason: format!("{}; {log}", e.reason),
        hint: e.hint,
    }
}

impl<H: RolloutHost> Ctx<'_, H> {
    /// Puts the previous binary back after `cause`, and waits until the machine is healthy
    /// again with `old_version`.
    async fn roll_back(
        &self,
        conn: &mut H::Conn,
        mut run: Run<'_>,
        cause: StepError,
        old_version: Option<String>,
    ) -> MachineReport {
        let restarted = Instant::now();
        if let Err(e) = run.step(Step::Revert, self.host.revert(conn)).await {
            let reason = format!("{}; the rollback failed too: {}", cause.reason, e.reason);
            return run.end(Outcome::RollbackFailed, Some(StepError { reason, ..e }));
        }
        run.report.version = old_version.clone();
        let Some(old) = old_version else {
            // Its daemon was not connected before: there is no healthy state to wait for.
            return run.end(Outcome::RolledBack, Some(cause));
        };
        match run
            .step(Step::RevertGate, self.healthy(&old, restarted))
            .await
        {
            Ok(()) => run.end(Outcome::RolledBack, Some(cause)),
            Err(e) => {
                let reason = format!("{}; after the rollback: {}", cause.reason, e.reason);
                run.end(Outcome::RollbackFailed, Some(StepError { reason, ..e }))
            }
        }
    }

    /// Polls the coordinator until the machine has been healthy with `version` for the
    /// policy's `min_healthy_time`; fails when that has not happened `healthy_deadline` after
    /// `restarted`.
    async fn healthy(&self, version: &str, restarted: Instant) -> Result<(), StepError> {
        let policy = self.policy;
        let deadline = restarted + policy.healthy_deadline;
        let mut streak: Option<(Fingerprint, Instant)> = None;
        let mut why = String::from("no answer from the coordinator");
        loop {
            let now = Instant::now();
            match self.host.observe(self.m).await {
                Ok(seen) => match verdict(&seen, version, &self.expected, restarted.elapsed()) {
                    Verdict::Ready(print) => match &streak {
                        Some((same, since)) if *same == print => {
                            if now.duration_since(*since) >= policy.min_healthy_time {
                                return Ok(());
                            }
                        }
                        Some(_) => {
                            why = "a node restarted during the healthy time".into();
                            streak = Some((print, now));
                        }
                        None => streak = Some((print, now)),
                    },
                    Verdict::NotReady(reason) => {
                        why = reason;
                        streak = None;
                    }
                },
                Err(e) => why = e.reason,
            }
            if now >= deadline {
                return Err(StepError::new(
                    format!(
                        "not healthy within {:?} of its restart: {why}",
                        policy.healthy_deadline
                    ),
                    format!(
                        "see `adora cluster status` and `adora node list`; a slower machine may \
                         need a longer --healthy-deadline (min healthy time {:?})",
                        policy.min_healthy_time
                    ),
                ));
            }
            tokio::time::sleep(GATE_POLL).await;
        }
    }
}
