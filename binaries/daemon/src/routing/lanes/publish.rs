//! The publish lanes: a lane per local output read on other machines, whose reader is the
//! daemon's publisher of that output (`remote/publish.rs`) instead of a node. It is named as the
//! lane's receiver ([`publisher_of`]) so that the sender treats it like any other lane.

use std::sync::atomic::Ordering;

use adora_core::{DataId, NodeId};

use crate::remote::publish::PublishLane;
use crate::routing::Routing;

/// Whether outputs read on other machines get a publish lane (`ADORA_PUBLISH_LANES=0` sends
/// their messages through the daemon's actor, to compare).
pub(super) fn publish_lanes_enabled() -> bool {
    std::env::var("ADORA_PUBLISH_LANES").map_or(true, |v| v != "0")
}

/// The reader of `sender/output`'s publish lane, the daemon's publisher, named as the lane's
/// receiver: `~` is not allowed in node ids, so no node has this name.
pub(crate) fn publisher_of(sender: &NodeId, output: &DataId) -> NodeId {
    NodeId::from(format!("~publish/{sender}/{output}"))
}

pub(super) fn is_publisher(receiver: &NodeId) -> bool {
    receiver.as_str().starts_with("~publish/")
}

impl Routing {
    /// The publish lane of `sender/output` (read on other machines) for its publisher, which
    /// numbers its messages as `stream`; `None` when it has none or it is closed.
    pub fn publish_lane(
        &self,
        sender: &NodeId,
        output: &DataId,
        stream: u64,
    ) -> Option<PublishLane> {
        let publisher = publisher_of(sender, output);
        let l = self
            .lanes
            .inputs
            .get(&(publisher.clone(), output.clone()))?;
        let (bell, _) = self.lanes.bells.get(&publisher)?;
        let key = (publisher, output.clone());
        let busy = self.lanes.publishing.get(&key)?.clone();
        let bit = self.holder_slots().get(&key).map(|s| s.1);
        (!l.lane.is_closed()).then(|| PublishLane {
            lane: l.lane.clone(),
            bell: bell.clone(),
            bit,
            stream,
            busy,
        })
    }

    /// Whether a publish lane holds messages its publisher has not published yet.
    pub fn publishing(&self) -> bool {
        let lanes = &self.lanes;
        lanes.publishing.iter().any(|(key, busy)| {
            // Entries first: the publisher marks itself busy before it takes them.
            let queued = lanes.inputs.get(key).is_some_and(|l| l.lane.has_entries());
            queued || busy.load(Ordering::SeqCst)
        })
    }
}
