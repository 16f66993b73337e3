//! The CLI side of binary distribution (`_unstable_deploy.distribute`), run by `adora start`
//! before it asks the coordinator to spawn anything:
//!
//! - `scp`: the node's binary (its `path`, built here with `--build`) is copied over SSH to the
//!   machine of `cluster.yml` the coordinator places the node on (by `machine`, else `labels`,
//!   over its connected daemons in registration order, with their reported resources and
//!   thresholds: `adora_core::placement` over the whole dataflow), into
//!   `<state_dir>/dataflows/<build id>/<node>/` there; its SHA-256 travels in the artifact and
//!   the daemon checks the copy against it before spawning;
//! - `http`: the binary is uploaded to the coordinator's artifact store under a fresh build id;
//!   daemons download it and check its SHA-256.
//!
//! `local` nodes need nothing here: their daemon builds them (`adora start --build`).

use std::path::{Path, PathBuf};

use adora_cluster::{quote, HostSession, SshTarget};
use adora_core::{
    cluster::{ClusterConfig, Machine},
    descriptor::Distribute,
    placement::{self, Candidate, PlacementFailure},
    Descriptor, NodeId, NodeSpec,
};
use adora_message::{
    cli_to_coordinator::ControlRequest,
    coordinator_to_cli::{ControlReply, CoordinatorStatus},
    distribute::{is_safe_path_segment, NodeArtifact, NodeArtifacts},
};
use anyhow::{bail, Context};
use uuid::Uuid;

use super::client::{Client, ClientArgs};

/// File in the state directory holding the path of the `cluster.yml` of the last `cluster up`.
pub const CLUSTER_PATH_FILE: &str = "cluster.path";
/// State directory on a machine without `state_dir` in `cluster.yml` (as `cluster up`).
const DEFAULT_REMOTE_STATE_DIR: &str = "~/.local/state/adora";

/// Where `distribute: scp` nodes go.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DistributeArgs {
    /// The cluster.yml naming the machines of `distribute: scp` nodes [default: the one of the
    /// last `adora cluster up`].
    #[arg(long, value_name = "FILE")]
    cluster: Option<PathBuf>,
    /// An ssh_config file for the copies (`ssh -F FILE`).
    #[arg(long, value_name = "FILE")]
    ssh_config: Option<PathBuf>,
}

impl DistributeArgs {
    /// True when `--cluster` was given.
    pub fn has_cluster(&self) -> bool {
        self.cluster.is_some()
    }
}

/// Remembers `cluster` (made absolute) as the cluster of later `adora start`s; best effort.
pub fn remember_cluster(cluster: &Path) {
    let Ok(abs) = std::fs::canonicalize(cluster) else {
        return;
    };
    let dir = super::common::state_dir();
    let _ = std::fs::create_dir_all(&dir);
    if let Err(e) = std::fs::write(dir.join(CLUSTER_PATH_FILE), format!("{}\n", abs.display())) {
        tracing::warn!("cannot remember the cluster file: {e}");
    }
}

/// The strategy of a node built here and copied or uploaded (`scp`, `http`).
pub fn distributed(node: &NodeSpec) -> Option<Distribute> {
    match node.deploy().distribute {
        Distribute::Local => None,
        other => Some(other),
    }
}

fn strategy(d: Distribute) -> &'static str {
    match d {
        Distribute::Local => "local",
        Distribute::Scp => "scp",
        Distribute::Http => "http",
    }
}

