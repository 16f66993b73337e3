//! The remote scripts of `adora cluster upgrade` on one machine, every value quoted. The
//! rollout ([`crate::rollout`]) runs them in this order, over one SSH session:
//!
//! 1. [`locate_script`] (as the SSH user): the directory of the `adora` to replace, and whether
//!    the SSH user may write there — when not, every later step that writes runs as root
//!    (`sudo -n`, see [`crate::as_root`]), as `cluster install` does;
//! 2. [`upload_script`]: the new binary streamed over the SSH session's stdin into a temporary
//!    file *in that directory* (so the final rename stays on one filesystem), then `sha256sum`
//!    of what arrived, compared with [`sha256_file`] of the local binary;
//! 3. `<temp> --version`: the binary runs on that host, and which version to wait for;
//! 4. [`swap_script`]: the old binary kept as [`PREVIOUS`] (a hard link), the new one renamed
//!    over `adora` — atomic, and safe while the old daemon still runs from it (the running
//!    process keeps the old inode; writing into a running executable would fail with `ETXTBSY`);
//! 5. on a failed health gate, [`revert_script`]: [`PREVIOUS`] renamed back over `adora`.

use std::path::Path;

use adora_message::distribute::sha256_hex_of_reader;

use crate::quote::{path, quote};

/// Name the previous binary is kept under, next to `adora`, for the rollback.
pub const PREVIOUS: &str = "adora.prev";

/// What [`locate_script`] prints on its second line when the SSH user can write the directory.
pub const WRITABLE: &str = "writable";

/// Prints the absolute directory holding the `adora` to replace — `install_dir`, else the
/// directory of the `adora` on `PATH` (symlinks resolved), else `~/.local/bin` — on the first
/// line, and [`WRITABLE`] or `root` on the second: whether the SSH user can write there (a
/// missing directory it cannot create needs root too).
pub fn locate_script(install_dir: Option<&str>) -> String {
    let pick = match install_dir {
        Some(dir) => format!("d={}\n", path(dir)),
        None => {
            "if p=$(command -v adora 2>/dev/null); then d=$(dirname \"$(readlink -f \"$p\")\"); \
                 else d=\"$HOME/.local/bin\"; fi\n"
                .to_owned()
        }
    };
    format!(
        "set -e\n{pick}\
         case \"$d\" in /*) ;; *) d=\"$PWD/$d\" ;; esac\n\
         mkdir -p \"$d\" 2>/dev/null || true\n\
         if [ -d \"$d\" ]; then (cd \"$d\" && pwd -P); else printf '%s\\n' \"$d\"; fi\n\
         if [ -d \"$d\" ] && [ -w \"$d\" ]; then echo {WRITABLE}; else echo root; fi\n"
    )
}

/// Parses [`locate_script`]'s output into (directory, writable by the SSH user).
pub fn parse_located(output: &str) -> Option<(String, bool)> {
    let mut lines = output.lines();
    let dir = lines.next()?.trim();
    let writable = lines.next()?.trim() == WRITABLE;
    dir.starts_with('/').then(|| (dir.to_owned(), writable))
}

/// Reads the new binary from stdin into a fresh temporary file in `dir` (created when missing),
/// makes it executable and prints `sha256sum`'s line for it (`<hex>  <path>`).
pub fn upload_script(dir: &str) -> String {
    format!(
        "set -e\numask 022\nmkdir -p {dir}\ntmp=$(mktemp {template})\n\
         cat > \"$tmp\" || {{ rm -f \"$tmp\"; exit 1; }}\nchmod 755 \"$tmp\"\nsha256sum \"$tmp\"\n",
        dir = quote(dir),
        template = quote(&format!("{dir}/.adora-upgrade.XXXXXX")),
    )
}

