//! A dataflow's links to other machines: local outputs with receivers elsewhere are published on
//! Zenoh, inputs whose sender runs elsewhere are subscribed to.
//!
//! Nothing is lost at start: the start barrier also waits until every published output has a
//! matching subscriber on the other machine (bounded by the connect timeout). Remote payloads of
//! 4 KiB and more are copied once, from the network buffer into a shared-memory sample of the
//! daemon's own pool, and then delivered to local nodes like any local message.

use std::sync::Arc;

use adora_core::{DataId, NodeId, SHM_THRESHOLD};
use adora_message::{
    daemon_to_daemon::{RemoteKind, Sequence},
    DataRef, Metadata, SharedRef,
};
use adora_shm::FileId;
use tokio::sync::mpsc;

use super::{shm_prefix, Dataflow};
use crate::remote::feed::{Missing, RemotePool};
use crate::{
    event::Event,
    remote::{Payload, RemoteDataPlane, RemoteSample, PUBLISH_QUEUE},
};

/// How often (in dropped messages) a full publish queue is reported again.
const DROP_REPORT_EVERY: u64 = 1000;

impl Dataflow {
    /// Declares this dataflow's publishers and subscribers on the daemon's Zenoh session.
    pub fn attach_remote(&mut self, plane: &Arc<RemoteDataPlane>, events: &mpsc::Sender<Event>) {
        if self.remote.plane.is_some() {
            return;
        }
        self.remote.plane = Some(plane.clone());
        self.remote.publish_budget = Some(plane.publish_budget.clone());
        let fed = self.declare_links(events);
        let links = &self.remote;
        if links.needed() {
            tracing::info!(
                "dataflow {}: publishing {} output(s) to and receiving {} from other machines \
                 ({fed} local input(s) get them straight into their lanes)",
                self.spec.id,
                links.published.len(),
                links.subscribed.len()
            );
        }
    }

    /// Declares the planned publishers and subscriptions that are not active yet (once the
    /// dataflow is attached to the session).
    /// Returns how many local inputs the new subscriptions write into lanes (`remote/feed.rs`).
    fn declare_links(&mut self, events: &mpsc::Sender<Event>) -> usize {
        let id = self.spec.id;
        let pool = self.remote_pool();
        let links = &mut self.remote;
        let Some(plane) = links.plane.clone() else {
            return 0;
        };
        let mut fed = 0;
        for key in links.published.clone() {
            if links.queues.contains_key(&key) {
                continue;
            }
            let (node, output) = key.clone();
            let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
            let matched = Event::RemoteMatched {
                dataflow: id,
                node: node.clone(),
                output: output.clone(),
            };
            // The lane's messages and the actor's are numbered as one stream.
            let stream = (links.sequences.entry(key.clone()))
                .or_insert_with(Sequence::start)
                .stream;
            let lane = self.routing.publish_lane(&node, &output, stream);
            let matched = Some((events.clone(), matched));
            plane.spawn_publisher((id, &node, &output), rx, matched, lane);
            links.queues.insert(key, tx);
        }
        for key in links.subscribed.clone() {
            if links.subscriptions.contains_key(&key) {
                continue;
            }
            let feed = self.routing.remote_feed(&key.0, &key.1, pool.clone());
            if let Some(feed) = &feed {
                fed += feed.lanes();
            }
            let guard = plane.spawn_fed_subscriber(id, (&key.0, &key.1), events.clone(), feed);
            links.subscriptions.insert(key, guard);
        }
        fed
    }

    /// Plans the links again for this daemon's nodes and the moves in progress (a move changed
    /// them; see `relocate.rs`) and declares what is missing; new publishers count as unmatched
    /// until a remote subscriber matches them. With `prune`, links no longer needed end: a
    /// publisher without sending `Closed` (the output lives on elsewhere), a subscription by
    /// dropping it.
    pub(crate) fn relink(&mut self, prune: bool, events: &mpsc::Sender<Event>) {
        let (published, subscribed) = self.wanted_links();
        let links = &mut self.remote;
        for key in published.difference(&links.published) {
            links.unmatched.insert(key.clone());
        }
        if prune {
            links.queues.retain(|key, _| published.contains(key));
            links
                .subscriptions
                .retain(|key, _| subscribed.contains(key));
            links.unmatched.retain(|key| published.contains(key));
            links.published = published;
            links.subscribed = subscribed;
        } else {
            links.published.extend(published);
            links.subscribed.extend(subscribed);
        }
        self.declare_links(events);
    }

    /// A remote subscriber matched a published output.
    pub fn remote_matched(&mut self, node: NodeId, output: DataId, events: &mpsc::Sender<Event>) {
        if self.remote.unmatched.remove(&(node, output)) {
            self.maybe_release_barrier(events);
            self.check_arrivals();
        }
    }

