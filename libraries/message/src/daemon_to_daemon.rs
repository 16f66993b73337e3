//! What daemons exchange over Zenoh for cross-machine inputs.
//!
//! Each node output with a receiver on another machine is published on the key
//! [`output_key`]`(dataflow, node, output)`. A Zenoh sample's *attachment* carries a versioned
//! [`RemoteHeader`] (encoded with [`encode_header`]); its *payload* carries the message bytes
//! untouched, so large payloads are never re-framed.
//!
//! After the header comes the output's [`Sequence`] (24 bytes): which publishing instance sent
//! it, how many messages the sending daemon took from the node on that output before this one,
//! and how many of those it dropped.
//! A receiver tells from it how many messages went missing, and why (dropped by the sender, or
//! lost on the way). Daemons of version 2 without it decode the header alone (bincode ignores
//! trailing bytes), so the format version stays 2.
//!
//! Last comes the payload's CRC-32 (4 bytes, [`append_checksum`]): a receiver drops a message
//! whose bytes do not match it (Zenoh has delivered, after a link was cut, one message made of
//! two messages' fragments), and the gap in the sequence counts it as lost on the way. A
//! receiver that predates it reads no sequence from the longer trailer (it only loses the
//! accounting).

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

/// Delivery accounting of one published output, sent after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sequence {
    /// The publishing instance: chosen at random by the sending daemon when it starts numbering
    /// the output. While a node moves, its old and new instance publish the same output for a
    /// moment, each with its own numbers.
    pub stream: u64,
    /// Messages the sending daemon took from the node on this output before this one (dropped
    /// ones included); for `Closed`, all of them.
    pub seq: u64,
    /// How many of those the sending daemon dropped (its publish queue or byte budget was full).
    pub dropped: u64,
}

/// Encoded length of a [`Sequence`].
const SEQUENCE_LEN: usize = 24;

/// Encoded length of a [`Sequence`] and a checksum.
const CHECKED_LEN: usize = SEQUENCE_LEN + 4;

impl Sequence {
    /// The numbers of a new publishing instance (`stream` random).
    pub fn start() -> Self {
        Sequence {
            stream: Uuid::new_v4().as_u64_pair().0,
            seq: 0,
            dropped: 0,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.stream.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.dropped.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?))
        };
        (bytes.len() == SEQUENCE_LEN).then_some(())?;
        let sequence = Sequence {
            stream: word(0)?,
            seq: word(8)?,
            dropped: word(16)?,
        };
        // A sender never drops more messages than it took.
        (sequence.dropped <= sequence.seq).then_some(sequence)
    }
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

/// Encodes a header and the output's sequence for a Zenoh attachment.
pub fn encode_header(kind: RemoteKind, sequence: Sequence) -> Vec<u8> {
    let header = RemoteHeader {
        version: REMOTE_FORMAT_VERSION,
        kind,
    };
    let mut out = bincode::serialize(&header)
        .expect("RemoteHeader serializes: plain data without maps of non-string keys");
    sequence.encode(&mut out);
    out
}

/// Appends the CRC-32 of `payload` to an encoded header.
pub fn append_checksum(header: &mut Vec<u8>, payload: &[u8]) {
    header.extend_from_slice(&checksum(payload).to_le_bytes());
}

/// The CRC-32 of a payload.
pub fn checksum(payload: &[u8]) -> u32 {
    crc32fast::hash(payload)
}

/// The CRC-32 of a payload held in several slices, in order (the same as [`checksum`] of their
/// concatenation).
pub fn checksum_slices<'a>(slices: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for slice in slices {
        hasher.update(slice);
    }
    hasher.finalize()
}

/// Decodes a header from a Zenoh attachment, checking its version first, and the sequence after
/// it (`None` from a daemon that sends none, or an invalid one).
pub fn decode_header(bytes: &[u8]) -> Result<(RemoteKind, Option<Sequence>), HeaderError> {
    decode_header_checked(bytes).map(|(kind, sequence, _)| (kind, sequence))
}

