//! Which outputs of a dataflow cross machines here, and the state of their links: the publish
//! queues, subscriptions and the pool remote messages are copied into. Planned from the
//! descriptor; driven by the dataflow (`dataflow/remote_links.rs`).

use std::collections::{BTreeMap, BTreeSet};

use adora_core::{descriptor::InputSource, DataId, NodeId};
use adora_message::{daemon_to_daemon::Sequence, stats::RemoteDropReason};
use adora_shm::RegionCache;
use tokio::sync::mpsc;

use super::{ByteBudget, Outgoing, SubscriptionGuard};
use crate::config::DataflowSpec;

pub(crate) type OutputKey = (NodeId, DataId);

/// Publishing instances of one output followed at once: the current one and the one before it
/// (a node in the middle of a move publishes from both for a moment).
pub(crate) const STREAMS_KEPT: usize = 2;

#[derive(Default)]
pub(crate) struct RemoteLinks {
    /// Local outputs read by nodes on other machines.
    pub(crate) published: BTreeSet<OutputKey>,
    /// Outputs of nodes on other machines read by local nodes.
    pub(crate) subscribed: BTreeSet<OutputKey>,
    /// Queues of the publisher tasks, once attached; dropped when the output closes.
    pub(crate) queues: BTreeMap<OutputKey, mpsc::Sender<Outgoing>>,
    /// The daemon's budget for bytes waiting to be published.
    pub(crate) publish_budget: Option<ByteBudget>,
    /// Published outputs no remote subscriber has matched yet (the start barrier waits).
    pub(crate) unmatched: BTreeSet<OutputKey>,
    /// Active subscriptions, once attached; dropping one ends it.
    pub(crate) subscriptions: BTreeMap<OutputKey, SubscriptionGuard>,
    /// The daemon's Zenoh session, once this dataflow is attached to it.
    pub(crate) plane: Option<std::sync::Arc<super::RemoteDataPlane>>,
    /// Copies of remote messages, delivered to local nodes through shared memory (shared with
    /// the subscriptions' feeds).
    pub(crate) pool: Option<super::feed::RemotePool>,
    /// Mappings of local senders' samples, to read what is published.
    pub(crate) regions: RegionCache,
    /// Per published output: messages taken from the node and how many of them were dropped
    /// here (sent with every message, see `Sequence`).
    pub(crate) sequences: BTreeMap<OutputKey, Sequence>,
    /// Per subscribed output without a [`super::feed::LaneFeed`] (which counts for itself): what
    /// is expected next from its publishing instances, to count what went missing.
    pub(crate) expected: BTreeMap<OutputKey, Streams>,
    /// Messages dropped here because a link was too slow (all outputs), for the log.
    pub(crate) dropped: u64,
}

impl RemoteLinks {
    /// Which outputs cross machines, from the descriptor and the set of local nodes.
    pub fn plan(spec: &DataflowSpec) -> Self {
        let (published, subscribed) = Self::crossing(spec, |n| spec.is_local(n));
        RemoteLinks {
            unmatched: published.clone(),
            published,
            subscribed,
            ..RemoteLinks::default()
        }
    }

    /// The outputs that cross machines when the nodes `is_local` accepts run here: (published
    /// local outputs, subscribed remote outputs). A daemon's links depend only on its own
    /// nodes, so a move changes the links of its two daemons only.
    pub fn crossing(
        spec: &DataflowSpec,
        is_local: impl Fn(&NodeId) -> bool,
    ) -> (BTreeSet<OutputKey>, BTreeSet<OutputKey>) {
        let (mut published, mut subscribed) = (BTreeSet::new(), BTreeSet::new());
        for node in &spec.descriptor.nodes {
            for input in node.inputs.values() {
                let Ok(InputSource::Node { node: from, output }) = input.resolve() else {
                    continue;
                };
                match (is_local(&node.id), is_local(&from)) {
                    (true, false) => {
                        subscribed.insert((from, output));
                    }
                    (false, true) => {
                        published.insert((from, output));
                    }
                    _ => {}
                }
            }
        }
        (published, subscribed)
    }

    /// True when the dataflow has any cross-machine input or output here.
    pub fn needed(&self) -> bool {
        !self.published.is_empty() || !self.subscribed.is_empty()
    }
}

/// The sequence expected next from each of an output's last publishing instances (most recent
/// first, at most [`STREAMS_KEPT`]), to count what went missing.
#[derive(Debug, Default)]
pub(crate) struct Streams(Vec<Sequence>);

