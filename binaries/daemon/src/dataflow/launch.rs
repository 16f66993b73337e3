//! Starting a dataflow's local nodes: check them all, spawn them all, and watch each process
//! until it exits.

use std::collections::BTreeMap;

use adora_core::{NodeId, NodeSpec};
use adora_message::{
    control::{NodeLogLine, NodeResult},
    NodeConfig,
};
use tokio::sync::{mpsc, oneshot};

use super::{shm_prefix, Dataflow, Launch, CONNECT_LATE_AFTER, LOG_DRAIN_TIMEOUT};
use crate::{
    config::DataflowSpec,
    error::DaemonError,
    event::Event,
    remote::links::RemoteLinks,
    restart::RestartTracker,
    result::DataflowResult,
    routing::Routing,
    spawn::{self, LogSink, NodeCommand, SpawnedNode},
};

impl Dataflow {
    /// Checks every node, then spawns them all. Nothing is spawned if any node is invalid.
    pub fn start(
        launch: Launch<'_>,
        spec: DataflowSpec,
        logs: mpsc::UnboundedSender<NodeLogLine>,
        done: oneshot::Sender<DataflowResult>,
    ) -> Result<Self, DaemonError> {
        let commands = check_nodes(&spec)?;
        std::fs::create_dir_all(&spec.log_dir).map_err(|source| DaemonError::Io {
            what: format!("cannot create log directory {}", spec.log_dir.display()),
            source,
        })?;
        let mut dataflow = Dataflow {
            routing: Routing::with_locality(&spec.descriptor, |n| spec.is_local(n)),
            remote: RemoteLinks::plan(&spec),
            nodes: BTreeMap::new(),
            pending: commands.keys().cloned().collect(),
            barrier: Vec::new(),
            started: false,
            stopping: false,
            outcomes: BTreeMap::new(),
            logs,
            cancel: launch.tasks.cancel_token().child_token(),
            done: Some(done),
            socket: launch.socket.to_owned(),
            tasks: launch.tasks.clone(),
            taps: launch.taps.clone(),
            moves: Default::default(),
            ended_pools: Vec::new(),
            publishing_since: Default::default(),
            spec,
        };
        if crate::routing::lanes_enabled() {
            let taps = launch.taps;
            let id = dataflow.spec.id;
            dataflow.routing.open_lanes(
                &dataflow.spec.descriptor,
                &shm_prefix(id),
                |node, output| !taps.matching(id, node, output).is_empty(),
            );
            taps.set_lanes(id, dataflow.routing.taps_lanes());
        }
        // Only the nodes placed on this daemon; inputs from nodes on other daemons arrive over
        // Zenoh once the daemon's session is attached (`attach_remote`).
        for (id, command) in &commands {
            dataflow.spawn(id, command, launch.events.clone());
        }
        if launch.config.node_connect_timeout > CONNECT_LATE_AFTER {
            let late = Event::ConnectLate {
                dataflow: dataflow.spec.id,
                after: CONNECT_LATE_AFTER,
            };
            dataflow.schedule(launch.events, CONNECT_LATE_AFTER, late);
        }
        let timeout = Event::ConnectTimeout {
            dataflow: dataflow.spec.id,
        };
        dataflow.schedule(launch.events, launch.config.node_connect_timeout, timeout);
        Ok(dataflow)
    }

    fn node_env(&self, node: &NodeSpec, pool: &str) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = node
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        env.extend(self.spec.env.clone());
        let config = NodeConfig {
            dataflow_id: self.spec.id,
            node_id: node.id.clone(),
            daemon_socket: self.socket.clone(),
            inputs: node.inputs.keys().cloned().collect(),
            outputs: node.outputs.clone(),
            shm_prefix: pool.to_owned(),
            daemon_pid: Some(std::process::id()),
            output_types: node.output_types.clone(),
            lanes: self.routing.node_lanes(&node.id),
        };
        let json =
            serde_json::to_string(&config).expect("NodeConfig serializes: plain strings and ids");
        env.insert(adora_core::NODE_CONFIG_ENV.into(), json);
        env.insert("ADORA_DATAFLOW_ID".into(), self.spec.id.to_string());
        env.insert("ADORA_NODE_ID".into(), node.id.to_string());
        env
    }

    /// Starts (an instance of) a local node and watches it; a node that cannot start fails.
    pub(super) fn spawn(
        &mut self,
        id: &NodeId,
        command: &NodeCommand,
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
        let pool = super::pools::pool_prefix(self.spec.id, id);
        let env = self.node_env(&spec, &pool);
        let policy = crate::node_logs::LogPolicy::of(&spec);
        let sink = LogSink {
            dataflow: self.spec.id,
            file: self.spec.log_dir.join(format!("{id}.txt")),
            lines: self.logs.clone(),
            messages: policy.sends_messages().then(|| events.clone()),
            policy,
            taps: self.taps.clone(),
            clock: uhlc::HLC::default(),
        };
        let runtime = self.nodes.entry(id.clone()).or_default();
        runtime.command = Some(command.clone());
        runtime.pool = Some(pool);
        runtime.watched = spec.health_check_timeout.is_some();
        runtime
            .restart
            .get_or_insert_with(|| RestartTracker::new(&spec));
        match spawn::spawn_node(id, command, &env, sink, &self.tasks) {
            Ok(spawned) => {
                runtime.pid = Some(spawned.pid);
                runtime.last_contact = Some(std::time::Instant::now());
                runtime.running = true;
                self.watch_exit(id, spawned, events);
            }
            Err(e) if self.moves.is_muted(id) => {
                self.arrival_failed(id, format!("node `{id}` cannot start: {e}"), &events);
            }
            Err(e) => {
                runtime.failure = Some(e.clone());
                self.outcomes.insert(
                    id.clone(),
                    NodeResult::Failed {
                        reason: e,
                        stderr_tail: Vec::new(),
                    },
                );
                self.pending.remove(id);
                self.close_all_outputs(id);
                self.routing.node_exited(id);
                self.recycle_remote_samples();
            }
        }
    }

    /// Waits for the node's process to exit (and its log readers to drain), then tells the actor.
    fn watch_exit(&self, node: &NodeId, spawned: SpawnedNode, events: mpsc::Sender<Event>) {
        let (dataflow, node) = (self.spec.id, node.clone());
        let what = format!("the process of node `{node}` ({dataflow})");
        self.tasks.spawn(what, async move {
            let mut child = spawned.child;
            let status = child.wait().await;
            let stderr_tail = tokio::time::timeout(LOG_DRAIN_TIMEOUT, spawned.logs_done)
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_default();
            let exited = Event::NodeExited {
                dataflow,
                node,
                status,
                stderr_tail,
            };
            let _ = events.send(exited).await;
        });
    }
}

/// How to start every local node of `spec`, or every problem found.
fn check_nodes(spec: &DataflowSpec) -> Result<BTreeMap<NodeId, NodeCommand>, DaemonError> {
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
    if problems.is_empty() {
        Ok(commands)
    } else {
        Err(DaemonError::InvalidNodes(problems))
    }
}
