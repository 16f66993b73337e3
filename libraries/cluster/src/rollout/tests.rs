//! The rollout driven against a fake fleet (paused time): a good rollout with a canary, a failed
//! gate rolled back, an unreachable machine, `--no-auto-revert`, a node that keeps restarting.

use std::{cell::RefCell, collections::BTreeMap, path::Path};

use adora_core::cluster::ClusterConfig;

use super::*;

/// How a fake machine behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Good,
    /// SSH fails.
    Unreachable,
    /// The new binary never comes up as a daemon.
    BrokenDaemon,
    /// Its node gets a new pid at every look.
    Flapping,
}

#[derive(Debug)]
struct FakeMachine {
    kind: Kind,
    /// The installed binary's version, and the kept previous one.
    binary: String,
    previous: Option<String>,
    /// The running daemon's version and when it (re)registered; `None`: not running.
    daemon: Option<(String, Instant)>,
    pid: u32,
    /// Its update locks are held until then (`None`: no locks).
    locked_until: Option<Instant>,
}

struct FakeFleet {
    machines: RefCell<BTreeMap<String, FakeMachine>>,
    /// `<id> <what>` for every remote call, in order.
    calls: RefCell<Vec<String>>,
    /// When the fleet was made (the ages of its locks).
    start: Instant,
}

/// How long a restarted fake daemon takes to register.
const REGISTER_DELAY: Duration = Duration::from_secs(1);

impl FakeFleet {
    fn new(kinds: &[(&str, Kind)]) -> Self {
        let now = Instant::now();
        let machines = kinds
            .iter()
            .map(|(id, kind)| {
                let m = FakeMachine {
                    kind: *kind,
                    binary: "1.0".into(),
                    previous: None,
                    daemon: Some(("1.0".into(), now)),
                    pid: 100,
                    locked_until: None,
                };
                ((*id).to_owned(), m)
            })
            .collect();
        Self {
            machines: RefCell::new(machines),
            calls: RefCell::new(Vec::new()),
            start: now,
        }
    }

    fn log(&self, id: &str, what: &str) {
        self.calls.borrow_mut().push(format!("{id} {what}"));
    }

    fn called(&self, line: &str) -> Option<usize> {
        self.calls.borrow().iter().position(|c| c == line)
    }

    /// Restarts the fake daemon from the installed binary.
    fn restart_daemon(&self, id: &str) {
        let mut machines = self.machines.borrow_mut();
        let m = machines.get_mut(id).expect("known machine");
        let broken = m.kind == Kind::BrokenDaemon && m.binary == "2.0";
        m.daemon = (!broken).then(|| (m.binary.clone(), Instant::now() + REGISTER_DELAY));
        m.pid += 1;
    }
}

impl RolloutHost for FakeFleet {
    type Conn = String;

    async fn connect(&self, machine: &Machine) -> Result<String, StepError> {
        self.log(&machine.id, "connect");
        match self.machines.borrow()[&machine.id].kind {
            Kind::Unreachable => Err(StepError::new("cannot reach it", "check the host")),
            _ => Ok(machine.id.clone()),
        }
    }

    async fn observe(&self, machine: &Machine) -> Result<Observation, StepError> {
        let now = Instant::now();
        let mut machines = self.machines.borrow_mut();
        let m = machines.get_mut(&machine.id).expect("known machine");
        if m.kind == Kind::Flapping && m.binary == "2.0" {
            m.pid += 1;
        }
        let Some((version, at)) = m.daemon.clone().filter(|(_, at)| *at <= now) else {
            return Ok(Observation::default());
        };
        let age = now.duration_since(at);
        Ok(Observation {
            daemon: Some(DaemonSeen {
                connected: true,
                version,
                registered_ago: age,
            }),
            nodes: vec![NodeSeen {
                dataflow: "flow".into(),
                node: format!("node-{}", machine.id),
                running: true,
                pid: Some(m.pid),
                restarts: 0,
                reported_ago: Some(age),
            }],
        })
    }

    async fn copy(&self, id: &mut String) -> Result<(), StepError> {
        self.log(id, "copy");
        Ok(())
    }

    async fn check(&self, id: &mut String) -> Result<String, StepError> {
        self.log(id, "check");
        Ok("2.0".into())
    }

