//! The lifecycle of one dataflow on this daemon: spawn every node, hold them at a start barrier
//! until all have connected, supervise them, stop them with escalation, and collect outcomes.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::ExitStatus,
    time::Duration,
};

use adora_core::NodeId;
use adora_message::{
    control::{DataflowOutcome, NodeLogLine, NodeResult},
    node_to_daemon::Channel,
};
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

mod arrival;
mod health;
mod launch;
mod log_outputs;
pub(crate) use log_outputs::log_message;
mod node_requests;
mod pools;
mod relocate;
mod remote_links;
mod restarts;
pub(crate) mod stats;
mod stop_nodes;

pub(crate) use relocate::Answer;
mod timers;

use crate::{
    config::{DaemonConfig, DataflowSpec},
    event::{Escalation, Event},
    remote::links::RemoteLinks,
    restart::RestartTracker,
    result::DataflowResult,
    routing::Routing,
    spawn::{self, NodeCommand},
};
use adora_tasks::Tasks;

/// How long a node's log readers may keep going after the process exited (a grandchild can hold
/// the pipes open forever).
pub const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// When the nodes that have not connected yet are named (if the connect timeout is longer).
pub const CONNECT_LATE_AFTER: Duration = Duration::from_secs(5);

/// How long a dataflow whose nodes all ended waits for its publishers to take what the nodes
/// left in their publish lanes (a link that does not come back).
pub const PUBLISH_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct NodeRuntime {
    pid: Option<u32>,
    running: bool,
    channels: BTreeSet<Channel>,
    /// The control connection is registered and not yet closed: frames may still be in flight.
    control_open: bool,
    terminated_by: Option<Signal>,
    failure: Option<String>,
    /// Its restart policy's bookkeeping (kept across instances).
    restart: Option<RestartTracker>,
    /// Exited; a new instance starts after the restart delay.
    restarting: bool,
    /// How to start it again.
    command: Option<NodeCommand>,
    /// It has a `health_check_timeout`: its requests are timed (`last_contact`).
    watched: bool,
    /// The last request on any of its connections (see `health.rs`).
    last_contact: Option<std::time::Instant>,
    /// What it had taken from its lanes at the last health check, and since when entries wait
    /// in them without it taking any (see `health.rs`).
    lanes_taken: u64,
    lanes_stuck_since: Option<std::time::Instant>,
    /// Why its health check killed this instance (it may still be restarted).
    health_failure: Option<String>,
    /// Stopped on its own (`stop_nodes`): its restart policy does not apply any more.
    stopped: bool,
    /// The prefix of the running instance's sample pool (see `pools.rs`).
    pool: Option<String>,
}

pub(crate) struct Dataflow {
    pub spec: DataflowSpec,
    pub routing: Routing,
    nodes: BTreeMap<NodeId, NodeRuntime>,
    /// Nodes that have not registered their control channel yet.
    pending: BTreeSet<NodeId>,
    /// Control registrations parked until every node connected (and remote receivers matched).
    barrier: Vec<(NodeId, oneshot::Sender<Result<(), String>>)>,
    started: bool,
    stopping: bool,
    outcomes: BTreeMap<NodeId, NodeResult>,
    logs: mpsc::UnboundedSender<NodeLogLine>,
    /// Cancels timers and scheduled escalations when the dataflow ends.
    cancel: CancellationToken,
    done: Option<oneshot::Sender<DataflowResult>>,
    /// Links to nodes on other machines (Zenoh).
    pub(crate) remote: RemoteLinks,
    /// The daemon's node socket (to start restarted nodes).
    socket: std::path::PathBuf,
    /// The daemon's tasks: node watchers, log readers, timers and scheduled events.
    tasks: Tasks,
    /// Nodes moving to or away from this daemon (`relocate.rs`).
    moves: relocate::Moves,
    /// The daemon's taps (a node's log reader copies its tapped log outputs there).
    taps: crate::tap::Taps,
    /// Pool prefixes of ended node instances whose samples are not all removed yet, with their
    /// node (`pools.rs`).
    ended_pools: Vec<(NodeId, String)>,
    /// When the nodes had all ended while publish lanes still held messages.
    publishing_since: std::sync::OnceLock<std::time::Instant>,
}

/// What a dataflow needs from its daemon to start its nodes.
pub(crate) struct Launch<'a> {
    /// Supervision settings.
    pub config: &'a DaemonConfig,
    /// The node socket the nodes connect to.
    pub socket: &'a std::path::Path,
    /// The actor's event channel.
    pub events: &'a mpsc::Sender<Event>,
    /// The owner of the dataflow's tasks.
    pub tasks: &'a Tasks,
    /// The daemon's taps (an output watched from the start gets no lanes).
    pub taps: &'a crate::tap::Taps,
}

