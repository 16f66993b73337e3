//! Structure-aware mutations: a valid document (as a JSON tree, also used for YAML) or a valid
//! binary frame, changed the way hostile or broken peers change them — flipped fields, numbers at
//! and beyond every range, deep nesting, huge strings, unknown and missing fields, truncation.

use proptest::{prelude::RngExt, test_runner::TestRng};
use serde_json::{Map, Number, Value};

/// Numbers at the edges of every integer and float range, and the durations and sizes that
/// broke parsers before (`hz/1e-300`, `secs/u64::MAX`).
pub const HOSTILE_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "255",
    "256",
    "-129",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "9007199254740993",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1e300",
    "-1e300",
    "1e-300",
    "0.5",
    "-0.0",
    "1e400",
    "3.4e38",
];

/// Strings that mean something to a path, a shell, a URL, YAML or a timer source.
pub const HOSTILE_STRINGS: &[&str] = &[
    "",
    ".",
    "..",
    "../../etc/passwd",
    "/",
    "a/b",
    "a\\b",
    "x\0y",
    "$(id)",
    "'",
    "\"",
    "\n",
    "~",
    "~/x",
    "%2e%2e",
    "?x#y",
    "é",
    "\u{202e}",
    "adora/timer/hz/1e-300",
    "adora/timer/secs/18446744073709551615",
    "adora/timer/millis/0",
    "adora/timer/hz/0",
    "adora/timer/",
    "node/out/extra",
    "/out",
    "node/",
    "*",
    "&a",
    "!!binary AAAA",
    "-",
    ": ",
    "null",
    "true",
    "1e999",
    "0x10",
    "0o7",
    ".nan",
    "-.inf",
    "1 KiB",
    "18446744073709551616B",
];

/// A number from [`HOSTILE_NUMBERS`], or a random one.
pub fn hostile_number(rng: &mut TestRng) -> Value {
    if rng.random_bool(0.8) {
        let text = HOSTILE_NUMBERS[rng.random_range(0..HOSTILE_NUMBERS.len())];
        // `1e400` and friends are not JSON numbers: they stay strings (YAML reads them back).
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
    } else if rng.random_bool(0.5) {
        Value::Number(Number::from(rng.random::<i64>()))
    } else {
        Number::from_f64(f64::from_bits(rng.random::<u64>())).map_or(Value::Null, Value::Number)
    }
}

/// A string from [`HOSTILE_STRINGS`], a huge one, or random characters.
pub fn hostile_string(rng: &mut TestRng) -> String {
    match rng.random_range(0..10) {
        0..=5 => HOSTILE_STRINGS[rng.random_range(0..HOSTILE_STRINGS.len())].to_owned(),
        6 => "x".repeat(rng.random_range(1000..200_000)),
        _ => (0..rng.random_range(0..40))
            .map(|_| char::from_u32(rng.random_range(0..0x3000)).unwrap_or('?'))
            .collect(),
    }
}

/// `depth` levels of one-element arrays or maps around `inner`.
pub fn nest(rng: &mut TestRng, depth: usize, inner: Value) -> Value {
    let maps = rng.random_bool(0.5);
    (0..depth).fold(inner, |v, _| {
        if maps {
            let mut m = Map::new();
            m.insert("a".into(), v);
            Value::Object(m)
        } else {
            Value::Array(vec![v])
        }
    })
}

