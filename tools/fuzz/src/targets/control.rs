//! The control plane (JSON envelopes over WebSocket, in each direction, plus the handshake and
//! enrollment): every message the message crate's round-trip tests encode
//! (`seeds/control.tsv`), mutated as JSON trees, and random text.

use std::sync::OnceLock;

use adora_message::{
    cli_to_coordinator::ControlRequest,
    coordinator_to_cli::ControlReply,
    coordinator_to_daemon::DaemonCommand,
    daemon_to_coordinator::DaemonMessage,
    enroll::{EnrollRequest, EnrollResponse},
    envelope::{from_json, to_json, Envelope, HandshakeReply, Hello},
};
use proptest::{prelude::RngExt, test_runner::TestRunner};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use super::{check_memory, excerpt, mode, Mode};
use crate::{alloc::peak_during, mutate, runner::Target};

/// The seed corpus: `type<TAB>json` lines, regenerated with
/// `ADORA_FUZZ_SEEDS=$PWD/tools/fuzz/seeds/control.tsv cargo test -p adora-message --lib`
/// (after emptying the file).
const SEEDS: &str = include_str!("../../seeds/control.tsv");

/// Requests of the CLI.
pub const CLI_TO_COORDINATOR: Target = Target {
    name: "cli-to-coordinator",
    about: "JSON text -> Envelope<ControlRequest>",
    case: |runner| {
        json_case::<Envelope<ControlRequest>>(runner, "cli_to_coordinator::ControlRequest")
    },
};

/// Replies to the CLI.
pub const COORDINATOR_TO_CLI: Target = Target {
    name: "coordinator-to-cli",
    about: "JSON text -> Envelope<ControlReply>",
    case: |runner| json_case::<Envelope<ControlReply>>(runner, "coordinator_to_cli::ControlReply"),
};

/// Messages of daemons.
pub const DAEMON_TO_COORDINATOR: Target = Target {
    name: "daemon-to-coordinator",
    about: "JSON text -> Envelope<DaemonMessage>",
    case: |runner| {
        json_case::<Envelope<DaemonMessage>>(runner, "daemon_to_coordinator::DaemonMessage")
    },
};

/// Commands to daemons.
pub const COORDINATOR_TO_DAEMON: Target = Target {
    name: "coordinator-to-daemon",
    about: "JSON text -> Envelope<DaemonCommand>",
    case: |runner| {
        json_case::<Envelope<DaemonCommand>>(runner, "coordinator_to_daemon::DaemonCommand")
    },
};

/// The handshake of every connection and the enrollment exchange.
pub const HANDSHAKE_AND_ENROLL: Target = Target {
    name: "handshake-enroll",
    about: "JSON text -> Envelope<Hello|HandshakeReply>, EnrollRequest, EnrollResponse",
    case: |runner| match runner.rng().random_range(0..4) {
        0 => json_case::<Envelope<Hello>>(runner, "envelope::Hello"),
        1 => json_case::<Envelope<HandshakeReply>>(runner, "envelope::HandshakeReply"),
        // Enrollment bodies are plain JSON, not enveloped; their seeds are.
        2 => json_case::<EnrollRequest>(runner, "enroll::EnrollRequest"),
        _ => json_case::<EnrollResponse>(runner, "enroll::EnrollResponse"),
    },
};

struct Corpus {
    /// (type name, parsed seed).
    seeds: Vec<(String, Value)>,
    vocabulary: Vec<String>,
}

fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let seeds: Vec<(String, Value)> = SEEDS
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(ty, json)| {
                let value = serde_json::from_str(json).expect("control.tsv holds JSON");
                (ty.to_owned(), value)
            })
            .collect();
        let mut vocabulary = Vec::new();
        seeds
            .iter()
            .for_each(|(_, v)| mutate::keys(v, &mut vocabulary));
        vocabulary.sort();
        vocabulary.dedup();
        Corpus { seeds, vocabulary }
    })
}

/// The seeds of one type; enrollment seeds are unwrapped from their envelope.
fn seeds_of(type_suffix: &str) -> Vec<Value> {
    corpus()
        .seeds
        .iter()
        .filter(|(ty, _)| ty.ends_with(type_suffix))
        .map(|(_, v)| {
            if type_suffix.starts_with("enroll::") {
                v.get("body").cloned().unwrap_or(Value::Null)
            } else {
                v.clone()
            }
        })
        .collect()
}

/// Seeds by type suffix, computed once per type.
type SeedCache = std::sync::Mutex<Vec<(&'static str, &'static [Value])>>;

fn seeds_cached(type_suffix: &'static str) -> &'static [Value] {
    static CACHE: OnceLock<SeedCache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, seeds)) = cache.iter().find(|(t, _)| *t == type_suffix) {
        return seeds;
    }
    let seeds: &'static [Value] = Vec::leak(seeds_of(type_suffix));
    cache.push((type_suffix, seeds));
    seeds
}

/// Memory serde_json may use per byte of text (values are bigger than their text).
const JSON_BYTES_PER_BYTE: usize = 64;
const JSON_FIXED_BYTES: usize = 4 << 20;

fn json_case<T>(runner: &mut TestRunner, type_suffix: &'static str) -> Result<(), String>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let seeds = seeds_cached(type_suffix);
    if seeds.is_empty() {
        return Err(format!(
            "no seed of {type_suffix} in seeds/control.tsv: regenerate it"
        ));
    }
    let seed = &seeds[runner.rng().random_range(0..seeds.len())];
    let input_mode = mode(runner);
    let text = match input_mode {
        Mode::Valid => seed.to_string(),
        Mode::Mutated => {
            let mut tree = seed.clone();
            mutate::mutate_tree(runner.rng(), &mut tree, &corpus().vocabulary);
            tree.to_string()
        }
        Mode::Raw => String::from_utf8_lossy(&mutate::raw_bytes(runner.rng(), 2048)).into_owned(),
    };
    let (decoded, peak) = peak_during(|| from_json::<T>(&text));
    check_memory(peak, text.len(), JSON_BYTES_PER_BYTE, JSON_FIXED_BYTES)?;
    if input_mode == Mode::Valid {
        decoded.as_ref().map_err(|e| {
            format!("a seed of {type_suffix} was refused ({e}): regenerate seeds/control.tsv")
        })?;
    }
    let Ok(value) = decoded else { return Ok(()) };
    let again = to_json(&value).map_err(|e| format!("an accepted message does not encode: {e}"))?;
    let back: T = from_json(&again).map_err(|e| {
        format!(
            "an accepted message's JSON does not decode ({e}): {}\ninput: {}",
            excerpt(&again),
            excerpt(&text)
        )
    })?;
    if back != value {
        return Err(format!(
            "an accepted message changed in a round trip: {}\ninput: {}",
            excerpt(&again),
            excerpt(&text)
        ));
    }
    Ok(())
}
