//! `adora coordinator`: run the coordinator in the foreground.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use adora_coordinator::{auth, CoordinatorConfig};
use adora_store::MemoryStore;
use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;

use super::client::{ADDR_FILE, TOKEN_FILE};

/// Run the coordinator: the control-plane server daemons and CLI clients connect to.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora coordinator\n  adora coordinator --addr 0.0.0.0 --port 6013\n\n\
The token is read from ADORA_TOKEN, else from --token-file (default <state dir>/token), which is \
created with mode 0600 when missing. The bound address is recorded in <state dir>/coordinator.addr \
for local clients."
)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    addr: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = adora_coordinator::DEFAULT_PORT)]
    port: u16,
    /// Where the coordinator keeps its state: `memory` (redb:PATH is not supported yet).
    #[arg(long, default_value = "memory")]
    store: String,
    /// Token file (created with mode 0600 if missing) [default: <state dir>/token].
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// A token that cancels on SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::warn!("cannot install signal handlers");
            return;
        };
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.store.as_str() {
        "memory" => {}
        s if s.starts_with("redb:") => {
            bail!("--store {s}: the redb store is not yet supported; use --store memory")
        }
        s => bail!("--store {s}: expected `memory` or `redb:PATH`"),
    }
    let token = match std::env::var(auth::TOKEN_ENV) {
        Ok(t) => auth::Token::new(&t).context("ADORA_TOKEN")?,
        Err(_) => {
            let path = args
                .token_file
                .unwrap_or_else(|| super::state_dir().join(TOKEN_FILE));
            auth::load_or_create_token_file(&path)?
        }
    };
    let listener = tokio::net::TcpListener::bind((args.addr.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.addr, args.port))?;
    let local = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let addr_file = super::state_dir().join(ADDR_FILE);
    write_atomic(&addr_file, &format!("{local}\n"))?;
    eprintln!("coordinator listening on {local}");
    let shutdown = shutdown_on_signal();
    let result = adora_coordinator::run(
        listener,
        Arc::new(MemoryStore::new()),
        CoordinatorConfig::new(token),
        shutdown,
    )
    .await;
    // Only remove the address file if it is still ours (another coordinator may have replaced it).
    if std::fs::read_to_string(&addr_file).is_ok_and(|s| s.trim() == local.to_string()) {
        let _ = std::fs::remove_file(&addr_file);
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a file atomically (temp file + rename) so readers never see half of it.
pub fn write_atomic(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