    /// Publishes a local message for receivers on other machines. Must run before routing, which
    /// may hand the sample back to its sender.
    pub fn forward_remote(
        &mut self,
        node: &NodeId,
        output: &DataId,
        metadata: &Metadata,
        data: &DataRef,
    ) {
        if self.remote.queues.is_empty() {
            return; // the common, local-only case: no allocation on the hot path
        }
        let key = (node.clone(), output.clone());
        let links = &mut self.remote;
        let Some(queue) = links.queues.get(&key) else {
            return;
        };
        let sequence = links.sequences.entry(key).or_insert_with(Sequence::start);
        let this = *sequence;
        sequence.seq += 1;
        // Never block local nodes on a slow link: without budget left, the message is dropped,
        // unless its output has nothing queued: an output that sends now and then (commands,
        // markers) always gets one message through, however much a bulk output of the same
        // daemon holds (one message per output beyond the budget at most).
        let idle = queue.capacity() == queue.max_capacity();
        let budget = match links
            .publish_budget
            .as_ref()
            .map(|b| b.try_acquire(data.len()))
        {
            Some(None) if !idle => {
                sequence.dropped += 1;
                return Self::dropped_for_slow_link(&mut links.dropped, node, output);
            }
            Some(permit) => permit,
            None => None,
        };
        let bytes = match data {
            DataRef::Inline(bytes) => bytes.clone(),
            DataRef::Shared(shared) => match links.regions.get_file(
                &shared.os_id,
                FileId {
                    dev: shared.file.dev,
                    ino: shared.file.ino,
                },
            ) {
                Ok(region) => region.as_slice()[..shared.len.min(region.size())].to_vec(),
                Err(e) => {
                    tracing::warn!("cannot read `{node}/{output}` to publish it: {e}");
                    sequence.dropped += 1;
                    return;
                }
            },
        };
        tracing::trace!("publishing `{node}/{output}` ({} bytes)", bytes.len());
        let kind = RemoteKind::Data {
            metadata: metadata.clone(),
        };
        if queue.try_send((kind, this, bytes, budget)).is_err() {
            sequence.dropped += 1;
            Self::dropped_for_slow_link(&mut links.dropped, node, output);
        }
    }

    /// Counts (and now and then logs) a message dropped because a link was too slow; its
    /// receivers learn of it from the output's sequence.
    fn dropped_for_slow_link(dropped: &mut u64, node: &NodeId, output: &DataId) {
        *dropped += 1;
        if *dropped % DROP_REPORT_EVERY == 1 {
            tracing::warn!(
                "the link to other machines is too slow for `{node}/{output}`: {dropped} message(s) \
                 dropped so far (counted in the receivers' drop counts)"
            );
        }
    }

    /// Local outputs closed: tell receivers on other machines, then end their publishers.
    pub fn remote_closed(&mut self, node: &NodeId, outputs: &[DataId]) {
        for output in outputs {
            let key = (node.clone(), output.clone());
            self.remote.published.remove(&key);
            // The final counts: receivers account for drops at the very end of the stream.
            let sequence = self
                .remote
                .sequences
                .remove(&key)
                .unwrap_or_else(Sequence::start);
            if let Some(queue) = self.remote.queues.remove(&key) {
                tracing::debug!("closing published `{node}/{output}`");
                // The queue is drained before the publisher ends, so this arrives after the data.
                let closed = (RemoteKind::Closed, sequence, Vec::new(), None);
                if let Err(e) = queue.try_send(closed) {
                    let closed = e.into_inner();
                    let what = format!("closing the published `{node}/{output}`");
                    self.tasks.spawn(what, async move {
                        let _ = queue.send(closed).await;
                    });
                }
            }
        }
    }

    /// A message (or the end) of a remote node's output arrived.
    pub fn remote_input(&mut self, sample: RemoteSample) {
        let RemoteSample {
            node,
            output,
            kind,
            sequence,
            payload,
            served,
            shared,
            ..
        } = sample;
        tracing::trace!(
            "remote `{node}/{output}`: closed={} ({} bytes)",
            matches!(kind, RemoteKind::Closed),
            payload.len()
        );
        let closed = matches!(kind, RemoteKind::Closed);
        if let Some(sequence) = sequence {
            self.account_remote(&node, &output, sequence, closed);
        }
        match kind {
            RemoteKind::Closed => {
                self.routing.close_outputs(&node, &[output]);
            }
            RemoteKind::Data { metadata } => {
                self.arrival_input_seen(&node, &output);
                self.recycle_remote_samples();
                // Copied by the subscription's feed already, or here.
                let data = match shared.or_else(|| self.copy_to_shared_memory(&payload)) {
                    Some(shared) => DataRef::Shared(shared),
                    None => DataRef::Inline(payload.to_vec()),
                };
                self.routing
                    .send_remote_output(&node, &output, (metadata, data), &served);
            }
        }
    }

    /// Counts the messages of `node/output` that went missing before this one (`Closed`: before
    /// the end), from the sending daemon's sequence (see [`Streams::see`]).
    fn account_remote(&mut self, node: &NodeId, output: &DataId, now: Sequence, closed: bool) {
        let missing = self
            .remote
            .expected
            .entry((node.clone(), output.clone()))
            .or_default()
            .see(now, closed);
        self.count_missing(node, output, missing);
    }

    /// Counts messages of `node/output` that went missing on the way here, by reason.
    pub fn count_missing(&mut self, node: &NodeId, output: &DataId, missing: Missing) {
        for (reason, n) in missing {
            if n > 0 {
                tracing::debug!("{n} message(s) of `{node}/{output}` missing: {reason}");
                self.routing.count_remote_drops(node, output, reason, n);
            }
        }
    }

    fn copy_to_shared_memory(&mut self, payload: &Payload) -> Option<SharedRef> {
        if payload.len() < SHM_THRESHOLD {
            return None;
        }
        self.remote_pool().copy(payload)
    }

    /// The daemon's pool of copies of remote messages for this dataflow.
    fn remote_pool(&mut self) -> RemotePool {
        let id = self.spec.id;
        let pool = self
            .remote
            .pool
            .get_or_insert_with(|| RemotePool::new(format!("{}~remote-", shm_prefix(id))));
        pool.clone()
    }

    /// Returns samples every local receiver released to the daemon's pool, and releases what
    /// ended receiver instances took from lanes its feeds write.
    pub fn recycle_remote_samples(&mut self) {
        let freed = self.routing.take_daemon_freed();
        let taken = self.routing.take_remote_taken();
        if let Some(pool) = &self.remote.pool {
            pool.release(freed);
            pool.release_taken(taken);
        }
    }
}
