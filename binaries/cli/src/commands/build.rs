//! `adora build`: run every node's `build` command in the dataflow's directory.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use adora_core::{Descriptor, NodeId};
use anyhow::Context;

/// Run each node's `build` command (identical commands run once), streaming their output.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  adora build examples/rust-dataflow/dataflow.yml")]
pub struct Args {
    /// The dataflow file.
    dataflow: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let descriptor = match super::load_descriptor(&args.dataflow) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let dir = super::dataflow_dir(&args.dataflow)?;
    build_all(&descriptor, &dir).await?;
    Ok(ExitCode::SUCCESS)
}

/// The distinct build commands of a dataflow in file order, each with the nodes that share it.
pub fn build_plan(descriptor: &Descriptor) -> Vec<(String, Vec<NodeId>)> {
    let mut plan: Vec<(String, Vec<NodeId>)> = Vec::new();
    for node in &descriptor.nodes {
        let Some(cmd) = node
            .build
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
        else {
            continue;
        };
        match plan.iter_mut().find(|(c, _)| c == cmd) {
            Some((_, nodes)) => nodes.push(node.id.clone()),
            None => plan.push((cmd.to_owned(), vec![node.id.clone()])),
        }
    }
    plan
}

/// Runs every build command with `sh -c` in `dir`, output going straight to the terminal.
pub async fn build_all(descriptor: &Descriptor, dir: &Path) -> anyhow::Result<()> {
    let plan = build_plan(descriptor);
    if plan.is_empty() {
        println!("nothing to build: no node has a `build` command");
        return Ok(());
    }
    for (cmd, nodes) in plan {
        let names: Vec<&str> = nodes.iter().map(NodeId::as_str).collect();
        println!("building {}: {cmd}", names.join(", "));
        let started = std::time::Instant::now();
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .current_dir(dir)
            .status()
            .await
            .with_context(|| format!("cannot run `sh -c {cmd}`"))?;
        if !status.success() {
            anyhow::bail!(
                "build of node{} {} failed ({status}): `{cmd}` in {}",
                if nodes.len() == 1 { "" } else { "s" },
                names.join(", "),
                dir.display()
            );
        }
        println!(
            "built {} in {:.1}s",
            names.join(", "),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