/// Builds (with `build`) and distributes every `scp`/`http` node under `build_id`; returns
/// their artifacts.
pub async fn distribute(
    descriptor: &Descriptor,
    dataflow_dir: &Path,
    args: &DistributeArgs,
    client: &ClientArgs,
    build: bool,
    build_id: Uuid,
) -> anyhow::Result<NodeArtifacts> {
    let nodes: Vec<&NodeSpec> = descriptor
        .nodes
        .iter()
        .filter(|n| distributed(n).is_some())
        .collect();
    let mut artifacts = NodeArtifacts::new();
    if nodes.is_empty() {
        return Ok(artifacts);
    }
    if build {
        let mut local = descriptor.clone();
        local.nodes.retain(|n| distributed(n).is_some());
        super::local_build::build_all(&mut local, dataflow_dir).await?;
    }
    let mut fleet = None;
    for node in nodes {
        let d = distributed(node).expect("filtered above");
        let fail = |e: anyhow::Error| {
            e.context(format!("node `{}` (distribute: {})", node.id, strategy(d)))
        };
        let source = local_binary(node, dataflow_dir).map_err(fail)?;
        let bytes = tokio::fs::read(&source)
            .await
            .with_context(|| format!("cannot read {}", source.display()))
            .map_err(fail)?;
        let artifact = match d {
            Distribute::Http => upload(node, &bytes, build_id, client).await,
            _ => {
                if fleet.is_none() {
                    fleet = Some(Fleet::load(args, client, descriptor).await?);
                }
                let fleet = fleet.as_ref().expect("loaded above");
                copy(node, &source, &bytes, build_id, fleet, args).await
            }
        }
        .map_err(fail)?;
        artifacts.insert(node.id.clone(), artifact);
    }
    Ok(artifacts)
}

/// Where `distribute: scp` nodes go: the machines' addresses (`cluster.yml`) and the daemons the
/// coordinator places nodes on.
struct Fleet {
    cluster: ClusterConfig,
    /// The coordinator's connected daemons in registration order, as its placement sees them.
    daemons: Vec<Candidate>,
    /// Node → its daemon (index in `daemons`) or why it has none, placing the whole dataflow
    /// as the coordinator will (a node's requests count against the nodes after it). Empty when
    /// the dataflow cannot be placed as a whole: nodes are then placed one by one.
    placed: std::collections::BTreeMap<NodeId, Result<usize, PlacementFailure>>,
}

impl Fleet {
    async fn load(
        args: &DistributeArgs,
        client: &ClientArgs,
        descriptor: &Descriptor,
    ) -> anyhow::Result<Self> {
        let cluster = load_cluster(args)?;
        let mut client = Client::connect(client).await?;
        let ControlReply::Status(status) = client.call(ControlRequest::Status).await? else {
            bail!("unexpected reply to Status");
        };
        let daemons = candidates(&status);
        let placed = match placement::place(descriptor, &daemons) {
            Ok(placed) => placed.into_iter().map(|(n, i)| (n, Ok(i))).collect(),
            Err(errors) => errors
                .into_iter()
                .map(|e| (e.node, Err(e.failure)))
                .collect(),
        };
        Ok(Self {
            cluster,
            daemons,
            placed,
        })
    }
}

/// The daemons the coordinator places on: the connected ones, in its order (registration order).
fn candidates(status: &CoordinatorStatus) -> Vec<Candidate> {
    status
        .daemons
        .iter()
        .filter(|d| d.connected)
        .map(|d| Candidate {
            machine_id: d.machine_id.clone(),
            labels: d.labels.clone(),
            unavailable: d.unavailable.clone(),
            name: d.machine_id.clone().unwrap_or_else(|| d.hostname.clone()),
            figures: d.machine.as_ref().map(|m| m.figures()),
            limits: d.limits,
            reserved: d.reserved,
        })
        .collect()
}

/// The node's binary on this machine.
fn local_binary(node: &NodeSpec, dataflow_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = Path::new(&node.path);
    let path = if path.is_absolute() {
        path.to_owned()
    } else {
        dataflow_dir.join(path)
    };
    if !path.is_file() {
        bail!(
            "binary {} not found on this machine: build it first (`adora build` or `adora start --build`)",
            path.display()
        );
    }
    Ok(path)
}

async fn upload(
    node: &NodeSpec,
    bytes: &[u8],
    build_id: Uuid,
    client: &ClientArgs,
) -> anyhow::Result<NodeArtifact> {
    let addr = client.addr();
    let auth = client.auth()?;
    let sha256 =
        adora_client::artifacts::upload(&addr, &auth, build_id, node.id.as_str(), bytes.to_vec())
            .await
            .with_context(|| format!("cannot upload the binary to the coordinator at {addr}"))?;
    eprintln!(
        "uploaded `{}` ({} bytes, sha256 {}) to the coordinator",
        node.id,
        bytes.len(),
        &sha256[..12]
    );
    Ok(NodeArtifact::Uploaded { build_id, sha256 })
}

