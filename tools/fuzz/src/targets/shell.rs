//! What `adora cluster` puts into remote shells and systemd units, and what it reads back from
//! remote commands (`adora-cluster`): any string from `cluster.yml` (labels, paths, ids) must come
//! out of quoting as the same single word, and output parsers must not trust their input.

use adora_cluster::{quote, systemd, upgrade};
use proptest::{prelude::*, test_runner::TestRunner};

use super::{draw, excerpt};
use crate::{mutate, runner::Target};

/// Remote shell quoting, unit-file quoting and remote output parsers.
pub const REMOTE_SHELL: Target = Target {
    name: "remote-shell",
    about: "cluster.yml strings -> quote::quote/line/path, systemd::exec_quote; remote output -> upgrade::parse_*",
    case: shell_case,
};

fn word(runner: &mut TestRunner) -> String {
    if runner.rng().random_bool(0.3) {
        mutate::hostile_string(runner.rng())
    } else {
        draw(
            runner,
            &prop_oneof!["[ -~]{0,20}", ".{0,20}", "[a-z'\"$`\\\\%\n ]{0,12}"],
        )
    }
}

/// systemd's reading of one `ExecStart=` word: a quoted word with `\\` and `\"` escapes, or a
/// bare one; then `%%` and `$$` are one `%` and one `$`. `None` when it is not one word.
fn systemd_unquote(word: &str) -> Option<String> {
    let raw = if let Some(inner) = word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next()? {
                    'x' => out.push(char::from_u32(hex(&mut chars, 2)?)?),
                    'u' => out.push(char::from_u32(hex(&mut chars, 4)?)?),
                    other => out.push(other),
                },
                '"' => return None,
                c => out.push(c),
            }
        }
        out
    } else if word.contains([' ', '"', '\'', '\\']) || word.is_empty() {
        return None;
    } else {
        word.to_owned()
    };
    Some(
        raw.replace("%%", "\u{0}pct")
            .replace("$$", "$")
            .replace("\u{0}pct", "%"),
    )
}

fn hex(chars: &mut std::str::Chars<'_>, digits: usize) -> Option<u32> {
    let text: String = chars.take(digits).collect();
    (text.len() == digits)
        .then(|| u32::from_str_radix(&text, 16).ok())
        .flatten()
}

/// A unit rendered from hostile values has exactly the lines it always has.
fn check_unit(words: &[String]) -> Result<(), String> {
    let plain = systemd::DaemonUnit {
        machine_id: "robot",
        adora_path: "/usr/local/bin/adora",
        args: &[],
        user: Some("ubuntu"),
        state_dir: Some("/srv"),
    };
    let expected = plain.render().map_err(|e| e.to_string())?.lines().count();
    let unit = systemd::DaemonUnit {
        args: words,
        user: words.get(1).map(String::as_str),
        state_dir: words.last().map(String::as_str),
        ..plain
    };
    let Ok(text) = unit.render() else {
        return Ok(());
    };
    let lines = text.lines().count();
    if lines != expected || text.contains('\r') {
        return Err(format!(
            "a unit rendered from {words:?} has {lines} lines, not {expected}:\n{text}"
        ));
    }
    Ok(())
}

fn shell_case(runner: &mut TestRunner) -> Result<(), String> {
    let words: Vec<String> = (0..runner.rng().random_range(1..4))
        .map(|_| word(runner))
        .collect();
    let first = &words[0];
    // A shell word cannot hold NUL; everything else must survive quoting.
    if !first.contains('\0') {
        let split = shell_words::split(&quote::quote(first))
            .map_err(|e| format!("quote({}) is not one shell word: {e}", excerpt(first)))?;
        if split != [first.clone()] {
            return Err(format!("quote({}) reads back as {split:?}", excerpt(first)));
        }
        if !words.iter().any(|w| w.contains('\0')) {
            let line = quote::line(&words);
            let split = shell_words::split(&line)
                .map_err(|e| format!("line({words:?}) does not split: {e}"))?;
            if split != words {
                return Err(format!("line({words:?}) reads back as {split:?}"));
            }
        }
    }
    let quoted = systemd::exec_quote(first);
    if quoted.contains(['\n', '\r']) {
        return Err(format!(
            "exec_quote({}) spans lines of the unit file: {}",
            excerpt(first),
            excerpt(&quoted)
        ));
    }
    if systemd_unquote(&quoted).as_deref() != Some(first.as_str()) {
        return Err(format!(
            "exec_quote({}) = {} is read by systemd as something else",
            excerpt(first),
            excerpt(&quoted)
        ));
    }
    if words.len() > 1 {
        check_unit(&words)?;
    }
    let output = words.join("\n");
    if let Some((dir, _)) = upgrade::parse_located(&output) {
        if !dir.starts_with('/') {
            return Err(format!(
                "parse_located accepted a relative directory {}",
                excerpt(&dir)
            ));
        }
    }
    if let Some((hex, _)) = upgrade::parse_sha256sum(&output) {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("parse_sha256sum accepted {}", excerpt(&hex)));
        }
    }
    Ok(())
}
