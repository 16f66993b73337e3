//! The cut of a live move (`adora_message::relocation::Cut`): the arriving instance records,
//! per input, the send timestamp of the last message queued for it; at `Leave` the old
//! instance gets its inputs up to those timestamps and nothing after them.

use std::collections::BTreeSet;

use adora_core::{DataId, NodeId};
use adora_message::{common::Timestamp, relocation::Cut};

use super::Routing;

/// Where a node of a move stands with its cut.
#[derive(Debug)]
pub(super) enum CutState {
    /// An arriving instance: the last timestamp queued per input (timers excepted).
    Tracking(Cut),
    /// A leaving instance: it gets the messages up to the cut; `complete` holds the inputs
    /// that reached it (messages of one sender arrive in order, so none up to it is missing).
    Filtering {
        cut: Cut,
        complete: BTreeSet<DataId>,
        /// The latest message seen per input since the cut was applied (for the log).
        seen: Cut,
    },
}

impl CutState {
    /// Whether a message stamped `stamp` on `input` is queued for the node.
    pub fn admit(&mut self, input: &DataId, stamp: Timestamp, timer: bool) -> bool {
        match self {
            CutState::Tracking(cut) => {
                if !timer {
                    cut.insert(input.clone(), stamp);
                }
                true
            }
            // The new instance's timers tick on its own daemon.
            CutState::Filtering { .. } if timer => false,
            CutState::Filtering {
                cut,
                complete,
                seen,
            } => match cut.get(input) {
                // The new instance had nothing on this input yet: it may lack any of them.
                None => true,
                Some(last) => {
                    seen.insert(input.clone(), stamp);
                    if stamp >= *last {
                        complete.insert(input.clone());
                    }
                    stamp <= *last
                }
            },
        }
    }
}

impl Routing {
    /// `node` arrives in a move: record what is queued for it from now on.
    pub fn track_cut(&mut self, node: &NodeId) {
        if let Some(state) = self.nodes.get_mut(node) {
            state.cut = Some(CutState::Tracking(Cut::new()));
        }
    }

    /// `node`'s outputs flow (`Switch`): the cut, and the end of recording it.
    pub fn take_cut(&mut self, node: &NodeId) -> Cut {
        match self.nodes.get_mut(node).and_then(|s| s.cut.take()) {
            Some(CutState::Tracking(cut)) => cut,
            _ => Cut::new(),
        }
    }

    /// `node` leaves after the messages up to `cut`.
    pub fn filter_cut(&mut self, node: &NodeId, cut: Cut) {
        if let Some(state) = self.nodes.get_mut(node) {
            state.cut = Some(CutState::Filtering {
                cut,
                complete: BTreeSet::new(),
                seen: Cut::new(),
            });
        }
    }

    /// True when every input of `node`'s cut reached it (or it has no cut).
    pub fn cut_complete(&self, node: &NodeId) -> bool {
        match self.nodes.get(node).and_then(|s| s.cut.as_ref()) {
            Some(CutState::Filtering { cut, complete, .. }) => complete.len() >= cut.len(),
            _ => true,
        }
    }

    /// The inputs of `node` that have not reached the cut: the cut, and the latest message
    /// seen since it was applied.
    pub fn cut_missing(&self, node: &NodeId) -> Vec<(DataId, Timestamp, Option<Timestamp>)> {
        let Some(CutState::Filtering {
            cut,
            complete,
            seen,
        }) = self.nodes.get(node).and_then(|s| s.cut.as_ref())
        else {
            return Vec::new();
        };
        cut.iter()
            .filter(|(input, _)| !complete.contains(*input))
            .map(|(input, at)| (input.clone(), *at, seen.get(input).copied()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaving_instance_gets_every_message_up_to_the_cut_and_none_after() {
        let clock = uhlc::HLC::default();
        let stamps: Vec<Timestamp> = (0..4).map(|_| clock.new_timestamp()).collect();
        let input: DataId = "in".into();
        let mut arriving = CutState::Tracking(Cut::new());
        assert!(arriving.admit(&input, stamps[1], false));
        assert!(arriving.admit(&"tick".into(), stamps[2], true));
        let CutState::Tracking(cut) = arriving else {
            unreachable!()
        };
        assert_eq!(cut, Cut::from([(input.clone(), stamps[1])]));

        let mut leaving = CutState::Filtering {
            cut,
            complete: BTreeSet::new(),
            seen: Cut::new(),
        };
        assert!(
            !leaving.admit(&"tick".into(), stamps[0], true),
            "timers stop"
        );
        assert!(
            leaving.admit(&"other".into(), stamps[3], false),
            "not in the cut"
        );
        assert!(leaving.admit(&input, stamps[0], false));
        assert!(matches!(&leaving, CutState::Filtering { complete, .. } if complete.is_empty()));
        assert!(leaving.admit(&input, stamps[1], false), "the cut itself");
        assert!(!leaving.admit(&input, stamps[2], false), "after the cut");
        assert!(
            matches!(&leaving, CutState::Filtering { complete, .. } if complete.contains(&input))
        );
    }
}