/// `--cluster`, else the cluster.yml remembered by `cluster up`.
fn load_cluster(args: &DistributeArgs) -> anyhow::Result<ClusterConfig> {
    let path = match &args.cluster {
        Some(p) => p.clone(),
        None => {
            let remembered = super::common::state_dir().join(CLUSTER_PATH_FILE);
            let text = std::fs::read_to_string(&remembered).context(
                "`distribute: scp` needs the machines' addresses: pass --cluster cluster.yml (or run `adora cluster up` first)",
            )?;
            PathBuf::from(text.trim())
        }
    };
    ClusterConfig::read(&path).map_err(|errors| {
        let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{}:\n{}", path.display(), lines.join("\n"))
    })
}

/// The machine of `fleet` a node goes to: the one of the daemon the coordinator will place it
/// on (its `machine`, else a daemon whose labels match: see `adora_core::placement`). With
/// resource requests this is a prediction from the figures of the `Status` answer; if they
/// change before the start, the node's daemon finds no copy and the start fails, nothing run.
fn machine_of<'a>(node: &NodeSpec, fleet: &'a Fleet) -> anyhow::Result<&'a Machine> {
    let deploy = node.deploy();
    if let Some(id) = &deploy.machine {
        fleet
            .cluster
            .machine(id)
            .with_context(|| format!("machine `{id}` is not in cluster.yml"))?;
    } else if deploy.labels.is_empty() {
        bail!("`distribute: scp` needs `deploy.machine` or `labels` to know where to copy");
    }
    let placed = match fleet.placed.get(&node.id) {
        Some(placed) => placed.clone(),
        None => placement::place_node(node, &fleet.daemons),
    };
    let daemon = placed
        .map(|i| &fleet.daemons[i])
        .map_err(|failure| anyhow::anyhow!("cannot place it: {failure}"))?;
    let id = daemon
        .machine_id
        .as_deref()
        .context("it is placed on a daemon without a machine id")?;
    fleet
        .cluster
        .machine(id)
        .with_context(|| format!("machine `{id}` (its daemon) is not in cluster.yml"))
}

