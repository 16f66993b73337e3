//! The actor's event handlers that need more than one dataflow method, and the two ways every
//! handler reaches its dataflow: [`Daemon::with`] (look it up, act) and [`Daemon::settle`] (act,
//! then end the dataflow when the handler says it is finished).

use std::time::Duration;

use adora_core::NodeId;
use adora_message::{node_to_daemon::Channel, Metadata, NODE_PROTOCOL_VERSION};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::Daemon;
use crate::{
    config::DaemonConfig,
    dataflow::Dataflow,
    event::{Event, MoveStep},
};

/// What a dataflow handler may use of the daemon besides the dataflow itself.
pub(super) struct Env<'a> {
    /// The actor's own event channel (for timers, watchers and escalations).
    pub events: &'a mpsc::Sender<Event>,
    /// The daemon's settings.
    pub config: &'a DaemonConfig,
}

impl Daemon {
    /// Runs `handler` on dataflow `id` if it runs here (events of a dataflow that already ended
    /// are dropped, and with them any reply channel they carry).
    pub(super) fn with(&mut self, id: Uuid, handler: impl FnOnce(&mut Dataflow, &Env<'_>)) {
        self.try_with(id, handler);
    }

    fn try_with<R>(
        &mut self,
        id: Uuid,
        handler: impl FnOnce(&mut Dataflow, &Env<'_>) -> R,
    ) -> Option<R> {
        let df = self.dataflows.get_mut(&id)?;
        let env = Env {
            events: &self.events_tx,
            config: &self.config,
        };
        Some(handler(df, &env))
    }

    /// Runs `handler` on dataflow `id`; when it returns true (every node exited and every
    /// control connection drained) the dataflow is removed and finished.
    pub(super) fn settle(
        &mut self,
        id: Uuid,
        handler: impl FnOnce(&mut Dataflow, &Env<'_>) -> bool,
    ) {
        if self.try_with(id, handler) == Some(true) {
            if let Some(df) = self.dataflows.remove(&id) {
                df.finish();
            }
            self.taps.end_dataflow(id);
        }
    }

    /// A node connection registers: checked against the protocol version, then handed to its
    /// dataflow (a control connection waits at the start barrier).
    pub(super) fn register(
        &mut self,
        dataflow: Uuid,
        node: &NodeId,
        channel: Channel,
        protocol_version: u32,
        reply: oneshot::Sender<Result<(), String>>,
    ) {
        if protocol_version != NODE_PROTOCOL_VERSION {
            let _ = reply.send(Err(format!(
                "node protocol version {protocol_version} is not supported by this daemon (version {NODE_PROTOCOL_VERSION}, adora {}): rebuild the node against the same adora-node-api",
                adora_message::ADORA_VERSION
            )));
            return;
        }
        match self.dataflows.get_mut(&dataflow) {
            Some(df) => df.register(node, channel, reply, &self.events_tx),
            None => {
                let _ = reply.send(Err(format!(
                    "dataflow {dataflow} is not running on this daemon"
                )));
            }
        }
    }

    /// Requests a control connection had already received: receivers are woken once, after the
    /// whole batch is routed.
    pub(super) fn batch(&mut self, dataflow: Uuid, events: Vec<Event>) {
        self.with(dataflow, |df, _| df.routing.hold_wakes());
        for event in events {
            self.dispatch(event);
        }
        self.with(dataflow, |df, _| df.routing.release_wakes());
    }

    /// A message its sender's lanes took (some of) that the daemon routes to the others
    /// (`routing/lanes.rs`).
    pub(super) fn lane_event(&mut self, event: Event) {
        let Event::SendOutputDirect {
            dataflow,
            node,
            output,
            metadata,
            data,
            served,
        } = event
        else {
            return;
        };
        self.with(dataflow, |df, _| {
            df.send_output_direct(&node, &output, (metadata, data), &served)
        })
    }

    /// What arrived from other machines for a dataflow: a message, a count of missing ones, a
    /// remote subscriber of an output.
    pub(super) fn remote_event(&mut self, event: Event) {
        match event {
            Event::Remote(sample) => self.with(sample.dataflow, |df, _| df.remote_input(sample)),
            Event::RemoteMissing {
                dataflow,
                node,
                output,
                missing,
            } => self.with(dataflow, |df, _| df.count_missing(&node, &output, missing)),
            Event::RemoteMatched {
                dataflow,
                node,
                output,
            } => self.with(dataflow, |df, env| {
                df.remote_matched(node, output, env.events)
            }),
            _ => {}
        }
    }

    /// A node's log line or entry, for one of its log outputs (an [`Event::LogLine`]).
    pub(super) fn log_line(&mut self, event: Event) {
        let Event::LogLine {
            dataflow,
            node,
            output,
            message,
        } = event
        else {
            return;
        };
        self.with(dataflow, |df, _| df.send_log_line(&node, &output, message));
    }

    /// The timed steps of a node moving in or out (`dataflow/relocate.rs`, `dataflow/arrival.rs`).
    pub(super) fn move_event(&mut self, step: MoveStep) {
        match step {
            MoveStep::ArrivalPatience { dataflow, node } => {
                self.with(dataflow, |df, _| df.arrival_patience(&node))
            }
            MoveStep::SettleLinks { dataflow } => {
                self.with(dataflow, |df, env| df.relink(true, env.events))
            }
            MoveStep::EvictNode {
                dataflow,
                node,
                step,
            } => self.with(dataflow, |df, env| {
                df.evict(&node, step, env.events, env.config)
            }),
            MoveStep::CheckCut {
                dataflow,
                node,
                since,
            } => self.with(dataflow, |df, env| {
                df.check_cut(&node, since, env.events, env.config)
            }),
        }
    }

    /// A node waits for room in its receivers' queues (an [`Event::AwaitRoom`]).
    pub(super) fn await_room(&mut self, event: Event) {
        let Event::AwaitRoom {
            dataflow,
            node,
            output,
            reply,
        } = event
        else {
            return;
        };
        self.with(dataflow, |df, _| {
            df.routing.await_room(&node, &output, reply)
        });
    }

    /// A timer input of `dataflow` fired.
    pub(super) fn timer_tick(&mut self, dataflow: Uuid, interval: Duration) {
        if let Some(df) = self.dataflows.get_mut(&dataflow) {
            df.routing
                .timer_tick(interval, Metadata::new(self.hlc.new_timestamp()));
        }
    }

    /// A node asks for an update lock: granted here without a coordinator, else asked of it
    /// (with a timeout).
    pub(super) fn take_lock(
        &mut self,
        dataflow: Uuid,
        node: NodeId,
        lock: u64,
        reason: String,
        reply: crate::locks::LockReply,
    ) {
        if !self.dataflows.contains_key(&dataflow) {
            let _ = reply.send(Err(format!(
                "dataflow {dataflow} is not running on this daemon"
            )));
            return;
        }
        if let Some(request) = self.locks.take(dataflow, node, lock, reason, reply) {
            let events = self.events_tx.clone();
            self.tasks
                .spawn_until_cancelled("an update lock request", async move {
                    tokio::time::sleep(crate::locks::LOCK_ANSWER_TIMEOUT).await;
                    let _ = events.send(Event::LockTimeout { request }).await;
                });
        }
    }

    /// A node's exit (its update locks go with it), and the events of maintenance: update
    /// locks, and nodes stopped on their own.
    pub(super) fn maintenance_event(&mut self, event: Event) {
        match event {
            Event::NodeExited {
                dataflow,
                node,
                status,
                stderr_tail,
            } => {
                self.locks.node_exited(dataflow, &node);
                self.settle(dataflow, |df, env| {
                    df.node_exited(&node, status, stderr_tail, env.events)
                })
            }
            Event::TakeLock {
                dataflow,
                node,
                lock,
                reason,
                reply,
            } => self.take_lock(dataflow, node, lock, reason, reply),
            Event::ReleaseLock {
                dataflow,
                node,
                lock,
            } => self.locks.release(dataflow, &node, lock),
            Event::LockTimeout { request } => self.locks.timed_out(request),
            Event::EscalateNodes {
                dataflow,
                nodes,
                step,
            } => self.with(dataflow, |df, env| {
                df.escalate_nodes(nodes, step, env.events, env.config)
            }),
            other => tracing::warn!("not a maintenance event: {}", other.kind()),
        }
    }
}