/// [`decode_header`], and the payload's checksum when the sender appended one.
pub fn decode_header_checked(
    bytes: &[u8],
) -> Result<(RemoteKind, Option<Sequence>, Option<u32>), HeaderError> {
    // The version is the first field, so it can be read even if the rest changed shape.
    let version: u16 = bincode::deserialize(bytes.get(..2).unwrap_or(bytes))?;
    if version != REMOTE_FORMAT_VERSION {
        return Err(HeaderError::Version { found: version });
    }
    // From the slice, not a reader: bincode checks every length against the bytes there are
    // before allocating (a reader would allocate whatever length a hostile header claims).
    let header: RemoteHeader = bincode::deserialize(bytes)?;
    // Fixed-size integers: the header's encoding is exactly what it was decoded from.
    let used = usize::try_from(bincode::serialized_size(&header)?).unwrap_or(usize::MAX);
    let trailer = bytes.get(used..).unwrap_or_default();
    let (sequence, checksum) = match trailer.len() {
        SEQUENCE_LEN => (Sequence::decode(trailer), None),
        CHECKED_LEN => {
            let (sequence, sum) = trailer.split_at(SEQUENCE_LEN);
            let sum = u32::from_le_bytes(sum.try_into().expect("4 bytes by the length"));
            (Sequence::decode(sequence), Some(sum))
        }
        _ => (None, None),
    };
    Ok((header.kind, sequence, checksum))
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
        let sequence = Sequence {
            stream: 7,
            seq: 41,
            dropped: 3,
        };
        for kind in [RemoteKind::Data { metadata }, RemoteKind::Closed] {
            assert_eq!(
                decode_header(&encode_header(kind.clone(), sequence)).expect("decodes"),
                (kind, Some(sequence))
            );
        }
    }

    #[test]
    fn a_header_without_a_valid_sequence_still_decodes() {
        let header = RemoteHeader {
            version: REMOTE_FORMAT_VERSION,
            kind: RemoteKind::Closed,
        };
        let old = bincode::serialize(&header).expect("serializes");
        assert_eq!(
            decode_header(&old).expect("a version-2 header of an older daemon"),
            (RemoteKind::Closed, None)
        );
        // More dropped than taken is not a sequence.
        let mut bad = old.clone();
        bad.extend_from_slice(&9u64.to_le_bytes());
        bad.extend_from_slice(&1u64.to_le_bytes());
        bad.extend_from_slice(&2u64.to_le_bytes());
        assert_eq!(decode_header(&bad).expect("decodes").1, None);
        // A new header still decodes for an older daemon (it ignores what follows).
        let new = encode_header(RemoteKind::Closed, Sequence::default());
        let decoded: RemoteHeader = bincode::deserialize(&new).expect("trailing bytes allowed");
        assert_eq!(decoded, header);
    }

    #[test]
    fn the_checksum_follows_the_sequence_and_names_the_payload() {
        let sequence = Sequence {
            stream: 1,
            seq: 2,
            dropped: 0,
        };
        let mut bytes = encode_header(RemoteKind::Closed, sequence);
        append_checksum(&mut bytes, b"payload");
        let (kind, got, sum) = decode_header_checked(&bytes).expect("decodes");
        assert_eq!((kind, got), (RemoteKind::Closed, Some(sequence)));
        assert_eq!(sum, Some(checksum(b"payload")));
        assert_ne!(sum, Some(checksum(b"payloaD")));
        // A payload that came in fragments has the checksum of its bytes in order.
        assert_eq!(sum, Some(checksum_slices([&b"pay"[..], b"", b"load"])));
        assert_ne!(sum, Some(checksum_slices([&b"load"[..], b"pay"])));
        // Without one (an older daemon): no checksum, the sequence still there.
        let plain = encode_header(RemoteKind::Closed, sequence);
        assert_eq!(decode_header_checked(&plain).expect("decodes").2, None);
        assert_eq!(decode_header(&bytes).expect("decodes").1, Some(sequence));
    }

    #[test]
    fn other_versions_and_garbage_are_rejected() {
        let mut bytes = encode_header(RemoteKind::Closed, Sequence::default());
        bytes[..2].copy_from_slice(&7u16.to_le_bytes());
        let err = decode_header(&bytes).expect_err("version 7");
        assert!(
            err.to_string().contains("version 7 is not supported"),
            "{err}"
        );
        assert!(decode_header(&[1]).is_err());
        assert!(decode_header(&[1, 0, 9, 9, 9]).is_err());
        // A hostile length is refused, not allocated (found by adora-fuzz).
        let mut huge = encode_header(RemoteKind::Closed, Sequence::default());
        huge.truncate(2);
        huge.extend_from_slice(&0u32.to_le_bytes()); // variant `Data`
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_header(&huge).is_err());
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