/// Copies the binary into `<state_dir>/dataflows/<build_id>/<node>/` on the node's machine
/// (through a temporary file and a rename); returns its absolute path there and its SHA-256.
async fn copy(
    node: &NodeSpec,
    source: &Path,
    bytes: &[u8],
    build_id: Uuid,
    fleet: &Fleet,
    args: &DistributeArgs,
) -> anyhow::Result<NodeArtifact> {
    let machine = machine_of(node, fleet)?;
    if !is_safe_path_segment(node.id.as_str()) {
        bail!("the node id cannot name a directory");
    }
    let file = source
        .file_name()
        .and_then(|f| f.to_str())
        .filter(|f| is_safe_path_segment(f))
        .unwrap_or(node.id.as_str());
    let state = machine
        .state_dir
        .as_deref()
        .unwrap_or(DEFAULT_REMOTE_STATE_DIR);
    let rel = format!("dataflows/{build_id}/{}", node.id);
    let script = format!(
        "set -e; dir={state}/{rel}; mkdir -p \"$dir\"; cat > \"$dir\"/.upload; \
         chmod 755 \"$dir\"/.upload; mv \"$dir\"/.upload \"$dir\"/{file}; cd \"$dir\"; pwd -P",
        state = quote::path(state),
        rel = quote::quote(&rel),
        file = quote::quote(file),
    );
    let target = SshTarget::of(machine, args.ssh_config.clone());
    let shown = target.display();
    let session = HostSession::connect(target)
        .await
        .with_context(|| format!("cannot reach machine `{}` ({shown})", machine.id))?;
    let out = session.sh_with_stdin(&script, bytes).await;
    session.close().await;
    let out = out.with_context(|| format!("copy to machine `{}` failed", machine.id))?;
    if !out.success() {
        bail!(
            "copy to machine `{}` ({shown}) failed: {}",
            machine.id,
            out.stderr.trim()
        );
    }
    let dir = out.stdout.trim();
    let path = PathBuf::from(dir).join(file);
    eprintln!(
        "copied `{}` ({} bytes) to machine `{}`: {}",
        node.id,
        bytes.len(),
        machine.id,
        path.display()
    );
    Ok(NodeArtifact::Copied {
        path,
        sha256: Some(adora_message::distribute::sha256_hex(bytes)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterConfig {
        ClusterConfig::parse(
            "coordinator: { addr: 10.0.0.1, port: 6013 }\nmachines:\n  - { id: a, host: 10.0.0.2 }\n  - { id: b, host: 10.0.0.3, labels: { gpu: \"true\" } }\n",
            Path::new("cluster.yml"),
        )
        .expect("valid cluster")
    }

    fn daemon(id: &str, labels: &[(&str, &str)]) -> Candidate {
        Candidate {
            machine_id: Some(id.to_owned()),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Candidate::default()
        }
    }

    /// The fleet of `cluster()` with its daemons registered in cluster.yml order.
    fn fleet() -> Fleet {
        Fleet {
            cluster: cluster(),
            daemons: vec![daemon("a", &[]), daemon("b", &[("gpu", "true")])],
            placed: Default::default(),
        }
    }

    fn node(deploy: &str) -> NodeSpec {
        let yaml = format!("nodes:\n  - id: n\n    path: ./n\n    _unstable_deploy: {deploy}\n");
        Descriptor::parse(&yaml, Path::new("d.yml"))
            .expect("valid descriptor")
            .nodes
            .remove(0)
    }

    #[test]
    fn scp_nodes_go_to_their_machine_or_the_first_with_their_labels() {
        let c = fleet();
        let m = machine_of(&node("{ machine: a, distribute: scp }"), &c).expect("found");
        assert_eq!(m.id, "a");
        let m =
            machine_of(&node("{ labels: { gpu: \"true\" }, distribute: scp }"), &c).expect("found");
        assert_eq!(m.id, "b");
        let e =
            machine_of(&node("{ machine: z, distribute: scp }"), &c).expect_err("unknown machine");
        assert!(e.to_string().contains("`z`"), "{e}");
        let e = machine_of(&node("{ distribute: scp }"), &c).expect_err("nowhere to copy");
        assert!(e.to_string().contains("needs"), "{e}");
    }

    #[test]
    fn labels_pick_the_first_daemon_in_registration_order_not_in_cluster_yml_order() {
        let mut fleet = fleet();
        fleet.daemons = vec![daemon("b", &[("role", "w")]), daemon("a", &[("role", "w")])];
        let m =
            machine_of(&node("{ labels: { role: w }, distribute: scp }"), &fleet).expect("placed");
        assert_eq!(m.id, "b");
        // Labels are the daemons' (what the coordinator matches), not cluster.yml's.
        fleet.daemons.truncate(0);
        let e = machine_of(
            &node("{ labels: { gpu: \"true\" }, distribute: scp }"),
            &fleet,
        )
        .expect_err("no daemon connected");
        assert!(e.to_string().contains("no daemon matches labels"), "{e}");
    }

    #[test]
    fn only_connected_daemons_are_candidates_in_the_coordinators_order() {
        use adora_message::coordinator_to_cli::DaemonStatus;
        let status = |id: &str, connected| DaemonStatus {
            machine_id: Some(id.into()),
            hostname: id.into(),
            labels: Default::default(),
            last_heartbeat_ms: 0,
            connected,
            adora_version: String::new(),
            registered_ms_ago: 0,
            machine: None,
            systemd_unit: None,
            state: Default::default(),
            unavailable: None,
            maintenance: None,
            limits: Default::default(),
            reserved: Default::default(),
            site: None,
            links: Vec::new(),
        };
        let status = CoordinatorStatus {
            adora_version: String::new(),
            daemons: vec![status("c", true), status("a", false), status("b", true)],
            running_dataflows: 0,
        };
        let ids: Vec<Option<String>> = candidates(&status)
            .into_iter()
            .map(|c| c.machine_id)
            .collect();
        assert_eq!(ids, [Some("c".into()), Some("b".into())]);
    }
}