    async fn swap(&self, id: &mut String) -> Result<(), StepError> {
        self.log(id, "swap");
        let mut machines = self.machines.borrow_mut();
        let m = machines.get_mut(id.as_str()).expect("known machine");
        m.previous = Some(std::mem::replace(&mut m.binary, "2.0".into()));
        Ok(())
    }

    async fn restart(&self, id: &mut String) -> Result<(), StepError> {
        self.log(id, "restart");
        self.restart_daemon(id);
        Ok(())
    }

    async fn revert(&self, id: &mut String) -> Result<(), StepError> {
        self.log(id, "revert");
        {
            let mut machines = self.machines.borrow_mut();
            let m = machines.get_mut(id.as_str()).expect("known machine");
            m.binary = m.previous.clone().expect("swapped before");
        }
        self.restart_daemon(id);
        Ok(())
    }

    async fn discard(&self, id: &mut String) {
        self.log(id, "discard");
    }

    async fn daemon_log(&self, id: &mut String) -> String {
        format!("last lines of {id}'s log: exit status 1")
    }

    async fn close(&self, id: String) {
        self.log(&id, "close");
    }

    async fn claim(&self, machine: &Machine, force: bool) -> Result<(), ClaimError> {
        let locked = self.machines.borrow()[&machine.id]
            .locked_until
            .is_some_and(|until| until > Instant::now());
        if locked && !force {
            return Err(ClaimError::Locked(format!(
                "machine `{}` has 1 update lock: node `arm` (grasping), held for {}s",
                machine.id,
                self.start.elapsed().as_secs()
            )));
        }
        self.log(&machine.id, "claim");
        Ok(())
    }

    async fn release(&self, machine: &Machine) {
        self.log(&machine.id, "release");
    }
}

fn machines(ids: &[&str]) -> Vec<Machine> {
    let mut yaml = String::from("coordinator: { addr: 10.0.0.1 }\nmachines:\n");
    for id in ids {
        yaml.push_str(&format!(
            "  - {{ id: {id}, host: {id}.lan, user: adora }}\n"
        ));
    }
    ClusterConfig::parse(&yaml, Path::new("cluster.yml"))
        .expect("valid cluster")
        .machines
}

fn policy() -> Policy {
    Policy {
        max_parallel: 2,
        canary: 1,
        min_healthy_time: Duration::from_secs(10),
        healthy_deadline: Duration::from_secs(60),
        auto_revert: true,
        lock_timeout: Duration::from_secs(300),
        on_lock_timeout: OnLockTimeout::Skip,
        force: false,
    }
}

/// Runs the rollout; returns the outcomes by machine and every progress line.
async fn roll_out(
    fleet: &FakeFleet,
    ids: &[&str],
    policy: &Policy,
) -> (Vec<MachineReport>, Vec<String>) {
    let heard = RefCell::new(Vec::new());
    let progress = |p: Progress<'_>| {
        heard.borrow_mut().push(match p {
            Progress::Step {
                id, step, error, ..
            } => format!("{id} {step:?} {}", error.is_none()),
            Progress::Done(r) => format!("{} done {:?}", r.id, r.outcome),
            Progress::Waiting { id, why } => format!("{id} waiting: {why}"),
        })
    };
    let reports = tokio::time::timeout(
        Duration::from_secs(3600),
        run(fleet, &machines(ids), policy, &progress),
    )
    .await
    .expect("the rollout ends");
    (reports, heard.into_inner())
}

fn outcomes(reports: &[MachineReport]) -> Vec<Outcome> {
    reports.iter().map(|r| r.outcome).collect()
}

