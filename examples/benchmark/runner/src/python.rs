//! The `python` placement: the Python benchmark nodes (`examples/benchmark/python/`) on one
//! daemon, Python sender → Python sink (`python`) and the Rust sender → Python sink
//! (`rust-to-python`), each as its own `adora run` so that they do not share the CPU.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};
use benchmark_common::{Plan, Report};

/// Row label of Python sender → Python sink.
pub const PYTHON: &str = "python";

/// Row label of the Rust sender → Python sink.
pub const RUST_TO_PYTHON: &str = "rust-to-python";

/// The interpreter the daemon starts `.py` nodes with.
const PYTHON3: &str = "python3";

/// Which sender feeds the Python sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// `examples/benchmark/python/sender.py`.
    Python,
    /// `adora-bench-sender`, next to the runner.
    Rust,
}

impl Sender {
    /// The row label of this pairing.
    pub fn label(self) -> &'static str {
        match self {
            Sender::Python => PYTHON,
            Sender::Rust => RUST_TO_PYTHON,
        }
    }
}

/// `examples/benchmark/python`, where `sender.py`, `sink.py` and their shared module live.
fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../python")
}

/// An error saying how to install the `adora` package when `python3` cannot import it (the
/// dataflow would otherwise fail only once its nodes start).
pub fn check_installed() -> anyhow::Result<()> {
    let output = Command::new(PYTHON3)
        .args(["-c", "import adora, numpy, pyarrow"])
        .output()
        .with_context(|| format!("cannot run `{PYTHON3}`"))?;
    if !output.status.success() {
        bail!(
            "`{PYTHON3}` cannot import adora, numpy and pyarrow ({}); install them with \
             `pip install ./apis/python/node numpy` from the repository root",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The dataflow of one pairing: the same queue as the Rust pairings (both senders bound the shared
/// samples in flight to [`benchmark_common::MAX_IN_FLIGHT`] themselves).
fn dataflow(sender: Sender, bin_dir: &Path) -> String {
    let dir = python_dir();
    let sender_path = match sender {
        Sender::Python => dir.join("sender.py"),
        Sender::Rust => bin_dir.join("adora-bench-sender"),
    };
    format!(
        r#"nodes:
  - id: sender
    path: {sender}
    outputs: [data, control]
  - id: sink
    path: {sink}
    inputs:
      data: {{ source: sender/data, queue_size: 1000 }}
      control: {{ source: sender/control, queue_size: 100 }}
"#,
        sender = sender_path.display(),
        sink = dir.join("sink.py").display(),
    )
}

/// Writes the dataflow of `sender` into `dir` and runs it with `adora run`.
pub fn run(adora: &Path, dir: &Path, sender: Sender, plan: &Plan) -> anyhow::Result<Vec<Report>> {
    let bin_dir = super::sibling("adora")?
        .parent()
        .context("this binary has a directory")?
        .to_owned();
    let path = dir.join(format!("{}.yml", sender.label()));
    std::fs::write(&path, dataflow(sender, &bin_dir))
        .with_context(|| format!("cannot write {}", path.display()))?;
    super::run_adora(adora, &path, plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_python_nodes_exist_and_the_sink_is_python_in_both_pairings() {
        for name in ["sender.py", "sink.py", "benchmark_common.py"] {
            assert!(python_dir().join(name).is_file(), "{name}");
        }
        let python = dataflow(Sender::Python, Path::new("/bin"));
        assert!(python.contains("/python/sender.py"), "{python}");
        let rust = dataflow(Sender::Rust, Path::new("/bin"));
        assert!(rust.contains("path: /bin/adora-bench-sender"), "{rust}");
        assert!(rust.contains("/python/sink.py"), "{rust}");
    }
}