/// Prefix of every shared-memory segment this daemon's part of a dataflow creates; the daemon
/// sweeps it when that part ends. It names the daemon (by pid) as well as the dataflow: several
/// daemons of one dataflow may share a machine's `/dev/shm`, and one must never remove samples
/// another is still delivering.
pub(crate) fn shm_prefix(id: uuid::Uuid) -> String {
    let simple = id.simple().to_string();
    format!("adora-{}-{:x}-", &simple[..12], std::process::id())
}

/// Removes the shared memory of daemons that died without cleaning up (`kill -9`, a crash):
/// segments named by [`shm_prefix`] whose process no longer exists. Their nodes died with
/// them, so nothing maps them any more. Called when a daemon starts; returns how many it
/// removed.
pub(crate) fn remove_orphaned_segments() -> usize {
    let Ok(names) = adora_shm::list_segments("adora-") else {
        return 0;
    };
    let own = std::process::id();
    let dead = |name: &str| {
        // adora-<12 hex digits of the dataflow>-<pid in hex>-...
        let mut fields = name.split('-').skip(1);
        let dataflow = fields.next().filter(|d| d.len() == 12)?;
        u128::from_str_radix(dataflow, 16).ok()?;
        let pid = u32::from_str_radix(fields.next()?, 16).ok()?;
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None)
            == Err(nix::errno::Errno::ESRCH);
        (pid != own && pid > 0 && gone).then_some(())
    };
    let mut removed = 0;
    for name in names.iter().filter(|n| dead(n).is_some()) {
        match adora_shm::unlink(name) {
            Ok(()) => removed += 1,
            Err(e) => tracing::debug!("cannot remove orphaned segment {name}: {e}"),
        }
    }
    if removed > 0 {
        tracing::info!("removed {removed} shared-memory segment(s) of daemons that are gone");
    }
    removed
}

impl Dataflow {
    /// The nodes this daemon spawned, and whether each is still running.
    pub fn node_states(&self) -> BTreeMap<NodeId, bool> {
        self.nodes
            .iter()
            .filter(|(id, _)| !self.moves.hides(id))
            .map(|(id, rt)| (id.clone(), rt.running))
            .collect()
    }

    /// A node connection registered. The control channel waits at the start barrier.
    pub fn register(
        &mut self,
        node: &NodeId,
        channel: Channel,
        reply: oneshot::Sender<Result<(), String>>,
        events: &mpsc::Sender<Event>,
    ) {
        let Some(runtime) = self.nodes.get_mut(node) else {
            let _ = reply.send(Err(format!(
                "node `{node}` is not part of dataflow {}",
                self.spec.id
            )));
            return;
        };
        if !runtime.running {
            let _ = reply.send(Err(format!("node `{node}` is not running")));
            return;
        }
        runtime.last_contact = Some(std::time::Instant::now());
        if !runtime.channels.insert(channel) {
            let _ = reply.send(Err(format!(
                "node `{node}` already has a {channel:?} connection"
            )));
            return;
        }
        if channel != Channel::Control || self.started {
            if channel == Channel::Control {
                runtime.control_open = true;
            }
            let _ = reply.send(Ok(()));
            if channel == Channel::Control {
                self.arrival_connected(node);
            }
            return;
        }
        // Parked: the node cannot send anything until it is released, and its connection task
        // waits for the reply instead of reading, so a node dying here closes nothing the daemon
        // would notice. Its control connection counts as open only once released.
        self.barrier.push((node.clone(), reply));
        self.pending.remove(node);
        self.maybe_release_barrier(events);
    }

    fn maybe_release_barrier(&mut self, events: &mpsc::Sender<Event>) {
        if self.started || !self.pending.is_empty() || !self.remote.unmatched.is_empty() {
            return;
        }
        self.started = true;
        for (node, waiter) in std::mem::take(&mut self.barrier) {
            if let Some(rt) = self.nodes.get_mut(&node) {
                rt.control_open = rt.running;
            }
            let _ = waiter.send(Ok(()));
            self.arrival_connected(&node);
        }
        self.spawn_timers(events);
        self.spawn_watchdogs(events);
    }

    /// [`CONNECT_LATE_AFTER`] after the spawn: tells about the nodes that have not connected yet,
    /// long before the connect timeout fails them (a node that never calls the node API would
    /// otherwise say nothing for the whole timeout).
    pub fn connect_late(&self, after: Duration) {
        if self.started {
            return;
        }
        for node in &self.pending {
            tracing::warn!(
                "node `{node}` started but has not connected after {}: does it use the node API (`AdoraNode::init_from_env`, Python `Node()`)? It fails at the connect timeout",
                humantime::format_duration(after)
            );
        }
    }

