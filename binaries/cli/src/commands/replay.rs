//! `adora replay`: run a dataflow on this machine with some of its source nodes replaced by a
//! player that publishes their recorded outputs (`replay_node.rs`, the hidden `adora
//! replay-node` the rewritten nodes run), with `adora run`'s semantics.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use adora_core::{descriptor::EnvValue, DataId, Descriptor, NodeId};
use anyhow::{bail, Context};

use super::recording::{summarize, RecordingSummary};

/// The player's settings, passed to `adora replay-node` in its environment.
pub mod env {
    /// The recording (absolute path).
    pub const FILE: &str = "ADORA_REPLAY_FILE";
    /// The speed factor; `0`: as fast as the receivers take it, lossless.
    pub const SPEED: &str = "ADORA_REPLAY_SPEED";
    /// How many times to play the recording; `0`: until stopped.
    pub const ROUNDS: &str = "ADORA_REPLAY_ROUNDS";
}

/// Fastest speed factor accepted (beyond it, `0` is what you want).
pub const MAX_SPEED: f64 = 1e6;

/// Run a dataflow with source nodes replaced by a player of their recorded outputs.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora replay run.mcap dataflow.yml --replace sender\n  adora replay run.mcap --replace camera,lidar --speed 0.5\n  adora replay run.mcap dataflow.yml --replace sender --speed 0 --loop=3\n\n\
The replaced nodes publish their recorded outputs (same output ids, Arrow types, parameters and \
bytes, new timestamps) with the recorded timing divided by --speed; the rest of the dataflow runs \
as with `adora run`. --speed 0 plays as fast as the receivers take it and loses nothing: before \
each message the player waits until every receiver's queue has room. Without a dataflow file, \
the one the recording names is used (recorded by `adora run --record` / `adora start --record`)."
)]
pub struct Args {
    /// The recording (an MCAP file written by `adora record` or `--record`).
    recording: PathBuf,
    /// The dataflow to run; default: the file the recording was made from.
    dataflow: Option<PathBuf>,
    /// Nodes to replace by the player (repeatable or comma-separated).
    #[arg(long, required = true, value_delimiter = ',', value_name = "NODE")]
    replace: Vec<String>,
    /// Playback speed factor (2 = twice as fast); 0 = as fast as possible, lossless.
    #[arg(long, default_value = "1", value_parser = parse_speed)]
    speed: f64,
    /// Play the recording again and again (until stopped), or `--loop=N` times.
    #[arg(
        long = "loop",
        value_name = "TIMES",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "0",
        value_parser = clap::value_parser!(u32)
    )]
    rounds: Option<u32>,
    /// Stop the dataflow gracefully after this long (e.g. `10s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    stop_after: Option<Duration>,
    /// Time a node has to exit after its Stop event before it gets SIGTERM.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    grace: Duration,
}

fn parse_speed(text: &str) -> Result<f64, String> {
    let speed: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if !(speed.is_finite() && (0.0..=MAX_SPEED).contains(&speed)) {
        return Err(format!(
            "the speed must be 0 (as fast as possible) or a factor up to {MAX_SPEED}"
        ));
    }
    Ok(speed)
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let recording = std::fs::canonicalize(&args.recording)
        .with_context(|| format!("cannot read {}", args.recording.display()))?;
    let bytes = std::fs::read(&recording)
        .with_context(|| format!("cannot read {}", recording.display()))?;
    let summary = summarize(&bytes).with_context(|| format!("{}", recording.display()))?;
    drop(bytes);
    let dataflow = match (&args.dataflow, &summary.dataflow) {
        (Some(file), _) => file.clone(),
        (None, Some(recorded)) => {
            eprintln!("replaying into {recorded} (the dataflow the recording was made from)");
            PathBuf::from(recorded)
        }
        (None, None) => bail!(
            "{} does not name its dataflow (it was recorded by `adora record`): give the dataflow file, `adora replay {} DATAFLOW.yml --replace ...`",
            args.recording.display(),
            args.recording.display()
        ),
    };
    let mut descriptor = match super::common::load_descriptor(&dataflow) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let dir = super::common::dataflow_dir(&dataflow)?;
    let replace = check_replace(&descriptor, &summary, &args.replace, &dataflow)?;
    let player = Player {
        exe: std::env::current_exe().context("cannot find the adora binary")?,
        recording,
        speed: args.speed,
        rounds: args.rounds.unwrap_or(1),
    };
    for node in descriptor.nodes.iter_mut() {
        if replace.contains(&node.id) {
            player.replace(node);
        }
    }
    let fetch = adora_daemon::git_source::Fetch::No;
    super::local_build::check_out_git_nodes(&mut descriptor, fetch).await?;
    let plan = super::run::RunPlan {
        descriptor,
        dir,
        env: BTreeMap::new(),
        grace: args.grace,
        connect_timeout: Duration::from_secs(30),
        stop_after: args.stop_after,
        record: None,
    };
    super::run::run_plan(plan).await
}

