//! Moving one running node from one daemon to another, make-before-break (`adora node move`,
//! and `adora cluster drain` on top of it): the steps the coordinator asks of the two daemons
//! involved, and the report of a finished move.
//!
//! The order is: [`RelocateStep::Expect`] on the source (links for after the move, nothing
//! removed) → [`RelocateStep::Spawn`] on the target (the new instance, muted, answered once it
//! connected and its published outputs are matched) → [`RelocateStep::Switch`] on the target
//! (its outputs flow; it answers with the [`Cut`]) → [`RelocateStep::Leave`] on the source,
//! with the cut (the old instance gets its inputs up to the cut, then is stopped quietly; its
//! outputs flow until it exits) → once the source answered, [`RelocateStep::Settle`] on the target (links
//! only the old instance needed are dropped, after a grace for its last messages in flight).
//! [`RelocateStep::Abort`] undoes the steps before `Switch` on either side.

use std::collections::BTreeMap;

use adora_core::{DataId, NodeId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{common::Timestamp, coordinator_to_daemon::SpawnDataflow};

/// Where the old and the new instance of a moved node split its inputs: per input (timer
/// inputs excepted), the send timestamp of the last message queued for the new instance when
/// its outputs began to flow (`Switch`). The new instance's outputs of messages up to the cut
/// may have been dropped (it was muted), so the old one handles every message up to the cut and
/// none after it: nothing is lost, and only the messages still queued for the new instance at
/// `Switch` (handled by it after the switch) can be delivered twice. Empty when the new instance had no message yet, or from a daemon
/// that predates cuts: the old instance is then muted at `Leave`.
pub type Cut = BTreeMap<DataId, Timestamp>;

/// One step of a move, sent to one daemon (answered by `DaemonMessage::Relocated`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relocation {
    /// The dataflow.
    pub dataflow: Uuid,
    /// The node being moved.
    pub node: NodeId,
    /// What this daemon does.
    pub step: RelocateStep,
    /// With `Leave`: the cut the target reported at `Switch`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cut: Cut,
}

/// What a daemon does in a move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RelocateStep {
    /// Source: the node will leave; add the cross-machine links this daemon needs once it runs
    /// elsewhere (publish local outputs it reads, subscribe to its outputs read here). Nothing
    /// is removed yet.
    Expect,
    /// Target: start the node here (as a new part of the dataflow when this daemon has none:
    /// `spawn.nodes` is the part's nodes with the moved one), its outputs muted. Answered once
    /// it connected and its published outputs have their remote subscribers, or when it failed.
    Spawn(Box<SpawnDataflow>),
    /// Target: the new instance's outputs flow (the old one still runs: receivers may get a
    /// message twice until `Leave`).
    Switch,
    /// Source: mute the old instance and stop it quietly (no `InputClosed` downstream, no
    /// `Closed` on Zenoh, no outcome); it leaves this daemon's part (an empty part ends).
    Leave,
    /// Target, after the source answered `Leave`: drop the links only the old instance needed
    /// (subscriptions to the node's outputs, now local) after a grace for the messages it sent
    /// before it was muted.
    Settle,
    /// Either side, before `Switch`: forget the move (the target stops the new instance
    /// quietly), links back to the daemon's own nodes.
    Abort,
}

impl RelocateStep {
    /// The step's name, for answers and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Expect => "expect",
            Self::Spawn(_) => "spawn",
            Self::Switch => "switch",
            Self::Leave => "leave",
            Self::Settle => "settle",
            Self::Abort => "abort",
        }
    }
}

/// A move that completed (answer of `adora node move`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveReport {
    /// The dataflow.
    pub dataflow: Uuid,
    /// The node.
    pub node: NodeId,
    /// The daemon it ran on.
    pub from: String,
    /// The daemon it runs on now.
    pub to: String,
    /// From the move's start until the new instance was connected (and its published outputs
    /// matched), in milliseconds: mostly the node's own start time.
    pub start_ms: u64,
    /// From `Switch` sent until `Leave` answered, in milliseconds: an upper bound of the window
    /// in which both instances delivered (a receiver may get a message twice, or a later one
    /// before an earlier one). What receivers saw is measured at the receivers, not here.
    pub overlap_ms: u64,
    /// The whole move, in milliseconds.
    pub total_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::round_trip;

    #[test]
    fn relocations_round_trip() {
        for step in [
            RelocateStep::Expect,
            RelocateStep::Switch,
            RelocateStep::Leave,
            RelocateStep::Settle,
            RelocateStep::Abort,
        ] {
            round_trip(Relocation {
                dataflow: Uuid::nil(),
                node: "relay".into(),
                step,
                cut: Cut::new(),
            });
        }
        let clock = uhlc::HLC::default();
        round_trip(Relocation {
            dataflow: Uuid::nil(),
            node: "relay".into(),
            step: RelocateStep::Leave,
            cut: [("in".into(), clock.new_timestamp())].into(),
        });
        // From a coordinator that predates cuts.
        let old =
            r#"{"dataflow":"00000000-0000-0000-0000-000000000000","node":"relay","step":"Leave"}"#;
        let decoded: Relocation = serde_json::from_str(old).expect("decodes");
        assert!(decoded.cut.is_empty());
        round_trip(MoveReport {
            dataflow: Uuid::nil(),
            node: "relay".into(),
            from: "b".into(),
            to: "c".into(),
            start_ms: 120,
            overlap_ms: 2,
            total_ms: 150,
        });
    }
}