    /// The connect timeout expired: nodes that never connected fail, the rest is stopped.
    pub fn connect_timeout(
        &mut self,
        timeout: Duration,
        events: &mpsc::Sender<Event>,
        config: &DaemonConfig,
    ) {
        if self.started {
            return;
        }
        for (node, output) in std::mem::take(&mut self.remote.unmatched) {
            tracing::warn!(
                "no receiver on another machine subscribed to `{node}/{output}` within {}; starting anyway (messages sent before it subscribes are lost)",
                humantime::format_duration(timeout)
            );
        }
        if self.pending.is_empty() {
            self.maybe_release_barrier(events);
            return;
        }
        let late: Vec<NodeId> = self.pending.iter().cloned().collect();
        for node in &late {
            if let Some(rt) = self.nodes.get_mut(node) {
                rt.failure = Some(format!(
                    "did not connect to the daemon within {} (does it call AdoraNode::init_from_env?)",
                    humantime::format_duration(timeout)
                ));
                if let (true, Some(pid)) = (rt.running, rt.pid) {
                    spawn::signal_group(pid, Signal::SIGKILL);
                }
            }
        }
        self.pending.clear();
        self.maybe_release_barrier(events);
        self.stop(events, config);
    }

    /// Begins a graceful stop: Stop events now, SIGTERM after the stop grace, SIGKILL after that.
    pub fn stop(&mut self, events: &mpsc::Sender<Event>, config: &DaemonConfig) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.routing.stop_all();
        self.cancel_restarts(events);
        self.schedule(
            events,
            config.stop_grace,
            Event::Escalate {
                dataflow: self.spec.id,
                step: Escalation::Terminate,
            },
        );
    }

    pub fn escalate(
        &mut self,
        step: Escalation,
        events: &mpsc::Sender<Event>,
        config: &DaemonConfig,
    ) {
        let signal = step.signal();
        for (id, rt) in &mut self.nodes {
            if let (true, Some(pid)) = (rt.running, rt.pid) {
                tracing::info!("node `{id}` did not exit in time; sending {signal}");
                rt.terminated_by = Some(signal);
                spawn::signal_group(pid, signal);
            }
        }
        if step == Escalation::Terminate {
            self.schedule(
                events,
                config.kill_grace,
                Event::Escalate {
                    dataflow: self.spec.id,
                    step: Escalation::Kill,
                },
            );
        }
    }

    /// A node process ended. Returns true when the whole dataflow is done.
    pub fn node_exited(
        &mut self,
        node: &NodeId,
        status: std::io::Result<ExitStatus>,
        stderr_tail: Vec<String>,
        events: &mpsc::Sender<Event>,
    ) -> bool {
        let why = || match &status {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        };
        self.instance_ended(node, events);
        if let Some(finished) = self.quiet_exit(node, why, events) {
            return finished;
        }
        let rt = self.nodes.entry(node.clone()).or_default();
        rt.running = false;
        // The exit can overtake the node's last frames, still queued on its control connection:
        // routing forgets the node only once that connection has drained (`control_closed`).
        let drained = !rt.control_open;
        let outcome = outcome(rt, status, stderr_tail);
        // Kill anything the node left behind in its process group.
        if let Some(pid) = rt.pid {
            spawn::signal_group(pid, Signal::SIGKILL);
        }
        let outcome = match self.restart_decision(node, outcome, events) {
            Some(outcome) => outcome,
            None => return false, // a new instance comes after the restart delay
        };
        if let NodeResult::Failed { reason, .. } = &outcome {
            tracing::warn!("node `{node}` failed: {reason}");
        }
        self.outcomes.insert(node.clone(), outcome);
        if self.pending.remove(node) {
            self.maybe_release_barrier(events);
        }
        if drained {
            self.close_all_outputs(node);
            self.routing.node_exited(node);
            self.recycle_remote_samples();
        }
        self.is_finished()
    }

    /// The node's control connection closed after its last frame was handled: its outputs close.
    /// Returns true when the whole dataflow is done.
    pub fn control_closed(&mut self, node: &NodeId, events: &mpsc::Sender<Event>) -> bool {
        if let Some(finished) = self.quiet_control_closed(node, events) {
            return finished;
        }
        let Some(rt) = self.nodes.get_mut(node) else {
            return false;
        };
        rt.control_open = false;
        let exited = !rt.running;
        if rt.restarting {
            self.routing.node_restarting(node);
            self.recycle_remote_samples();
            return false;
        }
        if !exited && self.may_restart(node) {
            // Wait for the exit status: the restart policy decides whether the outputs close.
            return false;
        }
        self.close_all_outputs(node);
        if exited {
            self.routing.node_exited(node);
            self.recycle_remote_samples();
        }
        self.is_finished()
    }

    /// Closes every output of a local node, here and on other machines.
    /// While the process runs, its log outputs stay open for its last lines.
    pub fn close_all_outputs(&mut self, node: &NodeId) {
        let mut outputs: Vec<adora_core::DataId> = self
            .spec
            .descriptor
            .nodes
            .iter()
            .find(|n| &n.id == node)
            .map(|n| n.outputs.clone())
            .unwrap_or_default();
        if self.nodes.get(node).is_some_and(|rt| rt.running) {
            let log_outputs = self.log_outputs(node);
            outputs.retain(|o| !log_outputs.contains(o));
        }
        let closed = self.routing.close_outputs(node, &outputs);
        self.remote_closed(node, &closed);
    }

    /// Every node process has exited, every control connection has drained, and the publishers
    /// took what the nodes left in their publish lanes (their shared memory goes with the
    /// dataflow; at most [`PUBLISH_DRAIN_TIMEOUT`]).
    pub(crate) fn is_finished(&self) -> bool {
        self.nodes_ended() && !self.still_publishing()
    }

    /// Every node process has exited and every control connection has drained.
    pub(crate) fn nodes_ended(&self) -> bool {
        (self.nodes.values()).all(|rt| !rt.running && !rt.control_open && !rt.restarting)
    }

    fn still_publishing(&self) -> bool {
        if !self.routing.publishing() {
            return false;
        }
        let since = *self.publishing_since.get_or_init(std::time::Instant::now);
        if since.elapsed() < PUBLISH_DRAIN_TIMEOUT {
            return true;
        }
        tracing::warn!(
            "dataflow {}: messages for other machines were still waiting to be published {:?} \
             after its nodes ended; they are dropped",
            self.spec.id,
            PUBLISH_DRAIN_TIMEOUT
        );
        false
    }

    /// Finishes the dataflow: cancels timers, removes leftover shared memory, reports the result.
    pub fn finish(mut self) {
        self.cancel.cancel();
        match adora_shm::unlink_all(&shm_prefix(self.spec.id)) {
            Ok(0) => {}
            Ok(n) => tracing::debug!("removed {n} leftover shared-memory segments"),
            Err(e) => tracing::warn!("cannot clean up shared memory: {e}"),
        }
        let result = DataflowResult {
            outcome: DataflowOutcome {
                nodes: std::mem::take(&mut self.outcomes),
            },
            counters: self.routing.counters(),
            restarts: self.restart_counts(),
        };
        if let Some(done) = self.done.take() {
            let _ = done.send(result);
        }
    }
}

