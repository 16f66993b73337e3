//! Finding the `adora` binary on a machine, and saying precisely why it is not there.
//!
//! Every remote script that needs `adora` starts with [`find_adora`]: it looks in `install_dir`
//! (when `cluster.yml` sets one), then on the `PATH` of the SSH user's non-interactive shell — not
//! the login shell's, so a `PATH` set in `~/.profile` or `~/.bashrc` may not apply. When there is
//! none, the script prints that `PATH` after [`NOT_FOUND_MARKER`] on stderr and exits with
//! [`COMMAND_NOT_FOUND`]; [`not_installed`] turns that into a [`NotInstalled`] error.

use adora_core::cluster::Machine;

pub use crate::ssh::COMMAND_NOT_FOUND;
use crate::{quote, RemoteOutput};

/// Starts the stderr line on which [`find_adora`] prints the remote `PATH` it searched.
pub const NOT_FOUND_MARKER: &str = "adora-not-found: PATH=";

/// Shell fragment that puts `install_dir` first on `PATH` (exported) and sets `$adora` to the
/// `adora` it finds; when there is none, it prints [`NOT_FOUND_MARKER`] and the `PATH` before
/// `install_dir` was added to stderr and exits [`COMMAND_NOT_FOUND`].
pub fn find_adora(install_dir: Option<&str>) -> String {
    let prologue = match install_dir {
        Some(dir) => format!("PATH={}:\"$PATH\"; export PATH\n", quote::path(dir)),
        None => String::new(),
    };
    format!(
        "adora_searched=$PATH\n{prologue}adora=$(command -v adora 2>/dev/null) || {{ \
         printf '%s%s\\n' {marker} \"$adora_searched\" >&2; exit {COMMAND_NOT_FOUND}; }}\n",
        marker = quote::quote(NOT_FOUND_MARKER),
    )
}

/// `adora` is not installed on a machine (not in its `install_dir`, not on its `PATH`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`adora` is not installed on {machine}: not found {}the PATH of the SSH user's non-interactive shell ({path})",
    match looked_in { Some(dir) => format!("in install_dir {dir} nor on "), None => "on ".to_owned() }
)]
pub struct NotInstalled {
    /// Machine id.
    pub machine: String,
    /// The `install_dir` of `cluster.yml`, when it sets one.
    pub looked_in: Option<String>,
    /// The remote `PATH` that was searched (without `install_dir`).
    pub path: String,
}

impl NotInstalled {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match &self.looked_in {
            Some(dir) => format!(
                "copy the binary to {dir} with `adora cluster upgrade --binary PATH`, or fix \
                 install_dir in cluster.yml"
            ),
            None => "set install_dir in cluster.yml to the directory of `adora` on that machine; \
                     or set install_dir and copy the binary there with \
                     `adora cluster upgrade --binary PATH`"
                .to_owned(),
        }
    }
}

/// The [`NotInstalled`] error of `machine` when `out` is the output of a script that started
/// with [`find_adora`] and found no `adora`; `None` otherwise.
pub fn not_installed(machine: &Machine, out: &RemoteOutput) -> Option<NotInstalled> {
    if out.code != Some(COMMAND_NOT_FOUND) {
        return None;
    }
    let path = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix(NOT_FOUND_MARKER))?;
    Some(NotInstalled {
        machine: machine.id.clone(),
        looked_in: machine.install_dir.clone(),
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use adora_core::cluster::ClusterConfig;

    use super::*;

    fn machine(extra: &str) -> Machine {
        let c = ClusterConfig::parse(
            &format!("coordinator: {{ addr: 10.0.0.1 }}\nmachines:\n  - {{ id: robot, host: r{extra} }}\n"),
            Path::new("cluster.yml"),
        )
        .expect("valid test cluster");
        c.machines[0].clone()
    }

    fn run(script: &str, path: &str) -> RemoteOutput {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .env("PATH", path)
            .output()
            .expect("sh runs");
        RemoteOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[test]
    fn a_missing_adora_names_install_dir_and_the_searched_path() {
        let empty = tempfile::tempdir().expect("temp dir");
        let dir = empty.path().display().to_string();
        let m = machine(&format!(", install_dir: '{dir}'"));
        let script = format!("{}echo found \"$adora\"\n", find_adora(Some(&dir)));
        let out = run(&script, "/nonexistent-a:/nonexistent-b");
        let e = not_installed(&m, &out).unwrap_or_else(|| panic!("not detected: {out:?}"));
        assert_eq!(e.path, "/nonexistent-a:/nonexistent-b");
        let text = e.to_string();
        assert!(
            text.contains(&format!("not found in install_dir {dir} nor on the PATH")),
            "{text}"
        );
        assert!(
            e.hint().contains("adora cluster upgrade --binary"),
            "{}",
            e.hint()
        );

        let m = machine("");
        let out = run(&format!("{}echo x\n", find_adora(None)), "/nowhere");
        let e = not_installed(&m, &out).expect("detected");
        assert!(
            e.to_string().contains(
                "not found on the PATH of the SSH user's non-interactive shell (/nowhere)"
            ),
            "{e}"
        );
        assert!(e.hint().contains("set install_dir"), "{}", e.hint());
    }

    #[test]
    fn a_present_adora_is_found_in_install_dir() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let fake = dir.path().join("adora");
        std::fs::write(&fake, "#!/bin/sh\n").expect("fake adora");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let d = dir.path().display().to_string();
        let out = run(
            &format!("{}echo \"$adora\"\n", find_adora(Some(&d))),
            "/nowhere",
        );
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_eq!(out.stdout.trim(), fake.display().to_string());
        assert!(not_installed(&machine(""), &out).is_none());
    }
}