/// Checks `--replace` against the dataflow and the recording: every named node exists, has
/// recorded outputs, and declares each of them.
fn check_replace(
    descriptor: &Descriptor,
    summary: &RecordingSummary,
    replace: &[String],
    dataflow: &Path,
) -> anyhow::Result<BTreeSet<NodeId>> {
    let recorded = recorded_outputs(summary);
    let mut nodes = BTreeSet::new();
    for name in replace {
        let Some(node) = descriptor.nodes.iter().find(|n| n.id.as_str() == name) else {
            let known: Vec<&str> = descriptor.nodes.iter().map(|n| n.id.as_str()).collect();
            bail!(
                "--replace {name}: {} has no node `{name}` (its nodes: {})",
                dataflow.display(),
                known.join(", ")
            );
        };
        let Some(outputs) = recorded.get(name.as_str()) else {
            let senders: BTreeSet<&str> = recorded.keys().copied().collect();
            bail!(
                "--replace {name}: the recording holds no output of node `{name}` (it holds outputs of: {})",
                senders.into_iter().collect::<Vec<_>>().join(", ")
            );
        };
        for output in outputs {
            if !node.outputs.iter().any(|o| o.as_str() == *output) {
                bail!(
                    "--replace {name}: the recording has `{name}/{output}`, which node `{name}` does not declare in {} (its outputs: {})",
                    dataflow.display(),
                    node.outputs.iter().map(DataId::as_str).collect::<Vec<_>>().join(", ")
                );
            }
        }
        for declared in &node.outputs {
            if !outputs.contains(declared.as_str()) {
                eprintln!(
                    "note: `{name}/{declared}` is not in the recording: the player never sends on it"
                );
            }
        }
        nodes.insert(node.id.clone());
    }
    Ok(nodes)
}

/// The recorded outputs per node (`node/output` topics).
fn recorded_outputs(summary: &RecordingSummary) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut recorded: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for topic in summary.channels.keys() {
        if let Some((node, output)) = topic.split_once('/') {
            recorded.entry(node).or_default().insert(output);
        }
    }
    recorded
}

/// How replaced nodes run the player.
struct Player {
    exe: PathBuf,
    recording: PathBuf,
    speed: f64,
    rounds: u32,
}

impl Player {
    /// Rewrites `node` into the player of its recorded outputs: same id and outputs (and
    /// declared output types), no inputs, nothing to build, never restarted (a player that
    /// finished is done; `--loop` repeats).
    fn replace(&self, node: &mut adora_core::descriptor::NodeSpec) {
        node.restart_policy = adora_core::descriptor::RestartPolicy::Never;
        node.path = self.exe.display().to_string();
        node.args = Some("replay-node".into());
        node.build = None;
        node.git = None;
        node.branch = None;
        node.tag = None;
        node.rev = None;
        node.inputs.clear();
        node.input_types.clear();
        let text = |s: String| EnvValue::String(s);
        node.env = BTreeMap::from([
            (env::FILE.into(), text(self.recording.display().to_string())),
            (env::SPEED.into(), text(self.speed.to_string())),
            (env::ROUNDS.into(), text(self.rounds.to_string())),
        ]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_are_range_checked() {
        assert_eq!(parse_speed("0"), Ok(0.0));
        assert_eq!(parse_speed("2.5"), Ok(2.5));
        assert!(parse_speed("-1").is_err());
        assert!(parse_speed("NaN").is_err());
        assert!(parse_speed("inf").is_err());
        assert!(parse_speed("fast").is_err());
    }
}
