//! The dataflow descriptor: the typed form of a `dataflow.yml`.
//!
//! Parsing and validation live in [`crate::validate`]; this module only defines the shapes and the
//! small conversions the runtime needs (resolving input sources, splitting args, env values).

use std::{collections::BTreeMap, fmt, path::PathBuf, time::Duration};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    ids::{DataId, NodeId},
    timer::TimerSpec,
    DEFAULT_QUEUE_SIZE,
};

mod units;

pub use units::{ByteSize, HumanDuration, LogLevel};

/// A whole dataflow: the list of its nodes.
///
/// Every type of the descriptor derives [`JsonSchema`] next to serde, so `adora schema` is
/// generated from the same definitions the parser uses: a new field gets its schema from its
/// type and its `///` doc (the description editors show).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Adora dataflow")]
pub struct Descriptor {
    /// The nodes of the dataflow, in file order.
    pub nodes: Vec<NodeSpec>,
    // -- deploy and typed ports (dora 1.x) --
    /// Default deployment of every node; a node's own `deploy` is merged over it field by
    /// field (the node's fields win; `labels` is replaced as a whole). Applied at load time, so
    /// each node's `deploy` is already the effective one. (Boxed: most dataflows have none, and
    /// a descriptor is embedded in many records.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Box<Deploy>>,
    /// Report type problems (`output_types`/`input_types`) as errors instead of warnings.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict_types: bool,
    /// Extra type compatibilities: a value of type `from` may be sent to an input of type `to`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub type_rules: Vec<TypeRule>,
    // Runtime behaviour (dora 1.x compatibility, issue 18).
    /// How often the daemon checks the nodes that have a `health_check_timeout` (default
    /// [`DEFAULT_HEALTH_CHECK_INTERVAL`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_interval: Option<HumanDuration>,
    /// When true, a node's timer inputs close once its other inputs have all closed, so a
    /// dataflow whose nodes consume timers still finishes when its data is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_when_nodes_finish: Option<bool>,
}

/// A user-defined type compatibility (`type_rules`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TypeRule {
    /// Type URN of the sender, e.g. `myproject/sensors/v1/Reading`.
    pub from: String,
    /// Type URN it may be delivered as, e.g. `myproject/sensors/v2/Reading`.
    pub to: String,
}

/// How a node's outputs are framed on the wire (`output_framing`).
///
/// Adora always sends Arrow data with its buffer layout; both values are accepted and behave the
/// same until Arrow IPC framing exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFraming {
    /// Arrow buffers with their layout (default).
    #[default]
    Raw,
    /// Arrow IPC stream framing (accepted; sent as `raw` for now).
    ArrowIpc,
}