/// Every object key in `value` (the vocabulary field flips draw from).
pub fn keys(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                keys(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

/// Applies 1 to 4 mutations at random places of `doc`; `vocabulary` are field names to flip to.
pub fn mutate_tree(rng: &mut TestRng, doc: &mut Value, vocabulary: &[String]) {
    for _ in 0..rng.random_range(1..=4) {
        let count = count_nodes(doc);
        let target = rng.random_range(0..count);
        let mut seen = 0;
        mutate_at(rng, doc, target, &mut seen, vocabulary);
    }
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Object(m) => m.values().map(count_nodes).sum(),
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        _ => 0,
    }
}

fn mutate_at(rng: &mut TestRng, v: &mut Value, target: usize, seen: &mut usize, vocab: &[String]) {
    if *seen == target {
        mutate_node(rng, v, vocab);
        *seen = usize::MAX;
        return;
    }
    *seen += 1;
    match v {
        Value::Object(m) => {
            for child in m.values_mut() {
                if *seen > target {
                    return;
                }
                mutate_at(rng, child, target, seen, vocab);
            }
        }
        Value::Array(a) => {
            for child in a.iter_mut() {
                if *seen > target {
                    return;
                }
                mutate_at(rng, child, target, seen, vocab);
            }
        }
        _ => {}
    }
}

fn word(rng: &mut TestRng, vocab: &[String]) -> String {
    if !vocab.is_empty() && rng.random_bool(0.7) {
        vocab[rng.random_range(0..vocab.len())].clone()
    } else {
        hostile_string(rng)
    }
}

/// One mutation of one node: replace its value, or change its fields or elements.
fn mutate_node(rng: &mut TestRng, v: &mut Value, vocab: &[String]) {
    let replacement = match rng.random_range(0..12) {
        0 | 1 => hostile_number(rng),
        2 | 3 => Value::String(hostile_string(rng)),
        4 => [Value::Null, Value::Bool(true), Value::Bool(false)][rng.random_range(0..3)].clone(),
        5 => {
            let depth = rng.random_range(10..400);
            nest(rng, depth, v.clone())
        }
        _ => return mutate_container(rng, v, vocab),
    };
    *v = replacement;
}

fn mutate_container(rng: &mut TestRng, v: &mut Value, vocab: &[String]) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let key = keys[rng.random_range(0..keys.len())].clone();
            match rng.random_range(0..4) {
                // A flipped field: the value under another (known or hostile) name.
                0 => {
                    if let Some(value) = m.remove(&key) {
                        m.insert(word(rng, vocab), value);
                    }
                }
                1 => {
                    m.remove(&key);
                }
                2 => {
                    let value = hostile_number(rng);
                    m.insert(word(rng, vocab), value);
                }
                _ => {
                    let value = Value::String(hostile_string(rng));
                    m.insert(word(rng, vocab), value);
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = rng.random_range(0..a.len());
            match rng.random_range(0..3) {
                0 => {
                    a.remove(i);
                }
                1 => {
                    let copies = rng.random_range(1..200);
                    let item = a[i].clone();
                    a.extend(std::iter::repeat_n(item, copies));
                }
                _ => {
                    let j = rng.random_range(0..a.len());
                    a.swap(i, j);
                }
            }
        }
        Value::String(s) => {
            if s.contains('/') && rng.random_bool(0.5) {
                // Keep the shape of a `node/output` or timer source, change one part.
                let mut parts: Vec<String> = s.split('/').map(str::to_owned).collect();
                let i = rng.random_range(0..parts.len());
                parts[i] = HOSTILE_NUMBERS[rng.random_range(0..HOSTILE_NUMBERS.len())].into();
                *s = parts.join("/");
            } else {
                *s = hostile_string(rng);
            }
        }
        other => *other = hostile_number(rng),
    }
}

/// Changes 1 to 8 places of a binary frame: flipped bits, a little-endian `u64`/`u32` field set
/// to a hostile length, bytes cut or added.
pub fn mutate_bytes(rng: &mut TestRng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..=8) {
        if bytes.is_empty() {
            bytes.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..bytes.len());
        match rng.random_range(0..7) {
            0 => bytes[at] ^= 1 << rng.random_range(0..8),
            1 => bytes[at] = rng.random(),
            2 | 3 => {
                const LENGTHS: &[u64] = &[
                    u64::MAX,
                    1 << 63,
                    1 << 32,
                    u32::MAX as u64,
                    1 << 31,
                    1 << 24,
                    1 << 20,
                    65_536,
                    4096,
                    256,
                    255,
                    8,
                    1,
                    0,
                ];
                let value = LENGTHS[rng.random_range(0..LENGTHS.len())].to_le_bytes();
                let width = if rng.random_bool(0.7) { 8 } else { 4 };
                for (i, b) in value.iter().take(width).enumerate() {
                    if let Some(slot) = bytes.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            4 => bytes.truncate(at),
            5 => {
                let extra: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
                bytes.splice(at..at, extra);
            }
            _ => {
                let end = rng.random_range(at..bytes.len()).min(at + 16);
                bytes.drain(at..end);
            }
        }
    }
}

/// Random bytes, up to `max` long (short ones more often).
pub fn raw_bytes(rng: &mut TestRng, max: usize) -> Vec<u8> {
    let len = if rng.random_bool(0.8) {
        rng.random_range(0..64.min(max + 1))
    } else {
        rng.random_range(0..=max)
    };
    (0..len).map(|_| rng.random()).collect()
}
