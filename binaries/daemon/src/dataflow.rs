//! The lifecycle of one dataflow on this daemon: spawn every node, hold them at a start barrier
//! until all have connected, supervise them, stop them with escalation, and collect outcomes.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::ExitStatus,
    time::Duration,
};

use adora_core::NodeId;
use adora_message::{node_to_daemon::Channel, NodeConfig};
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

mod remote_links;
mod restarts;
mod stats;

pub(crate) use stats::NodeSnapshot;

use remote_links::RemoteLinks;

use crate::{
    actor::Event,
    restart::RestartTracker,
    routing::Routing,
    spawn::{self, NodeCommand},
    DaemonConfig, DaemonError, DataflowResult, DataflowSpec, LogLine, NodeOutcome,
};

/// How long a node's log readers may keep going after the process exited (a grandchild can hold
/// the pipes open forever).
pub const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The next step of a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escalation {
    /// Stop grace expired: SIGTERM.
    Terminate,
    /// Kill grace expired: SIGKILL.
    Kill,
}

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
    outcomes: BTreeMap<NodeId, NodeOutcome>,
    logs: mpsc::UnboundedSender<LogLine>,
    /// Cancels timers and scheduled escalations when the dataflow ends.
    cancel: CancellationToken,
    done: Option<oneshot::Sender<DataflowResult>>,
    /// Links to nodes on other machines (Zenoh).
    pub(crate) remote: RemoteLinks,
    /// The daemon's node socket (to start restarted nodes).
    socket: std::path::PathBuf,
}

/// Prefix of every shared-memory segment this daemon's part of a dataflow creates; the daemon
/// sweeps it when that part ends. It names the daemon (by pid) as well as the dataflow: several
/// daemons of one dataflow may share a machine's `/dev/shm`, and one must never remove samples
/// another is still delivering.
pub(crate) fn shm_prefix(id: uuid::Uuid) -> String {
    let simple = id.simple().to_string();
    format!("adora-{}-{:x}-", &simple[..12], std::process::id())
}

impl Dataflow {
    /// Checks every node, then spawns them all. Nothing is spawned if any node is invalid.
    pub fn start(
        config: &DaemonConfig,
        socket: &std::path::Path,
        spec: DataflowSpec,
        logs: mpsc::UnboundedSender<LogLine>,
        events: mpsc::Sender<Event>,
        done: oneshot::Sender<DataflowResult>,
    ) -> Result<Self, DaemonError> {
        if let Some(key) = spec
            .env
            .keys()
            .find(|k| adora_core::RESERVED_ENV_VARS.contains(&k.as_str()))
        {
            return Err(DaemonError::ReservedEnv(key.clone()));
        }
        let mut commands = BTreeMap::new();
        let mut problems = Vec::new();
        for node in spec
            .descriptor
            .nodes
            .iter()
            .filter(|n| spec.is_local(&n.id))
        {
            match spawn::resolve_command(node, &spec.working_dir) {
                Ok(c) => {
                    commands.insert(node.id.clone(), c);
                }
                Err(e) => problems.push(format!("node `{}`: {e}", node.id)),
            }
        }
        if !problems.is_empty() {
            return Err(DaemonError::InvalidNodes(problems));
        }
        std::fs::create_dir_all(&spec.log_dir).map_err(|source| DaemonError::Io {
            what: format!("cannot create log directory {}", spec.log_dir.display()),
            source,
        })?;

        let cancel = CancellationToken::new();
        let mut dataflow = Dataflow {
            routing: Routing::with_locality(&spec.descriptor, |n| spec.is_local(n)),
            remote: RemoteLinks::plan(&spec),
            nodes: BTreeMap::new(),
            pending: spec
                .descriptor
                .nodes
                .iter()
                .filter(|n| spec.is_local(&n.id))
                .map(|n| n.id.clone())
                .collect(),
            barrier: Vec::new(),
            started: false,
            stopping: false,
            outcomes: BTreeMap::new(),
            logs,
            cancel,
            done: Some(done),
            socket: socket.to_owned(),
            spec,
        };
        // Only the nodes placed on this daemon; inputs from nodes on other daemons arrive over
        // Zenoh once the daemon's session is attached (`attach_remote`).
        for (id, command) in &commands {
            dataflow.spawn(id, command, socket, events.clone());
        }
        schedule(
            &dataflow.cancel,
            &events,
            config.node_connect_timeout,
            Event::ConnectTimeout {
                dataflow: dataflow.spec.id,
            },
        );
        Ok(dataflow)
    }

