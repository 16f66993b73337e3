//! Maintenance of live machines: cordons, update locks and operation claims
//! ([`MachineMaintenance`], one per machine name), kept in the store and answered only once
//! stored, so what a client was told survives a coordinator restart.
//!
//! - A **cordon** keeps new placements off a machine (`start.rs` asks [`Coordinator::unavailable`]).
//! - An **update lock** is held by an operator (`cluster lock`) or by a node (`update_lock` in its
//!   node API, through its daemon: `TakeLock` / `ReleaseLocks`). A node's locks go when it
//!   exits, when its daemon re-registers without them, or when its daemon is lost.
//! - A **claim** is a maintenance operation (`upgrade`, `drain`, `restart`) on the machine: one at
//!   a time, refused while locks are held (unless forced), with a lease the client renews.

use std::time::Duration;

use adora_message::{
    cli_to_coordinator::ControlRequest,
    control::{ControlError, ErrorKind},
    coordinator_to_cli::ControlReply,
    coordinator_to_daemon::DaemonCommand,
    envelope::Envelope,
    maintenance::{
        Claim, Cordon, LockHolder, MachineMaintenance, NodeLock, Operation, UpdateLock,
        MAX_REASON_LEN,
    },
};
use adora_store::now_ms;
use uuid::Uuid;

use crate::actor::{reply, ClientTx, Coordinator, Outgoing};

/// Longest lease a claim may ask for.
const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);

impl Coordinator {
    /// The maintenance requests (`cluster cordon|uncordon|lock|unlock`, claims, listing).
    pub(crate) fn maintenance_request(&mut self, request: ControlRequest, tx: ClientTx, id: u64) {
        let result = match request {
            ControlRequest::Maintenance => {
                let all = self.maintenance_view();
                return reply(&tx, id, ControlReply::Maintenance(all));
            }
            ControlRequest::SetCordon { machine, reason } => self.set_cordon(&machine, reason),
            ControlRequest::SetOperatorLock { machine, reason } => {
                self.set_operator_lock(&machine, reason)
            }
            ControlRequest::Claim {
                machine,
                operation,
                id: claim,
                lease,
                force,
            } => self.claim(&machine, operation, claim, lease, force),
            ControlRequest::ReleaseClaim { machine, id: claim } => {
                self.release_claim(&machine, claim)
            }
            ControlRequest::Drain {
                machine,
                deadline,
                force,
            } => self.start_drain(&machine, deadline, force),
            other => Err(ControlError::new(
                ErrorKind::Internal,
                format!("not a maintenance request: {other:?}"),
            )),
        };
        match result {
            Ok(machine) => {
                let answer = ControlReply::Maintenance(vec![self.maintenance_of(&machine)]);
                self.reply_when_stored(tx, id, answer);
            }
            Err(e) => reply(&tx, id, ControlReply::Error(e)),
        }
    }

    /// Every machine the coordinator knows or has maintenance state for, by name.
    fn maintenance_view(&self) -> Vec<MachineMaintenance> {
        let mut names: Vec<String> = self.daemons.iter().map(|d| d.name().to_owned()).collect();
        names.extend(self.maintenance.keys().cloned());
        names.sort();
        names.dedup();
        names.iter().map(|n| self.maintenance_of(n)).collect()
    }

    /// A machine's record (an empty one when nothing is recorded).
    pub(crate) fn maintenance_of(&self, machine: &str) -> MachineMaintenance {
        self.maintenance
            .get(machine)
            .cloned()
            .unwrap_or_else(|| MachineMaintenance::new(machine))
    }

    /// Why new nodes may not go to `machine` now, if they may not.
    pub(crate) fn unavailable(&self, machine: &str) -> Option<String> {
        self.maintenance.get(machine)?.unavailable(now_ms())
    }

