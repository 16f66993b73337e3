//! The shape of the code base, checked the way anyone can reproduce it with `cargo metadata` and
//! `grep` (ARCHITECTURE.md, "Invariants of the code"):
//!
//! - no crate under `libraries/` depends on a crate under `binaries/`;
//! - no source file over [`MAX_FILE_LINES`] lines and no function over [`MAX_FN_LINES`] lines
//!   outside tests;
//! - the coordinator and the daemon spawn tasks only through their task trackers (no bare
//!   `tokio::spawn` outside tests).
//!
//! Each failure names the file (and line) to fix.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Longest source file outside tests, in lines.
const MAX_FILE_LINES: usize = 600;
/// Longest function outside tests, in lines of code (blank and comment-only lines not counted).
const MAX_FN_LINES: usize = 80;
/// Source trees held to the limits (tests, benches and the test-only crates are exempt).
const SOURCE_ROOTS: &[&str] = &["binaries", "libraries", "examples", "apis", "tools"];
/// Crates whose tasks must be owned by a tracker.
const TRACKED_CRATES: &[&str] = &["binaries/coordinator/src", "binaries/daemon/src"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives one level below the workspace root")
        .to_path_buf()
}

/// Every `.rs` file under `dir` that is not test code: not in a `tests/` or `benches/` folder,
/// not a `tests.rs` or `testkit.rs` module, not under `libraries/test-support`.
fn production_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(
                name.as_str(),
                "tests" | "benches" | "target" | "test-support"
            ) {
                production_sources(&path, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" && name != "testkit.rs" {
            out.push(path);
        }
    }
}

fn all_production_sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in SOURCE_ROOTS {
        production_sources(&root().join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} source files", files.len());
    files
}

/// The lines of a file before its `#[cfg(test)]` section (test modules sit at the bottom).
fn non_test_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .map(str::to_owned)
        .collect()
}

fn is_code(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with("//")
}

/// Functions longer than `max` code lines: `(first line number, name, length)`. A function runs
/// from its `fn` line to the first later line that is its closing brace at the same indentation.
fn long_functions(lines: &[String], max: usize) -> Vec<(usize, String, usize)> {
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let Some(name) = fn_name(trimmed) else {
            continue;
        };
        let close = format!("{}}}", " ".repeat(indent));
        let Some(end) = lines[i + 1..].iter().position(|l| l.trim_end() == close) else {
            continue; // a declaration without a body (trait method, extern)
        };
        let len = lines[i..=i + 1 + end].iter().filter(|l| is_code(l)).count();
        if len > max {
            found.push((i + 1, name, len));
        }
    }
    found
}

/// The name of the function a line declares, if it does.
fn fn_name(trimmed: &str) -> Option<String> {
    let mut rest = trimmed;
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("fn ")?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    Some(rest[..end].to_owned())
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap().display().to_string()
}

#[test]
fn no_library_depends_on_a_binary_crate() {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let binaries = root().join("binaries");
    let libraries = root().join("libraries");
    let mut offences = Vec::new();
    for package in meta["packages"].as_array().unwrap() {
        let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap());
        if !manifest.starts_with(&libraries) {
            continue;
        }
        for dep in package["dependencies"].as_array().unwrap() {
            if let Some(path) = dep["path"].as_str() {
                if Path::new(path).starts_with(&binaries) {
                    offences.push(format!(
                        "{} depends on {} ({} dependency)",
                        package["name"].as_str().unwrap(),
                        dep["name"].as_str().unwrap(),
                        dep["kind"].as_str().unwrap_or("normal"),
                    ));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "libraries must not depend on binaries:\n{}",
        offences.join("\n")
    );
}

#[test]
fn no_source_file_over_the_line_limit() {
    let offences: Vec<String> = all_production_sources()
        .iter()
        .filter_map(|p| {
            let n = non_test_lines(p).len();
            (n > MAX_FILE_LINES).then(|| format!("{}: {n} lines", relative(p)))
        })
        .collect();
    assert!(
        offences.is_empty(),
        "files over {MAX_FILE_LINES} lines (split them by responsibility):\n{}",
        offences.join("\n")
    );
}

#[test]
fn no_function_over_the_line_limit() {
    let mut offences = Vec::new();
    for path in all_production_sources() {
        for (line, name, len) in long_functions(&non_test_lines(&path), MAX_FN_LINES) {
            offences.push(format!(
                "{}:{line}: fn {name} has {len} lines",
                relative(&path)
            ));
        }
    }
    assert!(
        offences.is_empty(),
        "functions over {MAX_FN_LINES} lines of code (split them):\n{}",
        offences.join("\n")
    );
}

#[test]
fn actors_spawn_only_through_their_trackers() {
    let mut offences = Vec::new();
    for dir in TRACKED_CRATES {
        let mut files = Vec::new();
        production_sources(&root().join(dir), &mut files);
        for path in files {
            for (i, line) in non_test_lines(&path).iter().enumerate() {
                if is_code(line) && (line.contains("tokio::spawn") || line.contains("task::spawn("))
                {
                    offences.push(format!("{}:{}: {}", relative(&path), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "spawn through the actor's TaskTracker instead:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_function_scanner_measures_what_it_should() {
    let src: Vec<String> = "fn short() {\n    a();\n}\n\n    pub async fn long() -> u8 {\n        // a comment\n\n        b();\n        c();\n    }\n"
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(long_functions(&src, 3), vec![(5, "long".to_owned(), 4)]);
    assert!(long_functions(&src, 4).is_empty());
}
