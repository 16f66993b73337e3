//! How Adora lays messages out in MCAP (one place for the writer and the readers).
//!
//! - One channel per output, topic `node/output`, message encoding [`MESSAGE_ENCODING`], no
//!   schema; channel metadata `node`, `output` and, from the first message, `arrow_type` (the
//!   Arrow data type as JSON, `"UInt8"` for plain bytes).
//! - A message's log time is its send timestamp (nanoseconds since the Unix epoch, from the
//!   sender's hybrid clock); publish time is when the recorder got it.
//! - A message's data is a 4-byte little-endian length, the message's metadata as JSON
//!   (`timestamp`, `type_info`, `parameters`), then the payload bytes as the node sent them.
//! - A metadata record named [`DROPS_METADATA`] holds the messages a `--lossy` recording dropped,
//!   per topic (`{"sender/counter": "3"}`); a lossless recording writes it empty. A split
//!   recording writes it into its last part.
//! - A metadata record named [`DATAFLOW_METADATA`] names the dataflow file (`path`), when known.

use adora_message::{tap::TappedMessage, Metadata};
use anyhow::{bail, Context};

/// Message encoding of every Adora channel.
pub const MESSAGE_ENCODING: &str = "adora.arrow.v1";

/// Name of the metadata record of dropped messages.
pub const DROPS_METADATA: &str = "adora.drops";

/// Name of the metadata record naming the dataflow file a recording was made from (key
/// `path`, absolute), written by `adora run --record` and `adora start --record`.
pub const DATAFLOW_METADATA: &str = "adora.dataflow";

/// A message's data in a recording, written into `data` (emptied first; a writer reuses it).
pub fn encode_into(message: &TappedMessage, data: &mut Vec<u8>) -> anyhow::Result<()> {
    data.clear();
    data.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut *data, &message.metadata).context("metadata to JSON")?;
    let header = u32::try_from(data.len() - 4).context("metadata of more than 4 GiB")?;
    data[..4].copy_from_slice(&header.to_le_bytes());
    data.extend_from_slice(&message.data);
    Ok(())
}

/// The metadata and payload of a recorded message's data.
pub fn decode(data: &[u8]) -> anyhow::Result<(Metadata, &[u8])> {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        bail!("a recorded message of {} bytes has no header", data.len());
    };
    let len = u32::from_le_bytes(*len) as usize;
    if len > rest.len() {
        bail!(
            "a recorded message's header says {len} bytes, {} remain",
            rest.len()
        );
    }
    let (header, payload) = rest.split_at(len);
    let metadata = serde_json::from_slice(header).context("a recorded message's metadata")?;
    Ok((metadata, payload))
}

/// Nanoseconds since the Unix epoch of a message's send timestamp.
pub fn log_time(metadata: &Metadata) -> u64 {
    let nanos = metadata.timestamp.get_time().to_duration().as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

/// The Arrow data type of a message, as JSON (`None` when its layout does not decode).
pub fn arrow_type(message: &TappedMessage) -> Option<String> {
    let info = message.metadata.type_info.decode(message.data.len()).ok()?;
    serde_json::to_string(&info.data_type).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_their_recorded_data() {
        let message = TappedMessage {
            node: "a".into(),
            output: "out".into(),
            metadata: Metadata::new(uhlc::HLC::default().new_timestamp()),
            data: vec![1, 2, 3],
        };
        let mut data = vec![9; 100]; // what a writer's buffer held before
        encode_into(&message, &mut data).expect("encodes");
        let (metadata, payload) = decode(&data).expect("decodes");
        assert_eq!(
            (metadata, payload),
            (message.metadata.clone(), &[1u8, 2, 3][..])
        );
        assert!(decode(&data[..3]).is_err());
        assert!(decode(&[200, 0, 0, 0, 1]).is_err());
        assert_eq!(arrow_type(&message).as_deref(), Some("\"UInt8\""));
        assert!(log_time(&message.metadata) > 1_600_000_000_000_000_000);
    }
}