    /// The name of a known machine, or an error listing the known ones.
    pub(crate) fn known_machine(&self, machine: &str) -> Result<String, ControlError> {
        if self.daemons.iter().any(|d| d.name() == machine)
            || self.maintenance.contains_key(machine)
        {
            return Ok(machine.to_owned());
        }
        let mut known: Vec<&str> = self.daemons.iter().map(|d| d.name()).collect();
        known.sort_unstable();
        Err(ControlError::new(
            ErrorKind::NotFound,
            format!(
                "no machine `{machine}` is known to the coordinator (known: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        ))
    }

    /// Changes a machine's record and stores it (or forgets it once empty).
    pub(crate) fn update_maintenance(
        &mut self,
        machine: &str,
        change: impl FnOnce(&mut MachineMaintenance),
    ) {
        let mut record = self.maintenance_of(machine);
        change(&mut record);
        let stored = if record.is_empty() {
            self.maintenance.remove(machine);
            self.store.remove_maintenance(&[machine.to_owned()])
        } else {
            let stored = self.store.put_maintenance(&record);
            self.maintenance.insert(machine.to_owned(), record);
            stored
        };
        if let Err(e) = stored {
            tracing::error!("cannot store the maintenance state of `{machine}`: {e}");
        }
    }

    fn set_cordon(
        &mut self,
        machine: &str,
        reason: Option<String>,
    ) -> Result<String, ControlError> {
        let machine = self.known_machine(machine)?;
        let reason = reason.map(|r| checked_reason(&r, "cordon")).transpose()?;
        if reason.is_none()
            && self
                .maintenance_of(&machine)
                .drain
                .as_ref()
                .is_some_and(|d| !d.done)
        {
            return Err(ControlError::new(
                ErrorKind::Busy,
                format!(
                    "machine `{machine}` is being drained: it is uncordoned once the drain is over"
                ),
            ));
        }
        self.update_maintenance(&machine, |m| match reason {
            Some(reason) => {
                tracing::info!("machine `{}` cordoned: {reason}", m.machine);
                m.cordon = Some(Cordon {
                    reason,
                    since_ms: now_ms(),
                });
            }
            None => {
                tracing::info!("machine `{}` uncordoned", m.machine);
                m.cordon = None;
                m.drain = None;
            }
        });
        Ok(machine)
    }

    fn set_operator_lock(
        &mut self,
        machine: &str,
        reason: Option<String>,
    ) -> Result<String, ControlError> {
        let machine = self.known_machine(machine)?;
        let reason = reason.map(|r| checked_reason(&r, "lock")).transpose()?;
        self.update_maintenance(&machine, |m| {
            m.locks.retain(|l| l.holder != LockHolder::Operator);
            if let Some(reason) = reason {
                m.locks.push(UpdateLock {
                    holder: LockHolder::Operator,
                    reason,
                    since_ms: now_ms(),
                });
            }
        });
        Ok(machine)
    }

    fn claim(
        &mut self,
        machine: &str,
        operation: Operation,
        claim: Uuid,
        lease: Duration,
        force: bool,
    ) -> Result<String, ControlError> {
        // Any name: an upgrade may install a machine whose daemon never connected yet.
        let machine = checked_machine_name(machine)?;
        let lease = lease.min(MAX_LEASE);
        let now = now_ms();
        self.check_claimable(&machine, claim, force, now)?;
        self.update_maintenance(&machine, |m| {
            let since_ms = m
                .live_claim(now)
                .filter(|c| c.id == claim)
                .map_or(now, |c| c.since_ms);
            m.claim = Some(Claim {
                operation,
                id: claim,
                since_ms,
                expires_ms: now.saturating_add(lease.as_millis() as u64),
            });
        });
        Ok(machine)
    }

    /// `Busy` when another operation has the machine, `Locked` when it has update locks (and
    /// `force` is off); `claim` may renew its own.
    pub(crate) fn check_claimable(
        &self,
        machine: &str,
        claim: Uuid,
        force: bool,
        now: u64,
    ) -> Result<(), ControlError> {
        let record = self.maintenance_of(machine);
        if let Some(other) = record.live_claim(now).filter(|c| c.id != claim) {
            return Err(busy(machine, other.operation));
        }
        if record.drain.as_ref().is_some_and(|d| !d.done) {
            return Err(busy(machine, Operation::Drain));
        }
        if !force && !record.locks.is_empty() {
            return Err(locked(&record, now));
        }
        Ok(())
    }

    fn release_claim(&mut self, machine: &str, claim: Uuid) -> Result<String, ControlError> {
        let machine = checked_machine_name(machine)?;
        self.update_maintenance(&machine, |m| {
            if m.claim.as_ref().is_some_and(|c| c.id == claim) {
                m.claim = None;
            }
        });
        Ok(machine)
    }

    /// A node asks for an update lock through its daemon: granted unless an operation has the
    /// machine; answered once stored.
    pub(crate) fn take_node_lock(&mut self, daemon: &str, request: u64, lock: NodeLock) {
        let now = now_ms();
        let record = self.maintenance_of(daemon);
        let refused = match record.live_claim(now) {
            Some(claim) => Some(busy(daemon, claim.operation)),
            None if record.drain.as_ref().is_some_and(|d| !d.done) => {
                Some(busy(daemon, Operation::Drain))
            }
            None => checked_reason(&lock.reason, "lock").err(),
        };
        let Some(tx) = self.daemon_tx(daemon).cloned() else {
            return;
        };
        let answer = move |result| {
            let command = DaemonCommand::LockAnswer { request, result };
            let _ = tx.send(Outgoing::Message(Envelope::new(0, command)));
        };
        if let Some(e) = refused {
            tracing::info!("refused an update lock of node `{}`: {e}", lock.node);
            return answer(Err(e));
        }
        tracing::info!(
            "machine `{daemon}`: node `{}` took an update lock ({})",
            lock.node,
            lock.reason
        );
        let holder = node_holder(&lock, self.dataflow_name(lock.dataflow));
        self.update_maintenance(daemon, |m| {
            m.locks.retain(|l| !l.holder.same(&holder));
            m.locks.push(UpdateLock {
                holder,
                reason: lock.reason,
                since_ms: now,
            });
        });
        let store = self.store.clone();
        self.tasks
            .spawn_blocking("storing an update lock", move || match store.sync() {
                Ok(()) => answer(Ok(())),
                Err(e) => answer(Err(ControlError::new(
                    ErrorKind::Internal,
                    format!("the coordinator could not store the lock: {e}"),
                ))),
            });
    }

    /// A node released update locks (`locks` empty: all of them).
    pub(crate) fn release_node_locks(
        &mut self,
        daemon: &str,
        dataflow: Uuid,
        node: &adora_core::NodeId,
        locks: &[u64],
    ) {
        if !self.maintenance.contains_key(daemon) {
            return;
        }
        self.update_maintenance(daemon, |m| {
            m.locks.retain(|l| match &l.holder {
                LockHolder::Node {
                    dataflow: d,
                    node: n,
                    lock,
                    ..
                } => !(*d == dataflow && n == node && (locks.is_empty() || locks.contains(lock))),
                LockHolder::Operator => true,
            });
        });
    }

    /// A daemon registered: its nodes' locks are the ones it reports, nothing else.
    pub(crate) fn replace_node_locks(&mut self, daemon: &str, reported: &[NodeLock]) {
        let known = self.maintenance.get(daemon).is_some_and(|m| {
            m.locks
                .iter()
                .any(|l| matches!(l.holder, LockHolder::Node { .. }))
        });
        if !known && reported.is_empty() {
            return;
        }
        let now = now_ms();
        let holders: Vec<LockHolder> = reported
            .iter()
            .map(|l| node_holder(l, self.dataflow_name(l.dataflow)))
            .collect();
        self.update_maintenance(daemon, |m| {
            let previous = std::mem::take(&mut m.locks);
            m.locks = previous
                .iter()
                .filter(|l| l.holder == LockHolder::Operator)
                .cloned()
                .collect();
            for (lock, holder) in reported.iter().zip(holders) {
                let since_ms = previous
                    .iter()
                    .find(|l| l.holder.same(&holder))
                    .map_or(now, |l| l.since_ms);
                m.locks.push(UpdateLock {
                    holder,
                    reason: lock.reason.clone(),
                    since_ms,
                });
            }
        });
    }

    /// Answers `answer` on `tx` once the store has every write queued so far; an error instead
    /// when it could not store them.
    pub(crate) fn reply_when_stored(&self, tx: ClientTx, id: u64, answer: ControlReply) {
        let store = self.store.clone();
        self.tasks
            .spawn_blocking("storing a change", move || match store.sync() {
                Ok(()) => reply(&tx, id, answer),
                Err(e) => reply(
                    &tx,
                    id,
                    ControlReply::Error(ControlError::new(
                        ErrorKind::Internal,
                        format!("the change could not be stored, so it may not last: {e}"),
                    )),
                ),
            });
    }
}

impl Coordinator {
    /// The name of a dataflow this coordinator knows (empty when it does not).
    fn dataflow_name(&self, id: Uuid) -> String {
        self.flows
            .get(&id)
            .map(|f| f.record.name.clone())
            .unwrap_or_default()
    }
}

/// The holder of a node's lock.
fn node_holder(lock: &NodeLock, dataflow_name: String) -> LockHolder {
    LockHolder::Node {
        dataflow: lock.dataflow,
        dataflow_name,
        node: lock.node.clone(),
        lock: lock.lock,
    }
}

/// "machine `x` is being upgraded by another operation".
fn busy(machine: &str, operation: Operation) -> ControlError {
    ControlError::new(
        ErrorKind::Busy,
        format!(
            "machine `{machine}` is being {} by another operation",
            operation.participle()
        ),
    )
}

/// "machine `x` has update locks: ..." naming each holder, its reason and its age.
pub(crate) fn locked(record: &MachineMaintenance, now: u64) -> ControlError {
    let holders: Vec<String> = record
        .locks
        .iter()
        .map(|l| {
            let secs = now.saturating_sub(l.since_ms) / 1000;
            format!("{l}, held for {secs}s")
        })
        .collect();
    ControlError::new(
        ErrorKind::Locked,
        format!(
            "machine `{}` has {} update lock{}: {}",
            record.machine,
            holders.len(),
            if holders.len() == 1 { "" } else { "s" },
            holders.join("; ")
        ),
    )
}

/// A machine name from a client: not empty, not absurdly long.
fn checked_machine_name(machine: &str) -> Result<String, ControlError> {
    if machine.is_empty() || machine.len() > 253 {
        return Err(ControlError::new(
            ErrorKind::InvalidRequest,
            format!("`{machine}` is not a machine name"),
        ));
    }
    Ok(machine.to_owned())
}

/// A reason as given, trimmed; an error when it is empty or too long.
fn checked_reason(reason: &str, what: &str) -> Result<String, ControlError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(ControlError::new(
            ErrorKind::InvalidRequest,
            format!("a {what} needs a reason (--reason TEXT)"),
        ));
    }
    if reason.len() > MAX_REASON_LEN {
        return Err(ControlError::new(
            ErrorKind::InvalidRequest,
            format!(
                "the {what} reason is {} bytes long; at most {MAX_REASON_LEN} are kept",
                reason.len()
            ),
        ));
    }
    Ok(reason.to_owned())
}
