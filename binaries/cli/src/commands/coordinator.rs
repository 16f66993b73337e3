//! `adora coordinator`: run the coordinator in the foreground.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use adora_client::{token::TOKEN_FILE, Token, DEFAULT_PORT, TOKEN_ENV};
use adora_coordinator::CoordinatorConfig;
use adora_store::{MemoryStore, RedbStore, Store};
use anyhow::{bail, Context};

use super::{
    client::ADDR_FILE,
    common::{shutdown_on_signal, state_dir, write_atomic},
};

/// Run the coordinator: the control-plane server daemons and CLI clients connect to.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora coordinator\n  adora coordinator --addr 0.0.0.0 --port 6013\n\n\
The port speaks TLS only (https://, wss://). On first start the coordinator creates the cluster CA \
in <state dir>/ca.pem and ca.key (mode 0600); clients trust that ca.pem (copy it, or --ca-file), \
daemons get it through their join code. The token is read from ADORA_TOKEN, else from --token-file \
(default <state dir>/token), which is created with mode 0600 when missing. The bound address is recorded in <state dir>/coordinator.addr \
for local clients.\n\n\
State (dataflows, machines, answered requests) is kept in <state dir>/coordinator.redb by default, \
so a restarted coordinator reclaims the dataflows that still run. `--store memory` forgets \
everything on exit."
)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    addr: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Where the coordinator keeps its state: `redb:PATH` (a file, 0600) or `memory`
    /// [default: redb:<state dir>/coordinator.redb].
    #[arg(long)]
    store: Option<String>,
    /// Move the store file aside (to `<file>.reset-<unix time>`, never deleted) and start with
    /// an empty state: for a store that cannot be read. Running nodes are adopted again as their
    /// daemons reconnect; dataflow history, join codes and cordons are forgotten.
    #[arg(long)]
    reset_store: bool,
    /// After a restart, how long the daemons of a running dataflow have to reconnect before it
    /// is marked failed.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    reclaim_timeout: std::time::Duration,
    /// Auto-recovery re-spawns a dataflow's nodes on a restarted daemon at most once per this
    /// window (per daemon and dataflow).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    recovery_backoff: std::time::Duration,
    /// Finished dataflows kept whatever their age: the latest N (see --keep-finished-for).
    #[arg(long, value_name = "N", default_value_t = adora_store::retention::KEEP_FINISHED)]
    keep_finished: usize,
    /// Finished dataflows kept whatever their number: those that ended within this time.
    /// Whichever of the two limits keeps more applies; older runs are forgotten.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "24h")]
    keep_finished_for: std::time::Duration,
    /// Token file (created with mode 0600 if missing) [default: <state dir>/token].
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Another name clients reach this coordinator by (a DNS name or an IP address), added to
    /// its TLS certificate; repeatable. Always included: 127.0.0.1, ::1, localhost, the host
    /// name, --addr, and every local interface address when --addr is 0.0.0.0.
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_san: Vec<String>,
    /// Serve `/metrics` without credentials (by default it needs the token or a daemon
    /// certificate; Prometheus can send the token as a bearer token).
    #[arg(long)]
    metrics_public: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let token = match std::env::var(TOKEN_ENV) {
        Ok(t) => Token::new(&t).context(TOKEN_ENV)?,
        Err(_) => {
            let path = args
                .token_file
                .unwrap_or_else(|| state_dir().join(TOKEN_FILE));
            adora_client::token::load_or_create_token_file(&path)?
        }
    };
    let listener = tokio::net::TcpListener::bind((args.addr.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.addr, args.port))?;
    // Opened after binding, so clients connecting meanwhile wait instead of being refused, and
    // before the address is recorded, so a refused store never looks like a started coordinator.
    let store = open_store(args.store.as_deref(), args.reset_store).await?;
    let local = listener
        .local_addr()
        .context("cannot read the bound address")?;
    // The CA and the server certificate exist before the address is recorded: whoever waits for
    // the address file (`adora up`, fixtures, scripts) finds `ca.pem` to trust right after.
    let (ca, tls) = super::coordinator_tls::setup(&state_dir(), &args.addr, &args.tls_san)?;
    // Before the address is recorded: whoever sees the address may stop us right away.
    let shutdown = shutdown_on_signal();
    let addr_file = state_dir().join(ADDR_FILE);
    write_atomic(&addr_file, &format!("{local}\n"))?;
    eprintln!("coordinator listening on {local}");
    let mut config = CoordinatorConfig::new(token);
    config.ca = Some(ca);
    config.tls = Some(tls);
    config.metrics_public = args.metrics_public;
    config.reclaim_timeout = args.reclaim_timeout;
    config.recovery_backoff = args.recovery_backoff;
    config.finished_dataflows = adora_store::Retention {
        keep_last: args.keep_finished,
        keep_for: args.keep_finished_for,
    };
    config.artifact_dir = Some(artifact_dir(args.store.as_deref()));
    let result = adora_coordinator::run(listener, store, config, shutdown).await;
    // Only remove the address file if it is still ours (another coordinator may have replaced it).
    if std::fs::read_to_string(&addr_file).is_ok_and(|s| s.trim() == local.to_string()) {
        let _ = std::fs::remove_file(&addr_file);
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// The artifact store (`distribute: http`) lives next to the redb store: `<its dir>/artifacts`
/// (`<state dir>/artifacts` for the default or the in-memory store).
fn artifact_dir(store: Option<&str>) -> PathBuf {
    store
        .and_then(|s| s.strip_prefix("redb:"))
        .and_then(|p| std::path::Path::new(p).parent())
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.join("artifacts"))
        .unwrap_or_else(|| state_dir().join("artifacts"))
}

/// Opens the store named by `--store` (default: the redb file in the state directory), off the
/// async runtime. A damaged file is refused, never replaced; with `reset` it is moved aside first.
async fn open_store(spec: Option<&str>, reset: bool) -> anyhow::Result<Arc<dyn Store>> {
    let path = match spec {
        Some("memory") => return Ok(Arc::new(MemoryStore::new())),
        Some(s) => match s.strip_prefix("redb:") {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => bail!("--store {s}: expected `memory` or `redb:PATH`"),
        },
        None => {
            let state = state_dir();
            private_dir(&state)?;
            state.join("coordinator.redb")
        }
    };
    if reset && path.exists() {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let aside = PathBuf::from(format!("{}.reset-{secs}", path.display()));
        std::fs::rename(&path, &aside).with_context(|| {
            format!(
                "cannot move {} aside to {}",
                path.display(),
                aside.display()
            )
        })?;
        eprintln!(
            "--reset-store: moved {} to {}; starting with an empty state",
            path.display(),
            aside.display()
        );
    }
    let store = tokio::task::spawn_blocking(move || RedbStore::open(&path))
        .await
        .context("the store could not be opened")?
        .context("refusing to start")?;
    eprintln!("coordinator state in {}", store.path().display());
    Ok(Arc::new(store))
}

/// Creates the state directory 0700, or tightens an existing one that others can read.
fn private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (0700)", dir.display()))?;
    }
    Ok(())
}