fn outcome(
    rt: &NodeRuntime,
    status: std::io::Result<ExitStatus>,
    stderr_tail: Vec<String>,
) -> NodeResult {
    use std::os::unix::process::ExitStatusExt;
    if let Some(reason) = rt.failure.as_ref().or(rt.health_failure.as_ref()) {
        return NodeResult::Failed {
            reason: reason.clone(),
            stderr_tail,
        };
    }
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            return NodeResult::Failed {
                reason: format!("cannot wait for the process: {e}"),
                stderr_tail,
            }
        }
    };
    if status.success() {
        return NodeResult::Finished;
    }
    let by_signal = status.signal().and_then(|s| Signal::try_from(s).ok());
    match (by_signal, rt.terminated_by) {
        (Some(sig), Some(sent)) if sig == sent || sig == Signal::SIGKILL => {
            NodeResult::Terminated {
                signal: sig.to_string(),
            }
        }
        // A node that exits non-zero because of our SIGTERM (common for handlers) is terminated too.
        (None, Some(_)) => NodeResult::Terminated {
            signal: Signal::SIGTERM.to_string(),
        },
        (Some(sig), _) => NodeResult::Failed {
            reason: format!("killed by signal {sig}"),
            stderr_tail,
        },
        (None, None) => NodeResult::Failed {
            reason: format!(
                "exit status {}{}",
                status.code().unwrap_or(-1),
                crate::spawn::missing_python_package(&stderr_tail).unwrap_or_default()
            ),
            stderr_tail,
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_of_dead_daemons_are_removed_and_live_ones_kept() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let dead = child.id();
        child.wait().expect("exits");
        let own = std::process::id();
        let name = |pid: u32| format!("adora-0123456789ab-{pid:x}-orphan-test");
        let orphan = adora_shm::ShmRegion::create(&name(dead), 4096).expect("create");
        let live = adora_shm::ShmRegion::create(&name(own), 4096).expect("create");
        let (orphan_id, live_id) = (orphan.os_id().to_owned(), live.os_id().to_owned());
        drop((orphan, live));
        assert!(super::remove_orphaned_segments() >= 1);
        let left = adora_shm::list_segments("adora-0123456789ab-").expect("list");
        assert!(!left.contains(&orphan_id), "{left:?}");
        assert!(left.contains(&live_id), "{left:?}");
        adora_shm::unlink(&live_id).expect("cleanup");
    }
}
