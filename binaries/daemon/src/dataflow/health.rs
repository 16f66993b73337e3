//! Liveness of nodes (`health_check_timeout`, root `health_check_interval`) and input timeouts
//! (`inputs.<id>.input_timeout`, see [`crate::routing`]'s `deadlines`).
//!
//! A node *talks* to its daemon with every request on any of its connections: registering, sending
//! or closing outputs, releasing samples, asking for events. A node blocked in `recv` (a
//! `NextEvents` request waiting for an answer) is alive however long it waits. A connected node
//! that did neither for its `health_check_timeout` is killed, and its restart policy decides what
//! comes next. The drops connection does not count: its request is always waiting, on a thread of
//! the node API, whatever the node's own code is doing.
//!
//! Messages on lanes do not pass through the daemon, and a node's request for events stays open
//! while it takes them: taking from its lanes counts as talking (the lanes' counters grow), and a
//! node whose lanes hold entries it has not taken for its `health_check_timeout` is not waiting
//! for events but stuck.

use std::time::{Duration, Instant};

use adora_core::descriptor::DEFAULT_HEALTH_CHECK_INTERVAL;
use nix::sys::signal::Signal;
use tokio::sync::mpsc;

use super::Dataflow;
use crate::{event::Event, spawn};

/// Bounds of the period at which input timeouts are checked: a quarter of the shortest timeout,
/// so an input closes at most a quarter late, but not more often than this...
const MIN_DEADLINE_CHECK: Duration = Duration::from_millis(5);
/// ... and at least this often.
const MAX_DEADLINE_CHECK: Duration = Duration::from_secs(1);

impl Dataflow {
    /// The node talked to the daemon. Called for every message: only nodes with a health check
    /// read the clock.
    pub(super) fn touch(&mut self, node: &adora_core::NodeId) {
        if let Some(rt) = self.nodes.get_mut(node).filter(|rt| rt.watched) {
            rt.last_contact = Some(Instant::now());
        }
    }

    /// Starts the periodic checks this dataflow needs (once the start barrier is released).
    pub(super) fn spawn_watchdogs(&mut self, events: &mpsc::Sender<Event>) {
        let now = Instant::now();
        self.routing.start_input_clocks(now);
        for rt in self.nodes.values_mut() {
            rt.last_contact = Some(now);
        }
        let dataflow = self.spec.id;
        if let Some(shortest) = self.routing.shortest_input_timeout() {
            let period = (shortest / 4).clamp(MIN_DEADLINE_CHECK, MAX_DEADLINE_CHECK);
            self.spawn_ticker(events, period, "input timeouts", move || {
                Event::InputDeadlines { dataflow }
            });
        }
        let watched = self
            .spec
            .descriptor
            .nodes
            .iter()
            .any(|n| n.health_check_timeout.is_some() && self.spec.is_local(&n.id));
        if watched {
            let period = self
                .spec
                .descriptor
                .health_check_interval
                .map_or(DEFAULT_HEALTH_CHECK_INTERVAL, |d| d.0);
            self.spawn_ticker(events, period, "health checks", move || {
                Event::HealthCheck { dataflow }
            });
        }
    }

    /// Closes the inputs whose `input_timeout` passed.
    pub fn expire_inputs(&mut self) {
        for (node, input, timeout) in self.routing.expire_inputs(Instant::now()) {
            tracing::warn!(
                "input `{input}` of node `{node}` closed: no message for {} (input_timeout)",
                humantime::format_duration(timeout)
            );
        }
    }

    /// Kills every connected node that has not talked to the daemon within its
    /// `health_check_timeout`.
    pub fn check_health(&mut self) {
        if self.stopping {
            return;
        }
        let now = Instant::now();
        for node in &self.spec.descriptor.nodes {
            let Some(timeout) = node.health_check_timeout.map(|t| t.0) else {
                continue;
            };
            let Some(rt) = self.nodes.get_mut(&node.id) else {
                continue;
            };
            let (taken, pending) = self.routing.lane_progress(&node.id);
            if taken != rt.lanes_taken {
                rt.lanes_taken = taken;
                rt.last_contact = Some(now);
                rt.lanes_stuck_since = None;
            }
            if pending {
                rt.lanes_stuck_since.get_or_insert(now);
            } else {
                rt.lanes_stuck_since = None;
            }
            let stuck = rt
                .lanes_stuck_since
                .is_some_and(|t| now.duration_since(t) >= timeout);
            let silent = rt
                .last_contact
                .map_or(Duration::ZERO, |t| now.duration_since(t));
            let connected = rt.running && !rt.channels.is_empty();
            if !connected
                || rt.health_failure.is_some()
                || silent < timeout
                || (self.routing.is_waiting_for_events(&node.id) && !stuck)
            {
                continue;
            }
            let reason = format!(
                "unresponsive: no request to the daemon for {} (health_check_timeout {}); killed",
                humantime::format_duration(Duration::from_millis(silent.as_millis() as u64)),
                humantime::format_duration(timeout)
            );
            tracing::warn!("node `{}` is {reason}", node.id);
            rt.health_failure = Some(reason);
            if let Some(pid) = rt.pid {
                spawn::signal_group(pid, Signal::SIGKILL);
            }
        }
    }
}