#[tokio::test(start_paused = true)]
async fn good_rollout_canary_first_then_in_parallel() {
    let ids = ["a", "b", "c"];
    let fleet = FakeFleet::new(&[("a", Kind::Good), ("b", Kind::Good), ("c", Kind::Good)]);
    let (reports, heard) = roll_out(&fleet, &ids, &policy()).await;
    assert_eq!(outcomes(&reports), [Outcome::Upgraded; 3], "{heard:#?}");
    for r in &reports {
        assert_eq!(r.version.as_deref(), Some("2.0"));
        let gate = r
            .steps
            .iter()
            .find(|s| s.step == Step::Gate)
            .expect("gated");
        assert!(gate.seconds >= 10.0, "{r:?}");
        assert_eq!(fleet.machines.borrow()[&r.id].binary, "2.0");
    }
    // The canary passed its gate before anything else was copied; b and c went together.
    let a_done = heard
        .iter()
        .position(|l| l == "a done Upgraded")
        .expect("a");
    let b_copy = fleet.called("b copy").expect("b copied");
    let c_copy = fleet.called("c copy").expect("c copied");
    assert!(fleet.called("a close").expect("a closed") < b_copy);
    assert!(heard.iter().position(|l| l == "b Copy true").expect("b") > a_done);
    assert!(
        c_copy < fleet.called("b close").expect("b closed"),
        "{:?}",
        fleet.calls
    );
}