/// How often the daemon checks node liveness when `health_check_interval` is not set.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// One node of a dataflow as written in the YAML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = crate::schema::add_deploy_alias)]
pub struct NodeSpec {
    /// Unique id of the node (`[A-Za-z0-9_.-]+`).
    pub id: NodeId,
    /// Optional human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Optional free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Executable to run, relative to the dataflow file's directory unless absolute.
    /// A path ending in `.py` runs with `python3`.
    pub path: String,
    /// Command-line arguments, split like a shell would (quotes respected, no expansion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    /// Extra environment variables for the node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    /// Build command, run by `adora build` (and `adora run --build`) in the dataflow's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    // -- Sources other than `path` (dora 1.x): `git` with one of `branch`/`tag`/`rev`, `module`.
    /// Git repository the node comes from: cloned into a cache, checked out, built there with
    /// `build`; `path` is then relative to the checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<String>,
    /// Branch of `git` to check out (default: the repository's default branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Tag of `git` to check out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Commit of `git` to check out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<String>,
    /// A module file (a sub-graph) used instead of `path`. Modules are inlined when the file is
    /// read ([`Descriptor::read`]), so a loaded descriptor never has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<PathBuf>,
    /// Parameters of `module`: `$PARAM_<KEY>` in its nodes' `args`, and `PARAM_<KEY>` in their
    /// environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, EnvValue>,
    /// Inputs: `input_id: source` (short form) or `input_id: { source, queue_size }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<DataId, InputSpec>,
    /// Outputs this node may send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<DataId>,
    /// When the runtime restarts the node after it exits.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Maximum restarts within `restart_window` (unlimited when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    /// Delay before the first restart; doubles on each further restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_delay: Option<HumanDuration>,
    /// Upper bound for the doubling restart delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restart_delay: Option<HumanDuration>,
    /// Window in which `max_restarts` is counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_window: Option<HumanDuration>,
    // -- typed ports and framing (dora 1.x) --
    /// Type URN of each output, e.g. `image: std/media/v1/Image`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub output_types: BTreeMap<DataId, String>,
    /// Type URN each input expects, e.g. `audio: std/media/v1/AudioFrame[sample_type=f32]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub input_types: BTreeMap<DataId, String>,
    /// Wire framing of the outputs; both values behave the same for now (see [`OutputFraming`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_framing: Option<OutputFraming>,
    /// Where and how the node is deployed (also spelled `_unstable_deploy`, never both); the
    /// root `deploy` is already merged in.
    #[serde(
        default,
        rename = "deploy",
        alias = "_unstable_deploy",
        skip_serializing_if = "Option::is_none"
    )]
    pub deploy: Option<Deploy>,
    // Runtime behaviour (dora 1.x compatibility, issue 18).
    /// The daemon kills the node (and applies its restart policy) when it has not talked to the
    /// daemon for this long; a node waiting for events counts as talking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_timeout: Option<HumanDuration>,
    /// CPU cores the node's process may run on, set before it executes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_affinity: Option<Vec<usize>>,
    /// One of `outputs`: every stdout/stderr line of the node is sent on it as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_stdout_as: Option<DataId>,
    /// One of `outputs`: every log entry of the node is sent on it as a JSON string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_logs_as: Option<DataId>,
    /// Log lines below this level are left out of the log file, the live log and `send_logs_as`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_log_level: Option<LogLevel>,
    /// The node's log file is rotated when it would grow beyond this size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_size: Option<ByteSize>,
    /// How many rotated log files are kept (default [`DEFAULT_MAX_ROTATED_FILES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rotated_files: Option<u32>,
}

/// Rotated log files kept when `max_rotated_files` is not set.
pub const DEFAULT_MAX_ROTATED_FILES: u32 = 5;

/// Restart policy of a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart (default).
    #[default]
    Never,
    /// Restart when the node exits with a non-zero status or a signal.
    OnFailure,
    /// Restart whenever the node exits, unless the dataflow is stopping.
    Always,
}

/// Deployment options of a node (`deploy`, or its older spelling `_unstable_deploy`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// Machine id of the daemon that must run the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// Labels the daemon must carry (exact string match).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How the node's binary reaches its machine.
    #[serde(default)]
    pub distribute: Distribute,
    /// Working directory of the node (created if missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
    /// What the node needs of its machine: placement picks a daemon that can fit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<crate::resources::Resources>,
}

/// Binary distribution strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Distribute {
    /// The daemon builds the node on its own machine (default).
    #[default]
    Local,
    /// The CLI builds and copies the binary over SSH.
    Scp,
    /// The CLI uploads the binary to the coordinator's artifact store.
    Http,
}

/// An `env` value: YAML strings, numbers and booleans are all accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum EnvValue {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A string.
    String(String),
}

impl fmt::Display for EnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvValue::Bool(b) => write!(f, "{b}"),
            EnvValue::Integer(i) => write!(f, "{i}"),
            EnvValue::Float(x) => write!(f, "{x}"),
            EnvValue::String(s) => f.write_str(s),
        }
    }
}

/// An input as written: short form (`node/output` or a timer) or long form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum InputSpec {
    /// `input: camera/frames`
    Short(String),
    /// `input: { source: camera/frames, queue_size: 2 }`
    Long(LongInput),
}

/// Long form of an input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LongInput {
    /// `node/output` or a timer such as `adora/timer/millis/20`.
    pub source: String,
    /// Capacity of the input queue; the oldest message is dropped when full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<usize>,
    /// The daemon closes the input when no message arrived on it for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_timeout: Option<HumanDuration>,
    /// How the node waits for this input: `sleep` (default) or `spin` (busy-polls its lane for
    /// up to 10 ms before sleeping: lower latency for a core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<InputPoll>,
}

/// How a node waits for an input (`poll:` of the long form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputPoll {
    /// Sleep until woken (no CPU while waiting).
    #[default]
    Sleep,
    /// Busy-poll the input's lane for a while before sleeping.
    Spin,
}

