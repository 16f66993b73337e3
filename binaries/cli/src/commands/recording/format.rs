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

use std::{collections::BTreeMap, io::Write as _};

use adora_message::{arrow_layout::TypeInfo, tap::TappedMessage, Metadata, Parameter};
use anyhow::{bail, Context};

/// Message encoding of every Adora channel.
pub const MESSAGE_ENCODING: &str = "adora.arrow.v1";

/// Name of the metadata record of dropped messages.
pub const DROPS_METADATA: &str = "adora.drops";

/// Name of the metadata record naming the dataflow file a recording was made from (key
/// `path`, absolute), written by `adora run --record` and `adora start --record`.
pub const DATAFLOW_METADATA: &str = "adora.dataflow";

/// A message's data in a recording, written into `data` (emptied first; a writer reuses it).
/// `json` writes the metadata: one per channel, so that it can reuse what its last message had.
pub fn encode_into(
    message: &TappedMessage,
    json: &mut MetadataJson,
    data: &mut Vec<u8>,
) -> anyhow::Result<()> {
    data.clear();
    data.extend_from_slice(&[0; 4]);
    json.write(&message.metadata, data)?;
    let header = u32::try_from(data.len() - 4).context("metadata of more than 4 GiB")?;
    data[..4].copy_from_slice(&header.to_le_bytes());
    data.extend_from_slice(&message.data);
    Ok(())
}

/// How `serde_json` begins a message's metadata, up to the digits of its time.
const BEFORE_TIME: &[u8] = br#"{"timestamp":{"time":"#;

/// Writes metadata as JSON exactly as `serde_json` does, faster for messages whose metadata
/// differ from the last one's only in their time (those of one output, as a rule): what
/// follows the time (the sender's clock id, the Arrow layout, the parameters) is kept from the
/// last message written in full and reused while they stay the same.
#[derive(Debug, Default)]
pub struct MetadataJson {
    /// The clock id, layout and parameters `after_time` was written for.
    last: Option<(uhlc::ID, TypeInfo, BTreeMap<String, Parameter>)>,
    /// The JSON after the time's digits.
    after_time: Vec<u8>,
}

impl MetadataJson {
    /// Appends the JSON of `metadata` to `out`.
    pub fn write(&mut self, metadata: &Metadata, out: &mut Vec<u8>) -> anyhow::Result<()> {
        let same = self.last.as_ref().is_some_and(|(id, layout, parameters)| {
            id == metadata.timestamp.get_id()
                && *layout == metadata.type_info
                && *parameters == metadata.parameters
        });
        if same {
            out.extend_from_slice(BEFORE_TIME);
            write!(out, "{}", metadata.timestamp.get_time().as_u64())?;
            out.extend_from_slice(&self.after_time);
            return Ok(());
        }
        let start = out.len();
        serde_json::to_writer(&mut *out, metadata).context("metadata to JSON")?;
        self.last = None;
        if let Some(rest) = out[start..].strip_prefix(BEFORE_TIME) {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            self.after_time.clear();
            self.after_time.extend_from_slice(&rest[digits..]);
            self.last = Some((
                *metadata.timestamp.get_id(),
                metadata.type_info.clone(),
                metadata.parameters.clone(),
            ));
        }
        Ok(())
    }
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
        encode_into(&message, &mut MetadataJson::default(), &mut data).expect("encodes");
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

    #[test]
    fn metadata_json_reused_from_the_last_message_is_what_serde_json_writes() {
        let clock = uhlc::HLC::default();
        let other_clock = uhlc::HLC::default();
        let plain = Metadata::new(clock.new_timestamp());
        let mut with_parameters = plain.clone();
        with_parameters.parameters = BTreeMap::from([
            (
                "label".to_owned(),
                Parameter::String("a \"quoted\" one".to_owned()),
            ),
            ("ratio".to_owned(), Parameter::Float(f64::NAN)),
        ]);
        let mut laid_out = plain.clone();
        let mut bits = adora_message::arrow_layout::ArrowTypeInfo::bytes(8);
        bits.data_type = arrow_schema::DataType::Int64;
        laid_out.type_info = TypeInfo::encode(&bits);
        assert_ne!(laid_out.type_info, TypeInfo::bytes());
        let sequence = [
            plain.clone(),
            plain.clone(),
            with_parameters.clone(),
            with_parameters, // NaN differs from itself: written in full again
            Metadata::new(other_clock.new_timestamp()),
            laid_out,
            plain,
        ];
        let mut json = MetadataJson::default();
        for (i, mut metadata) in sequence.into_iter().enumerate() {
            // A later time with more digits than the first, too.
            if i == 1 {
                metadata.timestamp =
                    uhlc::Timestamp::new(uhlc::NTP64(u64::MAX), *metadata.timestamp.get_id());
            }
            let mut out = b"kept".to_vec();
            json.write(&metadata, &mut out).expect("writes");
            let expected = serde_json::to_vec(&metadata).expect("serializes");
            assert_eq!(
                String::from_utf8_lossy(&out[4..]),
                String::from_utf8_lossy(&expected),
                "message {i}"
            );
            assert_eq!(&out[..4], b"kept");
        }
        assert!(json.last.is_some(), "the last message's JSON is kept");
    }
}
