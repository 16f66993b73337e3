//! The fuzz targets, one per parser or decoder of outside input, and the checks they share.

use proptest::{
    prelude::RngExt,
    strategy::{Strategy, ValueTree},
    test_runner::TestRunner,
};

use crate::runner::Target;

mod artifacts;
mod control;
mod node_frames;
mod remote;
mod shell;
pub(crate) mod strategies;
mod type_info;
mod yaml;

/// Every target, in the order runs report them.
pub const TARGETS: &[Target] = &[
    yaml::DATAFLOW,
    yaml::CLUSTER,
    node_frames::NODE_TO_DAEMON,
    node_frames::DAEMON_TO_NODE,
    node_frames::LANE_ENTRIES,
    control::CLI_TO_COORDINATOR,
    control::COORDINATOR_TO_CLI,
    control::DAEMON_TO_COORDINATOR,
    control::COORDINATOR_TO_DAEMON,
    control::HANDSHAKE_AND_ENROLL,
    remote::REMOTE_HEADER,
    type_info::TYPE_INFO,
    artifacts::ARTIFACT_PATHS,
    shell::REMOTE_SHELL,
];

/// The target named `name`.
pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// How an input is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A valid document or message, unchanged (its round trip is checked).
    Valid,
    /// A valid one, mutated.
    Mutated,
    /// Random bytes or text.
    Raw,
}

/// The bytes of a case in `mode`: `valid` itself, `valid` mutated, or up to `raw_max` random
/// bytes.
pub(crate) fn input_bytes(
    runner: &mut TestRunner,
    mode: Mode,
    valid: &[u8],
    raw_max: usize,
) -> Vec<u8> {
    match mode {
        Mode::Valid => valid.to_vec(),
        Mode::Mutated => {
            let mut bytes = valid.to_vec();
            crate::mutate::mutate_bytes(runner.rng(), &mut bytes);
            bytes
        }
        Mode::Raw => crate::mutate::raw_bytes(runner.rng(), raw_max),
    }
}

/// Picks a mode: mostly mutated, some valid, some raw.
pub(crate) fn mode(runner: &mut TestRunner) -> Mode {
    match runner.rng().random_range(0..20) {
        0..=3 => Mode::Valid,
        4..=16 => Mode::Mutated,
        _ => Mode::Raw,
    }
}

/// One value of `strategy` (strategies of this crate never reject).
pub(crate) fn draw<S: Strategy>(runner: &mut TestRunner, strategy: &S) -> S::Value {
    strategy
        .new_tree(runner)
        .expect("the strategies of adora-fuzz have no filters that could reject")
        .current()
}

/// Memory a decoder may use for an input of `len` bytes: `per_byte` times its size plus `fixed`.
pub(crate) fn check_memory(
    peak: usize,
    len: usize,
    per_byte: usize,
    fixed: usize,
) -> Result<(), String> {
    let limit = len.saturating_mul(per_byte).saturating_add(fixed);
    if peak > limit {
        return Err(format!(
            "decoding {len} bytes allocated {peak} bytes at once (bound {limit}): a length was \
             believed instead of checked"
        ));
    }
    Ok(())
}

/// Shortens `text` for a finding's message.
pub(crate) fn excerpt(text: &str) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        return format!("{text:?}");
    }
    let end = (0..=MAX)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{:?}… ({} bytes)", &text[..end], text.len())
}

/// Shortens `bytes` for a finding's message (hex).
pub(crate) fn hex_excerpt(bytes: &[u8]) -> String {
    let shown: String = bytes.iter().take(96).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > 96 {
        format!("{shown}… ({} bytes)", bytes.len())
    } else {
        shown
    }
}