impl Streams {
    /// A message with sequence `now` (`closed`: the end of the stream) arrived: how many went
    /// missing before it, by reason. Counting starts with the first message received; a
    /// sequence that goes back (the sender's daemon restarted, or the node moved to another
    /// daemon) starts it again.
    pub fn see(&mut self, now: Sequence, closed: bool) -> [(RemoteDropReason, u64); 2] {
        let known = self.0.iter().position(|s| s.stream == now.stream);
        let expected = known.map(|i| self.0.remove(i));
        let (next, missing) = missing_before(expected, now, closed);
        self.0.insert(0, next);
        self.0.truncate(STREAMS_KEPT);
        missing
    }
}

/// How many messages went missing before one with sequence `now` (`closed`: the end of the
/// stream) when `expected` was expected next from the same publishing instance, by reason: those
/// the sending daemon dropped, and the rest, lost on the way; and the sequence expected after
/// it. Nothing is counted for an instance's first message (the receiver may have joined late),
/// unless the sending daemon dropped everything before it (a publish lane that filled up before
/// its first message went out: nobody got those), nor when its numbers go back.
pub(crate) fn missing_before(
    expected: Option<Sequence>,
    now: Sequence,
    closed: bool,
) -> (Sequence, [(RemoteDropReason, u64); 2]) {
    let next = if closed {
        now
    } else {
        Sequence {
            seq: now.seq.saturating_add(1),
            ..now
        }
    };
    let none = [
        (RemoteDropReason::SenderBacklog, 0),
        (RemoteDropReason::Link, 0),
    ];
    let Some(expected) = expected.filter(|e| e.stream == now.stream) else {
        let never_sent = if now.seq == now.dropped { now.seq } else { 0 };
        return (
            next,
            [(RemoteDropReason::SenderBacklog, never_sent), none[1]],
        );
    };
    if now.seq < expected.seq || now.dropped < expected.dropped {
        return (next, none);
    }
    let missing = now.seq - expected.seq;
    let by_sender = (now.dropped - expected.dropped).min(missing);
    (
        next,
        [
            (RemoteDropReason::SenderBacklog, by_sender),
            (RemoteDropReason::Link, missing - by_sender),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(seq: u64, dropped: u64) -> Sequence {
        Sequence {
            stream: 1,
            seq,
            dropped,
        }
    }

    fn counts(missing: [(RemoteDropReason, u64); 2]) -> (u64, u64) {
        (missing[0].1, missing[1].1)
    }

    #[test]
    fn gaps_are_split_between_the_sender_and_the_link() {
        // The first message starts the count.
        let (next, missing) = missing_before(None, seq(5, 2), false);
        assert_eq!((next, counts(missing)), (seq(6, 2), (0, 0)));
        // In order: nothing missing.
        let (next, missing) = missing_before(Some(next), seq(6, 2), false);
        assert_eq!((next, counts(missing)), (seq(7, 2), (0, 0)));
        // 4 missing (7..=10), of which the sender dropped 3: 1 lost on the way.
        let (next, missing) = missing_before(Some(next), seq(11, 5), false);
        assert_eq!((next, counts(missing)), (seq(12, 5), (3, 1)));
        // The end: 2 more taken after 11, both dropped by the sender.
        let (next, missing) = missing_before(Some(next), seq(14, 7), true);
        assert_eq!((next, counts(missing)), (seq(14, 7), (2, 0)));
    }

    #[test]
    fn a_first_message_after_only_drops_counts_them() {
        // The sender's daemon dropped the 270 messages before the first one it published.
        let (next, missing) = missing_before(None, seq(270, 270), false);
        assert_eq!((next, counts(missing)), (seq(271, 270), (270, 0)));
        // A receiver joining late: some of the earlier messages went out, nothing counted.
        let (_, missing) = missing_before(None, seq(270, 269), false);
        assert_eq!(counts(missing), (0, 0));
    }

    #[test]
    fn another_publishing_instance_is_not_a_gap() {
        let other = Sequence {
            stream: 2,
            ..seq(3, 0)
        };
        let (next, missing) = missing_before(Some(seq(100, 10)), other, false);
        assert_eq!((next.stream, next.seq, counts(missing)), (2, 4, (0, 0)));
    }

    #[test]
    fn a_sequence_going_back_starts_again_without_counting() {
        let (next, missing) = missing_before(Some(seq(100, 10)), seq(3, 0), false);
        assert_eq!((next, counts(missing)), (seq(4, 0), (0, 0)));
    }
}
