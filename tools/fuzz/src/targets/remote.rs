//! The cross-machine payload header (`daemon_to_daemon::decode_header`, a Zenoh attachment from
//! another machine): generated headers, mutated, and random bytes.

use adora_message::daemon_to_daemon::{decode_header, encode_header, RemoteKind, Sequence};
use proptest::{prelude::*, test_runner::TestRunner};

use super::{
    check_memory, draw, hex_excerpt, input_bytes, mode,
    node_frames::{re_encodes, BINCODE_FIXED_BYTES},
    strategies, Mode,
};
use crate::{alloc::peak_during, runner::Target};

/// The header of a sample from another machine.
pub const REMOTE_HEADER: Target = Target {
    name: "remote-header",
    about: "Zenoh attachment bytes -> daemon_to_daemon::decode_header",
    case: header_case,
};

fn header_case(runner: &mut TestRunner) -> Result<(), String> {
    let kind = draw(
        runner,
        &prop_oneof![
            4 => strategies::metadata().prop_map(|metadata| RemoteKind::Data { metadata }),
            1 => Just(RemoteKind::Closed),
        ],
    );
    let sequence = draw(
        runner,
        &(any::<u64>(), 0u64..1 << 40, 0u64..1 << 40).prop_map(|(stream, a, b)| Sequence {
            stream,
            seq: a.max(b),
            dropped: a.min(b),
        }),
    );
    let valid = encode_header(kind, sequence);
    let input_mode = mode(runner);
    let bytes = input_bytes(runner, input_mode, &valid, 2048);
    let (decoded, peak) = peak_during(|| decode_header(&bytes));
    check_memory(peak, bytes.len(), 16, BINCODE_FIXED_BYTES)?;
    if input_mode == Mode::Valid {
        decoded
            .as_ref()
            .map_err(|e| format!("a valid header was refused: {e}: {}", hex_excerpt(&valid)))?;
    }
    match decoded {
        // A header without a valid sequence re-encodes with none (an older daemon's).
        Ok(decoded) => re_encodes(
            &decoded,
            |(k, s)| {
                let mut bytes = encode_header(k.clone(), s.unwrap_or_default());
                if s.is_none() {
                    bytes.truncate(bytes.len() - 24);
                }
                Ok(bytes)
            },
            |b| decode_header(b).map_err(|e| e.to_string()),
        )
        .map_err(|e| format!("{e}\ninput: {}", hex_excerpt(&bytes))),
        Err(_) => Ok(()),
    }
}
