//! Taps: copies of a running dataflow's outputs for a recorder or `adora topic` (issue 21).
//!
//! A tap is asked for by a client (`ControlRequest::Tap`); the coordinator asks every daemon that
//! runs a tapped node (`DaemonCommand::Tap`), and relays the daemons' [`TapBatch`]es to the
//! client, which acknowledges each one (`ControlRequest::TapAck`) so that the daemon may send
//! more: at most [`TAP_WINDOW`] cost units per daemon are in flight. Only tapped outputs are
//! copied, and only by the daemon running their sender.

use std::collections::BTreeMap;

use adora_core::{DataId, NodeId};
use serde::{Deserialize, Serialize};

use crate::Metadata;

/// What a daemon may have sent a client and not yet seen acknowledged, in cost units
/// ([`TapBatch::cost`]: payload bytes plus [`TAP_MESSAGE_COST`] per message).
pub const TAP_WINDOW: u64 = 32 * 1024 * 1024;

/// Cost of one message on top of its payload bytes, so that empty messages are not free.
pub const TAP_MESSAGE_COST: u64 = 256;

/// The most payload bytes a daemon puts in one batch (a bigger message travels alone).
pub const TAP_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// One copied message of a tapped output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TappedMessage {
    /// The sending node.
    pub node: NodeId,
    /// Its output.
    pub output: DataId,
    /// The message's metadata as the node sent it (send timestamp, Arrow layout, parameters).
    pub metadata: Metadata,
    /// The payload bytes (base64 in JSON).
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

impl TappedMessage {
    /// `node/output`, the name of the output in every tap and recording.
    pub fn topic(&self) -> String {
        let mut topic = String::new();
        self.write_topic(&mut topic);
        topic
    }

    /// [`Self::topic`] into `topic` (emptied first), reusing its memory.
    pub fn write_topic(&self, topic: &mut String) {
        topic.clear();
        topic.push_str(self.node.as_str());
        topic.push('/');
        topic.push_str(self.output.as_str());
    }
}

/// Messages a daemon copied, in the order each node sent them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TapBatch {
    /// The messages.
    pub messages: Vec<TappedMessage>,
    /// Messages a lossy tap dropped so far on this daemon, per `node/output` (cumulative; empty
    /// for a lossless tap, which never drops).
    #[serde(default)]
    pub dropped: BTreeMap<String, u64>,
}

impl TapBatch {
    /// What the batch counts against [`TAP_WINDOW`].
    pub fn cost(&self) -> u64 {
        self.messages
            .iter()
            .map(|m| message_cost(m.data.len()))
            .sum()
    }
}

/// The cost of one message of `len` payload bytes (never more than the whole window, so a
/// single huge message can always be sent).
pub fn message_cost(len: usize) -> u64 {
    (len as u64 + TAP_MESSAGE_COST).min(TAP_WINDOW)
}

/// An output named `node/output` on the command line or in a request.
pub fn parse_topic(topic: &str) -> Result<(NodeId, DataId), String> {
    match topic.split_once('/') {
        Some((node, output)) if !node.is_empty() && !output.is_empty() && !output.contains('/') => {
            Ok((node.into(), output.into()))
        }
        _ => Err(format!("`{topic}` is not NODE/OUTPUT")),
    }
}

/// Serde of payload bytes as one base64 string: JSON arrays of numbers would cost ~3.5 bytes
/// per byte on the control plane, base64 costs 1.33.
mod base64_bytes {
    use base64::{engine::general_purpose::STANDARD, Engine};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::round_trip;

    fn message(len: usize) -> TappedMessage {
        let hlc = uhlc::HLC::default();
        TappedMessage {
            node: "sender".into(),
            output: "counter".into(),
            metadata: Metadata::new(hlc.new_timestamp()),
            data: (0..len).map(|i| i as u8).collect(),
        }
    }

    #[test]
    fn batches_round_trip_with_their_bytes_in_base64() {
        let batch = TapBatch {
            messages: vec![message(0), message(1000)],
            dropped: [("sender/counter".to_owned(), 3)].into(),
        };
        round_trip(batch.clone());
        let text = serde_json::to_string(&batch).expect("serializes");
        assert!(text.contains("\"data\":\"\""), "{text}");
        assert_eq!(batch.cost(), 2 * TAP_MESSAGE_COST + 1000);
        assert_eq!(message_cost(usize::MAX / 2), TAP_WINDOW);
    }

    #[test]
    fn topics_are_node_slash_output() {
        assert_eq!(
            parse_topic("camera/image"),
            Ok(("camera".into(), "image".into()))
        );
        for bad in ["camera", "/image", "camera/", "a/b/c"] {
            assert!(parse_topic(bad).is_err(), "{bad}");
        }
    }
}
