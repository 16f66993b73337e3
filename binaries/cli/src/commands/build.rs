//! `adora build`: run every node's `build` command in the dataflow's directory, or, for a
//! dataflow deployed on a fleet, build it where each node's strategy says (`distribute`):
//! `scp`/`http` nodes here (then copied / uploaded), `local` nodes by their daemons. The
//! distributed build gets an id for `adora start --build-id`.

use std::{path::PathBuf, process::ExitCode};

use adora_core::{Descriptor, NodeId};
use adora_message::{
    cli_to_coordinator::{BuildDataflow, ControlRequest},
    coordinator_to_cli::ControlReply,
};
use anyhow::bail;

use super::client::{print_line, Client, ClientArgs};

/// Run each node's `build` command (identical commands run once), streaming their output.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora build examples/rust-dataflow/dataflow.yml\n  \
adora build dataflow.yml --cluster cluster.yml   (then: adora start dataflow.yml --build-id <id>)\n\n\
A dataflow with `deploy` (or `_unstable_deploy`) on any node or at its root, or given --cluster / --coordinator-addr / \
--coordinator-port, is built on its machines through the coordinator: `local` nodes by their \
daemons, `scp` and `http` nodes here, then copied or uploaded. It prints the build id."
)]
pub struct Args {
    /// The dataflow file.
    dataflow: PathBuf,
    /// Print the distributed build as JSON (`build_id`, `placement`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    distribute: super::distribute::DistributeArgs,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut descriptor = match super::common::load_descriptor(&args.dataflow) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let dir = super::common::dataflow_dir(&args.dataflow)?;
    let deployed = descriptor.nodes.iter().any(|n| n.deploy.is_some());
    if deployed || args.distribute.has_cluster() || args.client.names_coordinator() {
        return build_distributed(args, descriptor, dir).await;
    }
    if args.json {
        bail!("--json is for a distributed build (a dataflow with `deploy`, or --cluster / --coordinator-addr)");
    }
    super::local_build::build_all(&mut descriptor, &dir).await?;
    Ok(ExitCode::SUCCESS)
}

/// `adora build --json`.
#[derive(serde::Serialize)]
struct BuildJson {
    build_id: uuid::Uuid,
    /// Node → the machine that built (`local`) or received (`scp`, `http`) it.
    placement: std::collections::BTreeMap<NodeId, String>,
}

/// Builds and distributes `scp`/`http` nodes here, then has the coordinator's daemons build
/// their `local` nodes; prints the build id.
async fn build_distributed(
    args: Args,
    descriptor: Descriptor,
    dir: PathBuf,
) -> anyhow::Result<ExitCode> {
    let width = crate::output::id_width(&descriptor);
    let build_id = uuid::Uuid::new_v4();
    // Reach the coordinator before building anything here.
    let mut client = Client::connect(&args.client).await?;
    let artifacts = super::distribute::distribute(
        &descriptor,
        &dir,
        &args.distribute,
        &args.client,
        true,
        build_id,
    )
    .await?;
    let request = ControlRequest::Build(BuildDataflow {
        build_id,
        descriptor,
        working_dir: dir,
        artifacts,
    });
    let progress = crate::output::Progress::start("building on the daemons");
    // With --json, stdout carries the JSON only: build output goes to stderr.
    let json = args.json;
    let mut print = |mut line: adora_message::control::NodeLogLine| {
        if json {
            line.stream = adora_message::control::LogStream::Stderr;
        }
        print_line(line, width)
    };
    let built = client
        .call_idempotent_streaming(request, Some(&mut print))
        .await;
    progress.finish(built.is_ok());
    let ControlReply::Built {
        build_id,
        placement,
    } = built?
    else {
        bail!("unexpected reply to the build");
    };
    if args.json {
        let json = BuildJson {
            build_id,
            placement,
        };
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        eprintln!(
            "build {build_id} done; start it with `adora start {} --build-id {build_id}`",
            args.dataflow.display()
        );
        println!("{build_id}");
    }
    Ok(ExitCode::SUCCESS)
}