/// Parses `sha256sum`'s `<hex>  <path>` line into (hex, path).
pub fn parse_sha256sum(output: &str) -> Option<(String, String)> {
    let line = output.lines().next()?;
    let (hex, rest) = line.split_once(' ')?;
    let file = rest.trim_start_matches([' ', '*']);
    let is_hex = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    (is_hex && !file.is_empty()).then(|| (hex.to_ascii_lowercase(), file.to_owned()))
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

/// Puts [`PREVIOUS`] back as `dir/adora` with an atomic rename of a hard link (the previous
/// binary stays as [`PREVIOUS`] too); fails when there is no previous binary.
pub fn revert_script(dir: &str) -> String {
    format!(
        "set -e\nd={dir}\n\
         [ -e \"$d/{PREVIOUS}\" ] || {{ echo \"no $d/{PREVIOUS} to restore\" >&2; exit 1; }}\n\
         tmp=\"$d/.adora-revert.$$\"\n\
         ln -f \"$d/{PREVIOUS}\" \"$tmp\" 2>/dev/null || cp -p \"$d/{PREVIOUS}\" \"$tmp\"\n\
         mv -f \"$tmp\" \"$d/adora\"\n",
        dir = quote(dir),
    )
}

/// Kills the detached daemon of `cluster up` whose pid is in `<state_dir>/daemon.pid` with
/// SIGKILL (when that pid is an `adora` process); `state_dir` is a shell word made with
/// [`crate::quote::path`].
///
/// Why not SIGTERM: a daemon told to exit stops its dataflows gracefully and reports its nodes
/// finished, so nothing would bring them back on the new daemon. Killed, its nodes die with it
/// (parent-death signal), the coordinator sees the daemon lost, and when the new one registers
/// without them the coordinator's auto-recovery re-spawns them there — which the health gate
/// waits for.
pub fn kill_ad_hoc_script(state_dir: &str) -> String {
    format!(
        "pidf={state_dir}/daemon.pid\n\
         pid=$(cat \"$pidf\" 2>/dev/null || true)\n\
         if [ -n \"$pid\" ] && grep -q adora \"/proc/$pid/cmdline\" 2>/dev/null; then\n\
         \x20 kill -9 \"$pid\" 2>/dev/null || true\n\
         \x20 i=0; while kill -0 \"$pid\" 2>/dev/null && ! grep -q ') Z' \"/proc/$pid/stat\" 2>/dev/null \
         && [ \"$i\" -lt 50 ]; do sleep 0.1; i=$((i+1)); done\n\
         fi\n"
    )
}

/// Restarts the systemd unit `unit` for an upgrade: its main process (the daemon) killed with
/// SIGKILL first, for the reason given at [`kill_ad_hoc_script`], then `reset-failed` (a unit
/// that failed to start too often is refused until then) and `restart`. Run it as root.
pub fn restart_unit_script(unit: &str) -> String {
    format!(
        "u={unit}\n\
         systemctl kill --kill-whom=main --signal=SIGKILL \"$u\" 2>/dev/null || true\n\
         systemctl reset-failed \"$u\" 2>/dev/null || true\n\
         exec systemctl restart \"$u\"\n",
        unit = quote(unit)
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
        let (located, writable) =
            parse_located(&String::from_utf8_lossy(&out.stdout)).expect("dir and access");
        assert!(writable);
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

        std::fs::write(install.join("adora"), "broken").expect("broken binary");
        let out = sh(&revert_script(&located), b"");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            std::fs::read_to_string(install.join("adora")).expect("back"),
            "old"
        );
        assert!(install.join(PREVIOUS).exists());
        let out = sh(&revert_script(&dir.path().display().to_string()), b"");
        assert!(!out.status.success(), "nothing to restore there");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no "),
            "{out:?}"
        );
    }

    #[test]
    fn the_ad_hoc_daemon_is_killed_not_asked_to_stop() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("adora");
        // It would exit 0 on SIGTERM: only SIGKILL shows up as a signal in its status.
        std::fs::write(
            &fake,
            "#!/bin/sh\ntrap 'exit 0' TERM\nwhile :; do sleep 0.1; done\n",
        )
        .expect("fake adora");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut child =
            crate::test_shell::spawn_fresh_executable(&mut std::process::Command::new(&fake));
        std::fs::write(dir.path().join("daemon.pid"), child.id().to_string()).expect("pid");
        let state = crate::quote::path(&dir.path().display().to_string());
        let out = sh(&kill_ad_hoc_script(&state), b"");
        assert!(out.status.success(), "{out:?}");
        let status = child.wait().expect("ended");
        assert_eq!(status.signal(), Some(9), "{status:?}");
        // Nothing to kill: still fine.
        assert!(sh(&kill_ad_hoc_script(&state), b"").status.success());
        let script = restart_unit_script("adora-daemon-a b.service");
        assert!(
            script.starts_with("u='adora-daemon-a b.service'\n"),
            "{script}"
        );
        assert!(
            script.contains("--kill-whom=main --signal=SIGKILL"),
            "{script}"
        );
    }

    #[test]
    fn located_needs_an_absolute_dir_and_says_who_writes() {
        assert_eq!(
            parse_located("/opt/adora/bin\nroot\n"),
            Some(("/opt/adora/bin".into(), false))
        );
        assert_eq!(
            parse_located("/home/u/.local/bin\nwritable\n"),
            Some(("/home/u/.local/bin".into(), true))
        );
        assert_eq!(parse_located("relative\nwritable\n"), None);
        assert_eq!(parse_located("/only-one-line\n"), None);
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
        // 64 bytes that are not 64 hex digits (found by adora-fuzz).
        let multibyte = format!("{}  /t\n", "é".repeat(32));
        assert_eq!(parse_sha256sum(&multibyte), None);
        assert_eq!(cleanup_argv("/t"), ["rm", "-f", "/t"]);
    }
}