    fn node_env(
        &self,
        node: &adora_core::NodeSpec,
        socket: &std::path::Path,
    ) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = node
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        env.extend(self.spec.env.clone());
        let config = NodeConfig {
            dataflow_id: self.spec.id,
            node_id: node.id.clone(),
            daemon_socket: socket.to_owned(),
            inputs: node.inputs.keys().cloned().collect(),
            outputs: node.outputs.clone(),
            shm_prefix: format!("{}{}-", shm_prefix(self.spec.id), node.id),
            daemon_pid: Some(std::process::id()),
        };
        let json =
            serde_json::to_string(&config).expect("NodeConfig serializes: plain strings and ids");
        env.insert(adora_core::NODE_CONFIG_ENV.into(), json);
        env.insert("ADORA_DATAFLOW_ID".into(), self.spec.id.to_string());
        env.insert("ADORA_NODE_ID".into(), node.id.to_string());
        env
    }

    fn spawn(
        &mut self,
        id: &NodeId,
        command: &NodeCommand,
        socket: &std::path::Path,
        events: mpsc::Sender<Event>,
    ) {
        let Some(spec) = self
            .spec
            .descriptor
            .nodes
            .iter()
            .find(|n| &n.id == id)
            .cloned()
        else {
            return;
        };
        let env = self.node_env(&spec, socket);
        let log_file = self.spec.log_dir.join(format!("{id}.txt"));
        let runtime = self.nodes.entry(id.clone()).or_default();
        runtime.command = Some(command.clone());
        runtime
            .restart
            .get_or_insert_with(|| RestartTracker::new(&spec));
        match spawn::spawn_node(id, command, &env, &log_file, self.logs.clone()) {
            Ok(spawned) => {
                runtime.pid = Some(spawned.pid);
                runtime.running = true;
                let (dataflow, node) = (self.spec.id, id.clone());
                tokio::spawn(async move {
                    let mut child = spawned.child;
                    let status = child.wait().await;
                    let stderr_tail = tokio::time::timeout(LOG_DRAIN_TIMEOUT, spawned.logs_done)
                        .await
                        .ok()
                        .and_then(|r| r.ok())
                        .unwrap_or_default();
                    let _ = events
                        .send(Event::NodeExited {
                            dataflow,
                            node,
                            status,
                            stderr_tail,
                        })
                        .await;
                });
            }
            Err(e) => {
                runtime.failure = Some(e.clone());
                self.outcomes.insert(
                    id.clone(),
                    NodeOutcome::Failed {
                        reason: e,
                        stderr_tail: Vec::new(),
                    },
                );
                self.pending.remove(id);
                self.close_all_outputs(id);
                self.routing.node_exited(id);
            }
        }
    }

    /// The nodes this daemon spawned, and whether each is still running.
    pub fn node_states(&self) -> BTreeMap<NodeId, bool> {
        self.nodes
            .iter()
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
        }
        for interval in self.routing.timer_intervals() {
            let events = events.clone();
            let (cancel, dataflow) = (self.cancel.clone(), self.spec.id);
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = ticker.tick() => {
                            if events.send(Event::TimerTick { dataflow, interval }).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
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
        schedule(
            &self.cancel,
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
        let signal = match step {
            Escalation::Terminate => Signal::SIGTERM,
            Escalation::Kill => Signal::SIGKILL,
        };
        for (id, rt) in &mut self.nodes {
            if let (true, Some(pid)) = (rt.running, rt.pid) {
                tracing::info!("node `{id}` did not exit in time; sending {signal}");
                rt.terminated_by = Some(signal);
                spawn::signal_group(pid, signal);
            }
        }
        if step == Escalation::Terminate {
            schedule(
                &self.cancel,
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
        if let NodeOutcome::Failed { reason, .. } = &outcome {
            tracing::warn!("node `{node}` failed: {reason}");
        }
        self.outcomes.insert(node.clone(), outcome);
        if self.pending.remove(node) {
            self.maybe_release_barrier(events);
        }
        if drained {
            self.close_all_outputs(node);
            self.routing.node_exited(node);
        }
        self.is_finished()
    }

    /// The node's control connection closed after its last frame was handled: its outputs close.
    /// Returns true when the whole dataflow is done.
    pub fn control_closed(&mut self, node: &NodeId) -> bool {
        let Some(rt) = self.nodes.get_mut(node) else {
            return false;
        };
        rt.control_open = false;
        let exited = !rt.running;
        if rt.restarting {
            self.routing.node_restarting(node);
            return false;
        }
        if !exited && self.may_restart(node) {
            // Wait for the exit status: the restart policy decides whether the outputs close.
            return false;
        }
        self.close_all_outputs(node);
        if exited {
            self.routing.node_exited(node);
        }
        self.is_finished()
    }

    /// Closes every output of a local node, here and on other machines.
    pub fn close_all_outputs(&mut self, node: &NodeId) {
        let outputs: Vec<adora_core::DataId> = self
            .spec
            .descriptor
            .nodes
            .iter()
            .find(|n| &n.id == node)
            .map(|n| n.outputs.clone())
            .unwrap_or_default();
        let closed = self.routing.close_outputs(node, &outputs);
        self.remote_closed(node, &closed);
    }

    /// Every node process has exited and every control connection has drained.
    pub(crate) fn is_finished(&self) -> bool {
        self.nodes
            .values()
            .all(|rt| !rt.running && !rt.control_open && !rt.restarting)
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
            nodes: std::mem::take(&mut self.outcomes),
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
) -> NodeOutcome {
    use std::os::unix::process::ExitStatusExt;
    if let Some(reason) = &rt.failure {
        return NodeOutcome::Failed {
            reason: reason.clone(),
            stderr_tail,
        };
    }
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            return NodeOutcome::Failed {
                reason: format!("cannot wait for the process: {e}"),
                stderr_tail,
            }
        }
    };
    if status.success() {
        return NodeOutcome::Finished;
    }
    let by_signal = status.signal().and_then(|s| Signal::try_from(s).ok());
    match (by_signal, rt.terminated_by) {
        (Some(sig), Some(sent)) if sig == sent || sig == Signal::SIGKILL => {
            NodeOutcome::Terminated {
                signal: sig.to_string(),
            }
        }
        // A node that exits non-zero because of our SIGTERM (common for handlers) is terminated too.
        (None, Some(_)) => NodeOutcome::Terminated {
            signal: Signal::SIGTERM.to_string(),
        },
        (Some(sig), _) => NodeOutcome::Failed {
            reason: format!("killed by signal {sig}"),
            stderr_tail,
        },
        (None, None) => NodeOutcome::Failed {
            reason: format!("exit status {}", status.code().unwrap_or(-1)),
            stderr_tail,
        },
    }
}

/// Sends `event` to the actor after `delay`, unless `cancel` fires first.
fn schedule(
    cancel: &CancellationToken,
    events: &mpsc::Sender<Event>,
    delay: Duration,
    event: Event,
) {
    let (cancel, events) = (cancel.clone(), events.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(delay) => { let _ = events.send(event).await; }
        }
    });
}
