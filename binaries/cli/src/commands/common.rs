//! Helpers shared by many subcommands: the state directory, reading a dataflow file, atomic
//! writes and stop signals. A leaf: it imports no other subcommand.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use adora_core::Descriptor;
use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Exit code for invalid input (bad dataflow file, bad flag values).
pub const EXIT_INVALID: u8 = 2;

/// Reads and validates a dataflow file, or prints every problem and returns `Err(exit code)`.
pub fn load_descriptor(path: &Path) -> Result<Descriptor, ExitCode> {
    Descriptor::read(path).map_err(|errors| report_invalid(path, &errors))
}

/// Prints every problem of an invalid dataflow file and returns the exit code for it.
pub fn report_invalid(path: &Path, errors: &adora_core::ValidationErrors) -> ExitCode {
    let n = errors.0.len();
    for e in &errors.0 {
        eprintln!("{e}");
    }
    eprintln!(
        "{} problem{} found in {}",
        n,
        if n == 1 { "" } else { "s" },
        path.display()
    );
    ExitCode::from(EXIT_INVALID)
}

/// The directory a dataflow's relative paths are resolved against.
pub fn dataflow_dir(path: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::fs::canonicalize(path)
        .with_context(|| format!("cannot resolve {}", path.display()))?;
    Ok(abs
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("/")))
}

/// Parses `k=v,k2=v2` (spaces around items are ignored; an empty text is no labels).
pub fn parse_labels(s: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut labels = std::collections::BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("label `{pair}` is not key=value"))?;
        if k.trim().is_empty() {
            return Err(format!("label `{pair}` has an empty key"));
        }
        labels.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(labels)
}

/// Adora's state directory: `$ADORA_STATE_DIR`, else `$XDG_STATE_HOME/adora`, else
/// `~/.local/state/adora`.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ADORA_STATE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(dir).join("adora");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".local/state/adora")
}

/// Writes a file atomically (temp file + rename) so readers never see half of it.
pub fn write_atomic(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The signals that ask a foreground process to stop: SIGINT (Ctrl-C) and SIGTERM.
pub struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    /// Installs the handlers (needs the tokio runtime). From then on these signals no longer
    /// kill the process: they are only seen through [`StopSignals::recv`].
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// A token that cancels on SIGINT or SIGTERM. The handlers are installed before it returns, so
/// a signal sent right after whatever the caller announces next (an address file, a "listening"
/// line) stops the process cleanly instead of killing it with its files left behind.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    match StopSignals::install() {
        Ok(mut signals) => {
            let t = token.clone();
            tokio::spawn(async move {
                signals.recv().await;
                tracing::info!("shutting down");
                t.cancel();
            });
        }
        Err(e) => tracing::warn!("cannot install signal handlers: {e}"),
    }
    token
}

/// `--exit-when-nodes-finish[=BOOL]`, shared by `run` and `start`.
#[derive(Debug, clap::Args)]
pub struct ExitWhenNodesFinish {
    /// Finish once every node has finished, treating timer inputs as a clock: a node's timer
    /// inputs close when its other inputs have closed. Overrides `exit_when_nodes_finish` in the
    /// file (`--exit-when-nodes-finish=false` turns it off).
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub exit_when_nodes_finish: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_and_say_what_is_wrong() {
        let labels = parse_labels(" gpu=true, site = lab ,").expect("valid");
        assert_eq!(labels.len(), 2);
        assert_eq!(labels["site"], "lab");
        assert!(parse_labels("").expect("none").is_empty());
        assert!(parse_labels("gpu").expect_err("no =").contains("key=value"));
        assert!(parse_labels("=x")
            .expect_err("no key")
            .contains("empty key"));
    }
}
