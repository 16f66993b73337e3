//! What daemons exchange over Zenoh for cross-machine inputs.
//!
//! Each node output with a receiver on another machine is published on the key
//! [`output_key`]`(dataflow, node, output)`. A Zenoh sample's *attachment* carries a versioned
//! [`RemoteHeader`] (encoded with [`encode_header`]); its *payload* carries the message bytes
//! untouched, so large payloads are never re-framed.

use adora_core::{DataId, NodeId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::common::Metadata;

/// Version of the cross-machine payload format; receivers drop samples of other versions
/// (with a warning naming both versions) instead of misreading them.
pub const REMOTE_FORMAT_VERSION: u16 = 2;

/// The Zenoh key of a node output: `adora/{dataflow}/{node}/{output}`.
pub fn output_key(dataflow: Uuid, node: &NodeId, output: &DataId) -> String {
    format!("adora/{dataflow}/{node}/{output}")
}

/// Header of a cross-machine message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteHeader {
    /// Always [`REMOTE_FORMAT_VERSION`] when sent by this version.
    pub version: u16,
    /// What the sample means.
    pub kind: RemoteKind,
}

/// The meaning of a cross-machine sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RemoteKind {
    /// A message; the Zenoh payload holds its bytes.
    Data {
        /// The sender's metadata (timestamp, parameters).
        metadata: Metadata,
    },
    /// The output closed (its node finished): receivers get `InputClosed`. Empty payload.
    Closed,
}

/// Errors decoding a header.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// Not a header at all.
    #[error("malformed cross-machine header: {0}")]
    Malformed(#[from] bincode::Error),
    /// Sent by an incompatible version.
    #[error("cross-machine format version {found} is not supported (this daemon speaks version {REMOTE_FORMAT_VERSION}); upgrade every daemon to the same adora version")]
    Version {
        /// The version found.
        found: u16,
    },
}

/// Encodes a header for a Zenoh attachment.
pub fn encode_header(kind: RemoteKind) -> Vec<u8> {
    let header = RemoteHeader {
        version: REMOTE_FORMAT_VERSION,
        kind,
    };
    bincode::serialize(&header)
        .expect("RemoteHeader serializes: plain data without maps of non-string keys")
}

/// Decodes a header from a Zenoh attachment, checking its version first.
pub fn decode_header(bytes: &[u8]) -> Result<RemoteKind, HeaderError> {
    // The version is the first field, so it can be read even if the rest changed shape.
    let version: u16 = bincode::deserialize(bytes.get(..2).unwrap_or(bytes))?;
    if version != REMOTE_FORMAT_VERSION {
        return Err(HeaderError::Version { found: version });
    }
    let header: RemoteHeader = bincode::deserialize(bytes)?;
    Ok(header.kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::Parameter;

    #[test]
    fn headers_round_trip() {
        let mut metadata = Metadata::new(uhlc::HLC::default().new_timestamp());
        metadata
            .parameters
            .insert("seq".into(), Parameter::Integer(41));
        for kind in [RemoteKind::Data { metadata }, RemoteKind::Closed] {
            assert_eq!(
                decode_header(&encode_header(kind.clone())).expect("decodes"),
                kind
            );
        }
    }

    #[test]
    fn other_versions_and_garbage_are_rejected() {
        let mut bytes = encode_header(RemoteKind::Closed);
        bytes[..2].copy_from_slice(&7u16.to_le_bytes());
        let err = decode_header(&bytes).expect_err("version 7");
        assert!(
            err.to_string().contains("version 7 is not supported"),
            "{err}"
        );
        assert!(decode_header(&[1]).is_err());
        assert!(decode_header(&[1, 0, 9, 9, 9]).is_err());
    }

    #[test]
    fn keys_name_dataflow_node_and_output() {
        let id = Uuid::nil();
        assert_eq!(
            output_key(id, &"camera".into(), &"frames".into()),
            "adora/00000000-0000-0000-0000-000000000000/camera/frames"
        );
    }
}
