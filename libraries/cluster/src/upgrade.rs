//! The remote steps of `adora cluster upgrade` on one machine, as shell scripts with every value
//! quoted. The CLI drives them in order, one machine at a time:
//!
//! 1. [`locate_script`]: the directory of the `adora` to replace;
//! 2. [`upload_script`]: the new binary streamed over the SSH session's stdin into a temporary
//!    file *in that directory* (so the final rename stays on one filesystem), then `sha256sum`
//!    of what arrived, compared with [`sha256_file`] of the local binary;
//! 3. `<temp> --version`: the binary runs on that host, and which version to wait for;
//! 4. [`swap_script`]: the old binary kept as `adora.previous` (a hard link), the new one renamed
//!    over `adora` — atomic, and safe while the old daemon still runs from it (the running
//!    process keeps the old inode; writing into a running executable would fail with `ETXTBSY`).

use std::path::Path;

use adora_message::distribute::sha256_hex_of_reader;

use crate::quote::{path, quote};

/// Name the previous binary is kept under, next to `adora`, for a manual rollback.
pub const PREVIOUS: &str = "adora.previous";

/// Prints the absolute directory holding the `adora` to replace: `install_dir` (created when
/// missing), else the directory of the `adora` on `PATH` (symlinks resolved), else `~/.local/bin`.
pub fn locate_script(install_dir: Option<&str>) -> String {
    match install_dir {
        Some(dir) => format!("set -e\nd={}\nmkdir -p \"$d\"\ncd \"$d\"\npwd -P\n", path(dir)),
        None => "set -e\n\
                 if p=$(command -v adora 2>/dev/null); then d=$(dirname \"$(readlink -f \"$p\")\"); \
                 else d=\"$HOME/.local/bin\"; fi\n\
                 mkdir -p \"$d\"\ncd \"$d\"\npwd -P\n"
            .to_owned(),
    }
}

/// Reads the new binary from stdin into a fresh temporary file in `dir`, makes it executable and
/// prints `sha256sum`'s line for it (`<hex>  <path>`).
pub fn upload_script(dir: &str) -> String {
    format!(
        "set -e\numask 022\ntmp=$(mktemp {template})\n\
         cat > \"$tmp\" || {{ rm -f \"$tmp\"; exit 1; }}\nchmod 755 \"$tmp\"\nsha256sum \"$tmp\"\n",
        template = quote(&format!("{dir}/.adora-upgrade.XXXXXX")),
    )
}

/// Parses `sha256sum`'s `<hex>  <path>` line into (hex, path).
pub fn parse_sha256sum(output: &str) -> Option<(String, String)> {
    let line = output.lines().next()?;
    let (hex, rest) = line.split_once(' ')?;
    let file = rest.trim_start_matches([' ', '*']);
    (hex.len() == 64 && !file.is_empty()).then(|| (hex.to_ascii_lowercase(), file.to_owned()))
}

/// Keeps the current `dir/adora` as [`PREVIOUS`] and renames `temp` over `dir/adora`.
pub fn swap_script(dir: &str, temp: &str) -> String {
    format!(
        "set -e\nd={dir}\ntmp={temp}\n\
         if [ -e \"$d/adora\" ]; then ln -f \"$d/adora\" \"$d/{PREVIOUS}\" 2>/dev/null \
         || cp -p \"$d/adora\" \"$d/{PREVIOUS}\"; fi\n\
         mv -f \"$tmp\" \"$d/adora\"\n",
        dir = quote(dir),
        temp = quote(temp),
    )
}

/// Removes the temporary file of a failed upload.
pub fn cleanup_argv(temp: &str) -> Vec<String> {
    vec!["rm".into(), "-f".into(), temp.into()]
}

/// SHA-256 of a local file as lowercase hex. Blocking: call it from a blocking thread.
pub fn sha256_file(file: &Path) -> std::io::Result<String> {
    sha256_hex_of_reader(std::fs::File::open(file)?)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn sh(script: &str, stdin: &[u8]) -> std::process::Output {
        crate::test_shell::run_sh(script, stdin, &[])
    }

    #[test]
    fn upload_verify_and_swap_on_a_real_shell() {
        let dir = tempfile::tempdir().expect("tempdir");
        let install = dir.path().join("bin dir; $x");
        let install_s = install.display().to_string();
        let out = sh(&locate_script(Some(&install_s)), b"");
        assert!(out.status.success(), "{out:?}");
        let located = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(
            Path::new(&located),
            std::fs::canonicalize(&install).expect("created")
        );
        std::fs::write(install.join("adora"), "old").expect("old binary");

        let new = b"#!/bin/sh\necho adora 9.9.9\n";
        let local = dir.path().join("new");
        std::fs::write(&local, new).expect("local");
        let out = sh(&upload_script(&located), new);
        assert!(out.status.success(), "{out:?}");
        let (hex, temp) =
            parse_sha256sum(&String::from_utf8_lossy(&out.stdout)).expect("sha256sum line");
        assert_eq!(hex, sha256_file(&local).expect("hash"));
        assert!(temp.starts_with(&located), "{temp} not in {located}");
        let mode = std::fs::metadata(&temp).expect("temp").permissions().mode();
        assert_eq!(mode & 0o777, 0o755);

        let out = sh(&swap_script(&located, &temp), b"");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(std::fs::read(install.join("adora")).expect("new"), new);
        assert_eq!(
            std::fs::read_to_string(install.join(PREVIOUS)).expect("previous"),
            "old"
        );
        assert!(!Path::new(&temp).exists());
    }

    #[test]
    fn hashes_and_sha256sum_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("abc");
        std::fs::write(&f, "abc").expect("write");
        assert_eq!(
            sha256_file(&f).expect("hash"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let line = format!("{}  /opt/a b/.adora-upgrade.x1\n", "A".repeat(64));
        assert_eq!(
            parse_sha256sum(&line),
            Some(("a".repeat(64), "/opt/a b/.adora-upgrade.x1".into()))
        );
        assert_eq!(parse_sha256sum("sha256sum: not found"), None);
        assert_eq!(cleanup_argv("/t"), ["rm", "-f", "/t"]);
    }
}