impl InputSpec {
    /// The source string (`node/output` or a timer spec).
    pub fn source(&self) -> &str {
        match self {
            InputSpec::Short(s) => s,
            InputSpec::Long(l) => &l.source,
        }
    }

    /// The queue size, defaulting to [`DEFAULT_QUEUE_SIZE`].
    pub fn queue_size(&self) -> usize {
        match self {
            InputSpec::Short(_) => DEFAULT_QUEUE_SIZE,
            InputSpec::Long(l) => l.queue_size.unwrap_or(DEFAULT_QUEUE_SIZE),
        }
    }

    /// The input timeout, if the long form sets one.
    pub fn input_timeout(&self) -> Option<Duration> {
        match self {
            InputSpec::Short(_) => None,
            InputSpec::Long(l) => l.input_timeout.map(|t| t.0),
        }
    }

    /// How the node waits for this input.
    pub fn poll(&self) -> InputPoll {
        match self {
            InputSpec::Short(_) => InputPoll::Sleep,
            InputSpec::Long(l) => l.poll.unwrap_or_default(),
        }
    }

    /// Parses the source into a node output or a timer.
    pub fn resolve(&self) -> Result<InputSource, String> {
        InputSource::parse(self.source())
    }
}

/// Where an input's messages come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InputSource {
    /// An output of another node.
    Node {
        /// The sending node.
        node: NodeId,
        /// Its output.
        output: DataId,
    },
    /// A built-in timer.
    Timer(TimerSpec),
}

impl InputSource {
    /// Parses `node/output`, `adora/timer/...` or `dora/timer/...`.
    pub fn parse(source: &str) -> Result<Self, String> {
        if let Some(timer) = TimerSpec::parse_source(source) {
            return timer.map(InputSource::Timer);
        }
        match source.split_once('/') {
            Some((node, output)) if !node.is_empty() && !output.is_empty() => {
                if !crate::ids::is_valid_id(node) || !crate::ids::is_valid_id(output) {
                    return Err(format!(
                        "invalid source `{source}`: expected `node/output` with ids made of [A-Za-z0-9_.-]"
                    ));
                }
                Ok(InputSource::Node {
                    node: node.into(),
                    output: output.into(),
                })
            }
            _ => Err(format!(
                "invalid source `{source}`: expected `node/output` or a timer like `adora/timer/millis/100`"
            )),
        }
    }
}

impl fmt::Display for InputSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputSource::Node { node, output } => write!(f, "{node}/{output}"),
            InputSource::Timer(t) => write!(f, "{t}"),
        }
    }
}

impl NodeSpec {
    /// Splits `args` like a shell would (without expansion).
    pub fn split_args(&self) -> Result<Vec<String>, String> {
        match &self.args {
            None => Ok(Vec::new()),
            Some(a) => shell_words::split(a).map_err(|e| format!("cannot split args `{a}`: {e}")),
        }
    }

    /// Where the node's code comes from when it is a git repository.
    pub fn git_source(&self) -> Option<GitSource> {
        let url = self.git.clone()?;
        let reference = if let Some(b) = &self.branch {
            GitRef::Branch(b.clone())
        } else if let Some(t) = &self.tag {
            GitRef::Tag(t.clone())
        } else if let Some(r) = &self.rev {
            GitRef::Rev(r.clone())
        } else {
            GitRef::DefaultBranch
        };
        Some(GitSource { url, reference })
    }

    /// The deployment options, or the defaults.
    pub fn deploy(&self) -> Deploy {
        self.deploy.clone().unwrap_or_default()
    }
}

/// A node's git source: a repository URL and what to check out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GitSource {
    /// The repository, as `git clone` takes it (`https://...`, `ssh://...`, `file://...`, a path).
    pub url: String,
    /// What to check out.
    pub reference: GitRef,
}

/// What to check out of a git repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GitRef {
    /// The repository's default branch (its `HEAD`).
    DefaultBranch,
    /// `branch:`
    Branch(String),
    /// `tag:`
    Tag(String),
    /// `rev:` (a commit hash, full or abbreviated)
    Rev(String),
}

impl fmt::Display for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitRef::DefaultBranch => f.write_str("the default branch"),
            GitRef::Branch(b) => write!(f, "branch `{b}`"),
            GitRef::Tag(t) => write!(f, "tag `{t}`"),
            GitRef::Rev(r) => write!(f, "rev `{r}`"),
        }
    }
}