#[tokio::test(start_paused = true)]
async fn failed_gate_rolls_the_machine_back_and_stops_the_rollout() {
    let ids = ["a", "b", "c"];
    let fleet = FakeFleet::new(&[
        ("a", Kind::BrokenDaemon),
        ("b", Kind::Good),
        ("c", Kind::Good),
    ]);
    let (reports, heard) = roll_out(&fleet, &ids, &policy()).await;
    assert_eq!(
        outcomes(&reports),
        [Outcome::RolledBack, Outcome::Untouched, Outcome::Untouched],
        "{heard:#?}"
    );
    let a = &reports[0];
    let error = a.error.as_deref().expect("why");
    assert!(error.contains("not healthy within 60s"), "{error}");
    assert!(error.contains("exit status 1"), "{error}");
    assert_eq!(a.version.as_deref(), Some("1.0"));
    let steps: Vec<(Step, bool)> = a.steps.iter().map(|s| (s.step, s.ok)).collect();
    assert_eq!(
        steps,
        [
            (Step::Claim, true),
            (Step::Copy, true),
            (Step::Check, true),
            (Step::Swap, true),
            (Step::Restart, true),
            (Step::Gate, false),
            (Step::Revert, true),
            (Step::RevertGate, true),
        ]
    );
    assert_eq!(fleet.machines.borrow()["a"].binary, "1.0");
    assert_eq!(fleet.called("b copy"), None);
    assert_eq!(fleet.called("c copy"), None);
    assert!(fleet.called("b close").is_some(), "sessions are closed");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_machine_stops_the_rollout_before_anything_is_touched() {
    let ids = ["a", "b", "c"];
    let fleet = FakeFleet::new(&[
        ("a", Kind::Good),
        ("b", Kind::Unreachable),
        ("c", Kind::Good),
    ]);
    let (reports, heard) = roll_out(&fleet, &ids, &policy()).await;
    assert_eq!(
        outcomes(&reports),
        [Outcome::Untouched, Outcome::Unreachable, Outcome::Untouched]
    );
    assert_eq!(reports[1].error.as_deref(), Some("cannot reach it"));
    assert!(heard.contains(&"b Connect false".to_owned()), "{heard:#?}");
    assert!(
        fleet.calls.borrow().iter().all(|c| !c.ends_with(" copy")),
        "{:?}",
        fleet.calls
    );
    assert!(fleet.machines.borrow().values().all(|m| m.binary == "1.0"));
}

#[tokio::test(start_paused = true)]
async fn without_auto_revert_a_failed_machine_keeps_the_new_binary() {
    let fleet = FakeFleet::new(&[("a", Kind::BrokenDaemon), ("b", Kind::Good)]);
    let policy = Policy {
        auto_revert: false,
        healthy_deadline: Duration::from_secs(20),
        ..policy()
    };
    let (reports, _) = roll_out(&fleet, &["a", "b"], &policy).await;
    assert_eq!(
        outcomes(&reports),
        [Outcome::NotReverted, Outcome::Untouched]
    );
    assert_eq!(fleet.machines.borrow()["a"].binary, "2.0");
    assert_eq!(fleet.called("a revert"), None);
}

#[tokio::test(start_paused = true)]
async fn a_node_that_keeps_restarting_fails_the_gate() {
    let fleet = FakeFleet::new(&[("a", Kind::Flapping)]);
    let (reports, _) = roll_out(&fleet, &["a"], &policy()).await;
    assert_eq!(outcomes(&reports), [Outcome::RolledBack]);
    let error = reports[0].error.as_deref().expect("why");
    assert!(error.contains("a node restarted"), "{error}");
}

/// Locks machine `id` of `fleet` for `secs` seconds from now (`u64::MAX`: for good).
fn lock_for(fleet: &FakeFleet, id: &str, secs: u64) {
    let until = Instant::now() + Duration::from_secs(secs.min(1 << 30));
    fleet
        .machines
        .borrow_mut()
        .get_mut(id)
        .expect("known")
        .locked_until = Some(until);
}

#[tokio::test(start_paused = true)]
async fn a_locked_machine_waits_for_its_lock_then_upgrades() {
    let fleet = FakeFleet::new(&[("a", Kind::Good)]);
    lock_for(&fleet, "a", 70);
    let (reports, heard) = roll_out(&fleet, &["a"], &policy()).await;
    assert_eq!(outcomes(&reports), [Outcome::Upgraded], "{heard:#?}");
    let claim = reports[0]
        .steps
        .iter()
        .find(|s| s.step == Step::Claim)
        .expect("claimed");
    assert!(claim.seconds >= 70.0, "{claim:?}");
    // Said at once, then every 30 s while the holders stay the same, not at every poll.
    let waiting: Vec<String> = heard
        .iter()
        .filter(|l| l.contains("waiting"))
        .cloned()
        .collect();
    let said = |secs| {
        format!("a waiting: machine `a` has 1 update lock: node `arm` (grasping), held for {secs}s")
    };
    assert_eq!(waiting, [said(0), said(30), said(60)]);
    assert!(fleet.called("a claim").expect("claimed") < fleet.called("a copy").expect("copied"));
    assert!(
        fleet.called("a release").expect("released")
            > fleet.called("a restart").expect("restarted")
    );
}

#[tokio::test(start_paused = true)]
async fn a_machine_locked_past_the_timeout_is_skipped_and_the_others_go_on() {
    let fleet = FakeFleet::new(&[("a", Kind::Good), ("b", Kind::Good)]);
    lock_for(&fleet, "a", u64::MAX);
    let policy = Policy {
        lock_timeout: Duration::from_secs(60),
        ..policy()
    };
    let (reports, heard) = roll_out(&fleet, &["a", "b"], &policy).await;
    assert_eq!(
        outcomes(&reports),
        [Outcome::Locked, Outcome::Upgraded],
        "{heard:#?}"
    );
    let error = reports[0].error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("still locked after 60s: machine `a` has 1 update lock"),
        "{error}"
    );
    assert_eq!(
        fleet.called("a copy"),
        None,
        "a locked machine is not touched"
    );
    assert_eq!(fleet.machines.borrow()["a"].binary, "1.0");
}

#[tokio::test(start_paused = true)]
async fn with_fail_a_locked_machine_stops_the_rollout_and_force_ignores_locks() {
    let fleet = FakeFleet::new(&[("a", Kind::Good), ("b", Kind::Good)]);
    lock_for(&fleet, "a", u64::MAX);
    let fail = Policy {
        lock_timeout: Duration::from_secs(10),
        on_lock_timeout: OnLockTimeout::Fail,
        ..policy()
    };
    let (reports, _) = roll_out(&fleet, &["a", "b"], &fail).await;
    assert_eq!(outcomes(&reports), [Outcome::Failed, Outcome::Untouched]);
    let forced = Policy {
        force: true,
        ..fail
    };
    let (reports, _) = roll_out(&fleet, &["a", "b"], &forced).await;
    assert_eq!(outcomes(&reports), [Outcome::Upgraded, Outcome::Upgraded]);
}

#[test]
fn lock_ages_are_ignored_when_telling_holders_apart() {
    assert_eq!(
        without_ages(
            "machine `a` has 2 update locks: x (y), held for 12s; an operator (z), held for 3600s"
        ),
        "machine `a` has 2 update locks: x (y); an operator (z)"
    );
    assert_eq!(without_ages("held for nothing"), "held for nothing");
}
