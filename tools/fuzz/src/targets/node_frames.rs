//! The node ↔ daemon frames (`codec`: a `u32` length, then bincode): generated messages of every
//! variant, the same frames mutated (lengths set to hostile values, bytes flipped, cut or added),
//! and random bytes, read both as a whole frame and as a body.

use std::{fmt::Debug, io::Cursor};

use adora_message::codec::{self, MAX_FRAME_LEN};
use proptest::{strategy::Strategy, test_runner::TestRunner};
use serde::{de::DeserializeOwned, Serialize};

use super::{check_memory, draw, hex_excerpt, input_bytes, mode, strategies, Mode};
use crate::{alloc::peak_during, runner::Target};

/// Frames a node sends.
pub const NODE_TO_DAEMON: Target = Target {
    name: "node-to-daemon",
    about: "node protocol frames -> codec::read_frame/decode::<NodeRequest>",
    case: |runner| frame_case(runner, &strategies::node_request()),
};

/// Frames a daemon sends.
pub const DAEMON_TO_NODE: Target = Target {
    name: "daemon-to-node",
    about: "node protocol frames -> codec::read_frame/decode::<DaemonReply>",
    case: |runner| frame_case(runner, &strategies::daemon_reply()),
};

/// What a node writes into shared-memory lanes, read by its receivers and its daemon: lane
/// entries (`LaneEntry`) and copies for taps (`TapCopy`), each generated, mutated or random.
pub const LANE_ENTRIES: Target = Target {
    name: "lane-entries",
    about: "lane slots -> LaneEntry::decode, TapCopy::decode",
    case: lane_case,
};

fn lane_case(runner: &mut TestRunner) -> Result<(), String> {
    use adora_message::{LaneEntry, TapCopy};
    let (output, metadata, data) = draw(
        runner,
        &(
            strategies::id(),
            strategies::metadata(),
            strategies::data_ref(),
        ),
    );
    let entry = LaneEntry { metadata, data };
    let bytes = entry
        .encode()
        .map_err(|e| format!("an entry does not encode: {e}"))?;
    let copy = TapCopy::encode(&output.into(), &bytes)
        .map_err(|e| format!("a copy does not encode: {e}"))?;
    let input_mode = mode(runner);
    for valid in [bytes, copy] {
        let input = input_bytes(runner, input_mode, &valid, 4096);
        let (entry, peak) = peak_during(|| LaneEntry::decode(&input));
        check_memory(peak, input.len(), 16, BINCODE_FIXED_BYTES)?;
        let (copy, peak) = peak_during(|| TapCopy::decode(&input));
        check_memory(peak, input.len(), 16, BINCODE_FIXED_BYTES)?;
        if input_mode == Mode::Valid && entry.is_err() && copy.is_err() {
            return Err(format!("a valid slot was refused: {}", hex_excerpt(&input)));
        }
        if let Ok(entry) = entry {
            let encode = |e: &LaneEntry| e.encode().map_err(|e| e.to_string());
            let decode = |b: &[u8]| LaneEntry::decode(b).map_err(|e| e.to_string());
            re_encodes(&entry, encode, decode)
                .map_err(|e| format!("{e}\ninput: {}", hex_excerpt(&input)))?;
        }
    }
    Ok(())
}

/// Memory a bincode decode may use beyond its input: serde's cautious preallocation (at most
/// 1 MiB per sequence) a few levels deep.
pub(crate) const BINCODE_FIXED_BYTES: usize = 4 << 20;

/// The property every bincode decoder keeps: a value it accepts encodes, and that encoding
/// decodes to a value that encodes the same (bytes compared, so NaN parameters count as equal).
pub(crate) fn re_encodes<T: Serialize + DeserializeOwned>(
    value: &T,
    encode: impl Fn(&T) -> Result<Vec<u8>, String>,
    decode: impl Fn(&[u8]) -> Result<T, String>,
) -> Result<(), String> {
    let first = encode(value).map_err(|e| format!("an accepted value does not encode: {e}"))?;
    let back =
        decode(&first).map_err(|e| format!("an accepted value's encoding does not decode: {e}"))?;
    let second = encode(&back).map_err(|e| format!("a decoded value does not encode: {e}"))?;
    if first != second {
        return Err(format!(
            "an accepted value changed in a round trip: {} became {}",
            hex_excerpt(&first),
            hex_excerpt(&second)
        ));
    }
    Ok(())
}

fn frame_case<T, S>(runner: &mut TestRunner, strategy: &S) -> Result<(), String>
where
    T: Serialize + DeserializeOwned + Debug,
    S: Strategy<Value = T>,
{
    let value = draw(runner, strategy);
    let frame =
        codec::encode(&value).map_err(|e| format!("a generated message does not encode: {e}"))?;
    let input_mode = mode(runner);
    let bytes = input_bytes(runner, input_mode, &frame, 4096);

    let mut buf = Vec::new();
    let (read, peak) = peak_during(|| codec::read_frame::<T>(&mut Cursor::new(&bytes), &mut buf));
    // `read_frame` makes room for the length the prefix announces (bounded by the limit).
    check_memory(peak, bytes.len(), 16, MAX_FRAME_LEN + BINCODE_FIXED_BYTES)?;
    let body = bytes.get(4..).unwrap_or_default();
    let (decoded, peak) = peak_during(|| codec::decode::<T>(body));
    check_memory(peak, body.len(), 16, BINCODE_FIXED_BYTES)?;

    if input_mode == Mode::Valid {
        read.map_err(|e| format!("a valid frame was refused: {e}: {}", hex_excerpt(&frame)))?;
    }
    let encode = |v: &T| {
        codec::encode(v)
            .map(|f| f[4..].to_vec())
            .map_err(|e| e.to_string())
    };
    let decode = |b: &[u8]| codec::decode::<T>(b).map_err(|e| e.to_string());
    match decoded {
        Ok(value) => re_encodes(&value, encode, decode)
            .map_err(|e| format!("{e}\ninput: {}", hex_excerpt(&bytes))),
        Err(_) => Ok(()),
    }
}
