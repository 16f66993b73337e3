//! Length-prefixed binary frames (`u32` little-endian length, then a bincode body) for the local
//! Unix-socket protocol, in blocking (node side) and async (daemon side) flavours.

use std::io::{Read, Write};

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted. Payloads at or above the shared-memory threshold never travel inline,
/// so legitimate frames are far smaller; the limit protects against a corrupt length prefix.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Errors of the frame codec.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The socket failed or closed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The frame body is not a valid message.
    #[error("malformed frame: {0}")]
    Decode(#[from] bincode::Error),
    /// The length prefix exceeds [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_LEN} bytes")]
    TooLarge(usize),
}

impl CodecError {
    /// True when the peer went away (closed between frames, or the socket broke because the
    /// process exited): a normal end of a connection, not a protocol error.
    pub fn is_eof(&self) -> bool {
        use std::io::ErrorKind::*;
        matches!(self, CodecError::Io(e) if matches!(e.kind(), UnexpectedEof | BrokenPipe | ConnectionReset))
    }
}

/// Encodes a message into a frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let len = bincode::serialized_size(msg)? as usize;
    if len > MAX_FRAME_LEN {
        return Err(CodecError::TooLarge(len));
    }
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    bincode::serialize_into(&mut buf, msg)?;
    Ok(buf)
}

/// Decodes a frame body (without the length prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    Ok(bincode::deserialize(body)?)
}

/// Writes one frame (blocking).
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), CodecError> {
    w.write_all(&encode(msg)?)?;
    Ok(())
}

/// Reads one frame (blocking), reusing `buf` for the body.
pub fn read_frame<T: DeserializeOwned>(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
) -> Result<T, CodecError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_LEN {
        return Err(CodecError::TooLarge(len));
    }
    buf.resize(len, 0);
    r.read_exact(buf)?;
    decode(buf)
}

/// Writes one frame (async).
pub async fn write_frame_async<T: Serialize>(
    w: &mut (impl AsyncWrite + Unpin),
    msg: &T,
) -> Result<(), CodecError> {
    w.write_all(&encode(msg)?).await?;
    Ok(())
}

/// Reads one frame (async), reusing `buf` for the body.
pub async fn read_frame_async<T: DeserializeOwned>(
    r: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> Result<T, CodecError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_LEN {
        return Err(CodecError::TooLarge(len));
    }
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    decode(buf)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        common::{DataRef, Metadata, Parameter, SegmentFile, SharedRef},
        daemon_to_node::{DaemonReply, NodeEvent},
        node_to_daemon::{Channel, NodeRequest},
    };

    fn metadata() -> Metadata {
        let hlc = uhlc::HLC::default();
        let mut m = Metadata::new(hlc.new_timestamp());
        m.parameters.insert("seq".into(), Parameter::Integer(7));
        m.parameters
            .insert("tags".into(), Parameter::ListString(vec!["a".into()]));
        m
    }

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: T) {
        let frame = encode(&msg).expect("encode");
        let mut cursor = std::io::Cursor::new(frame);
        let mut buf = Vec::new();
        let back: T = read_frame(&mut cursor, &mut buf).expect("decode");
        assert_eq!(back, msg);
    }

    #[test]
    fn node_requests_round_trip() {
        round_trip(NodeRequest::Register {
            protocol_version: crate::NODE_PROTOCOL_VERSION,
            dataflow_id: uuid::Uuid::new_v4(),
            node_id: "camera".into(),
            channel: Channel::Events,
        });
        round_trip(NodeRequest::SendOutput {
            output: "frames".into(),
            metadata: metadata(),
            data: DataRef::Inline(vec![1, 2, 3]),
            taps_before: 0,
        });
        round_trip(NodeRequest::SendOutput {
            output: "frames".into(),
            metadata: metadata(),
            data: DataRef::Shared(SharedRef {
                os_id: "adora-x-1".into(),
                len: 4 << 20,
                token: 42,
                file: SegmentFile { dev: 25, ino: 1234 },
            }),
            taps_before: 7,
        });
        round_trip(NodeRequest::CloseOutputs(vec!["frames".into()]));
        round_trip(NodeRequest::ReportDropTokens(vec![1, 2]));
        round_trip(NodeRequest::TakeUpdateLock {
            lock: 1,
            reason: "grasping".into(),
        });
        round_trip(NodeRequest::ReleaseUpdateLock { lock: 1 });
        round_trip(NodeRequest::AwaitRoom {
            output: "frames".into(),
        });
        round_trip(NodeRequest::NextEvents {
            dropped: Vec::new(),
        });
        round_trip(NodeRequest::NextEvents {
            dropped: vec![42, 43],
        });
    }

    #[test]
    fn tap_copies_round_trip_and_garbage_is_an_error() {
        let entry = crate::LaneEntry {
            metadata: metadata(),
            data: DataRef::Inline(vec![9; 100]),
        };
        let bytes = crate::TapCopy::encode(&"frames".into(), &entry.encode().expect("encode"))
            .expect("encode");
        let copy = crate::TapCopy::decode(&bytes).expect("decode");
        assert_eq!(copy.output, "frames".into());
        assert_eq!(copy.entry, entry);
        assert!(crate::TapCopy::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(crate::TapCopy::decode(&[0xff; 12]).is_err());
        assert!(crate::TapCopy::decode(&[]).is_err());
    }

    #[test]
    fn daemon_replies_round_trip() {
        round_trip(DaemonReply::Registered(Ok(())));
        round_trip(DaemonReply::Registered(Err("unknown node".into())));
        round_trip(DaemonReply::UpdateLock(Err(
            "machine `robot` is being upgraded".into(),
        )));
        round_trip(DaemonReply::Room);
        round_trip(DaemonReply::Events {
            events: vec![
                NodeEvent::Input {
                    id: "tick".into(),
                    metadata: metadata(),
                    data: DataRef::Inline(vec![]),
                },
                NodeEvent::InputClosed { id: "tick".into() },
                NodeEvent::Stop,
                NodeEvent::Error("boom".into()),
                NodeEvent::UpstreamRestarted {
                    node: "camera".into(),
                    inputs: vec!["frames".into()],
                },
                NodeEvent::UpstreamFailed {
                    node: "camera".into(),
                    inputs: vec!["frames".into()],
                    reason: "exit status 1".into(),
                },
            ],
            drop_counts: BTreeMap::from([("tick".into(), 3)]),
        });
        round_trip(DaemonReply::FreedSamples(vec![9]));
    }

    #[test]
    fn rejects_oversized_and_garbage_frames() {
        let mut huge = std::io::Cursor::new(((MAX_FRAME_LEN + 1) as u32).to_le_bytes().to_vec());
        let err = read_frame::<NodeRequest>(&mut huge, &mut Vec::new()).expect_err("too large");
        assert!(matches!(err, CodecError::TooLarge(_)), "{err}");

        let mut garbage = std::io::Cursor::new(vec![3, 0, 0, 0, 0xff, 0xff, 0xff]);
        let err = read_frame::<NodeRequest>(&mut garbage, &mut Vec::new()).expect_err("garbage");
        assert!(matches!(err, CodecError::Decode(_)), "{err}");

        let mut empty = std::io::Cursor::new(Vec::new());
        let err = read_frame::<NodeRequest>(&mut empty, &mut Vec::new()).expect_err("eof");
        assert!(err.is_eof());
    }
}
