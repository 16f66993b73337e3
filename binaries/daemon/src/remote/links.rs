//! Which outputs of a dataflow cross machines here, and the state of their links: the publish
//! queues, subscriptions and the pool remote messages are copied into. Planned from the
//! descriptor; driven by the dataflow (`dataflow/remote_links.rs`).

use std::collections::{BTreeMap, BTreeSet};

use adora_core::{descriptor::InputSource, DataId, NodeId};
use adora_message::daemon_to_daemon::Sequence;
use adora_shm::{RegionCache, SamplePool};
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
    /// Copies of remote messages, delivered to local nodes through shared memory.
    pub(crate) pool: Option<SamplePool>,
    /// Mappings of local senders' samples, to read what is published.
    pub(crate) regions: RegionCache,
    /// Per published output: messages taken from the node and how many of them were dropped
    /// here (sent with every message, see `Sequence`).
    pub(crate) sequences: BTreeMap<OutputKey, Sequence>,
    /// Per subscribed output: the sequence expected next from each of its last publishing
    /// instances (most recent first, at most [`STREAMS_KEPT`]), to count what went missing.
    pub(crate) expected: BTreeMap<OutputKey, Vec<Sequence>>,
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
