//! `adora daemon`: run a daemon in the foreground, connected to a coordinator.

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode};

use adora_daemon::{DaemonConfig, ServiceConfig};
use anyhow::Context;

/// Run a daemon: it registers with the coordinator and spawns the nodes placed on this machine.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  adora daemon --coordinator-addr 10.0.0.1 --coordinator-port 6013\n  \
adora daemon --machine-id robot --labels arch=arm64,gpu=true --coordinator-addr 10.0.0.1 --coordinator-port 6013\n\n\
A new machine joins with a one-time join code (--join-code-file, ADORA_JOIN_CODE or --join-code): \
the daemon checks the coordinator's CA against the code, enrolls, and keeps its certificate in \
<state dir>/identity/<machine id>/ (key 0600); later starts need no code. Without an identity it \
uses the admin token (--token-file, ADORA_TOKEN, <state dir>/token) and the CA in --ca-file or the \
state directory. Losing the coordinator never stops the nodes: the daemon reconnects forever \
(backoff up to 30 s)."
)]
pub struct Args {
    /// Machine id; nodes with `deploy.machine` go to the daemon with that id.
    #[arg(long)]
    machine_id: Option<String>,
    /// Labels matched by `deploy.labels`, e.g. `gpu=true,arch=arm64`.
    #[arg(long, value_parser = parse_labels, default_value = "")]
    labels: Labels,
    /// Coordinator host.
    #[arg(long, default_value = "127.0.0.1")]
    coordinator_addr: String,
    /// Coordinator port.
    #[arg(long, default_value_t = adora_client::DEFAULT_PORT)]
    coordinator_port: u16,
    /// Token file (mode 0600): the admin token, for a daemon on the coordinator's own machine
    /// (`adora up`). Fleet daemons enroll with a join code instead.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Enroll with this join code (`adora cluster join-code create`) when this machine has no
    /// identity yet. Visible in `ps`: prefer --join-code-file or ADORA_JOIN_CODE.
    #[arg(long, value_name = "CODE")]
    join_code: Option<String>,
    /// File holding the join code (read once, at enrollment).
    #[arg(long, value_name = "FILE")]
    join_code_file: Option<PathBuf>,
    /// The cluster CA to verify the coordinator against when this daemon uses the token
    /// [default: ADORA_CA_FILE, else <state dir>/ca.pem].
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Zenoh endpoint for data from daemons on other machines. Port 0 lets Zenoh bind a free
    /// port (the daemon reports the one bound); 0.0.0.0 stands for the address this machine
    /// uses to reach the coordinator, where the daemon then listens.
    #[arg(long, default_value = "tcp/0.0.0.0:0")]
    zenoh_listen: String,
    /// The site of this machine (`cluster.yml` `sites:`): it links directly only to daemons of
    /// the same site; data from other sites comes through the site's router.
    #[arg(long, value_name = "NAME", requires = "zenoh_router")]
    site: Option<String>,
    /// The site's router (`adora router`), as HOST:PORT; repeat for several.
    #[arg(long, value_name = "HOST:PORT", requires = "site")]
    zenoh_router: Vec<String>,
    /// The encrypted transport this daemon connects to other daemons and routers with: `quic`
    /// (UDP) or `tls` (TCP, for networks that block UDP; it loses a message now and then, see
    /// the guide's Security chapter). It listens on both, on the same port number.
    #[arg(long, value_name = "quic|tls", default_value = "quic", value_parser = adora_daemon::SecureTransport::parse)]
    zenoh_transport: adora_daemon::SecureTransport,
    /// Zenoh between daemons over plain TCP instead of mutual TLS (benchmark comparisons only).
    #[arg(long, hide = true)]
    insecure_zenoh: bool,
    /// Take no new nodes while the machine's CPU use is above this percent (1-100).
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    max_cpu_percent: Option<u8>,
    /// Take no new nodes while more than this percent of the memory is in use (1-100).
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    max_memory_percent: Option<u8>,
    /// Take no new nodes while the state directory's file system has less free space than this
    /// (e.g. `5GiB`, `500MB`, or bytes).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    min_disk_free: Option<u64>,
    /// Only log warnings and errors.
    #[arg(long)]
    pub quiet: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    adora_core::descriptor::ByteSize::parse(s).map(|b| b.0)
}

#[derive(Debug, Clone, Default)]
struct Labels(BTreeMap<String, String>);

fn parse_labels(s: &str) -> Result<Labels, String> {
    super::common::parse_labels(s).map(Labels)
}

/// Zenoh's TLS files: those of the enrolled identity in `dir` (already loaded and checked by
/// `daemon_identity::establish`), connecting with `transport`; none with `--insecure-zenoh` or
/// without an identity.
pub(super) fn zenoh_tls(
    insecure: bool,
    dir: Option<&std::path::Path>,
    transport: adora_daemon::SecureTransport,
) -> Option<adora_daemon::ZenohTls> {
    dir.filter(|_| !insecure).map(|dir| adora_daemon::ZenohTls {
        transport,
        ..adora_daemon::ZenohTls::from_identity_dir(dir)
    })
}

/// `--zenoh-router HOST:PORT` values as Zenoh endpoints of the daemon's transport.
fn router_endpoints(
    routers: &[String],
    tls: Option<&adora_daemon::ZenohTls>,
) -> anyhow::Result<Vec<String>> {
    super::router::check_host_ports("--zenoh-router", routers)?;
    Ok(adora_daemon::router_endpoints(routers, tls))
}

pub async fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    let coordinator_addr = format!("{}:{}", args.coordinator_addr, args.coordinator_port);
    let trust = super::daemon_identity::Trust {
        coordinator_addr: &coordinator_addr,
        machine_id: args.machine_id.as_deref(),
        labels: &args.labels.0,
        join_code: args.join_code.take(),
        join_code_file: args.join_code_file.as_deref(),
        token_file: args.token_file.as_deref(),
        ca_file: args.ca_file.as_deref(),
    };
    let trusted = super::daemon_identity::establish(trust).await?;
    if let Some(machine) = trusted.machine_id.clone() {
        args.machine_id = Some(machine);
    }
    // The labels the join code assigned win over the flags (the admin gave them).
    if let Some(assigned) = trusted.labels.clone() {
        args.labels.0.extend(assigned);
    }
    let name = args.machine_id.clone().unwrap_or_else(|| "default".into());
    let run_dir = std::env::temp_dir().join(format!("adora-daemon-{}", std::process::id()));
    let config = ServiceConfig {
        daemon: DaemonConfig::new(run_dir.clone()),
        coordinator_addr,
        auth: trusted.auth,
        machine_id: args.machine_id,
        labels: args.labels.0,
        limits: adora_core::resources::MachineLimits {
            max_cpu_percent: args.max_cpu_percent,
            max_memory_percent: args.max_memory_percent,
            min_disk_free: args.min_disk_free,
        },
        log_root: super::common::state_dir().join("logs").join(&name),
        artifact_dir: super::common::state_dir().join("dataflows").join(&name),
        zenoh_listen: {
            adora_daemon::validate_zenoh_listen(&args.zenoh_listen)
                .map_err(|e| anyhow::anyhow!("--zenoh-listen: {e}"))?;
            args.zenoh_listen.clone()
        },
        zenoh_tls: zenoh_tls(
            args.insecure_zenoh,
            trusted.identity_dir.as_deref(),
            args.zenoh_transport,
        ),
        site: args.site.clone(),
        zenoh_routers: Vec::new(),
    };
    let config = ServiceConfig {
        zenoh_routers: router_endpoints(&args.zenoh_router, config.zenoh_tls.as_ref())?,
        ..config
    };
    eprintln!(
        "daemon `{name}` connecting to the coordinator at {}",
        config.coordinator_addr
    );
    let shutdown = super::common::shutdown_on_signal();
    let result = adora_daemon::run(config, shutdown).await;
    let _ = std::fs::remove_dir_all(&run_dir);
    result.context("the daemon failed")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse() {
        let l = parse_labels("gpu=true, arch=arm64").expect("valid");
        assert_eq!(l.0.len(), 2);
        assert_eq!(l.0["arch"], "arm64");
        assert!(parse_labels("").expect("empty is fine").0.is_empty());
        assert!(parse_labels("gpu").is_err());
        assert!(parse_labels("=x").is_err());
    }

    #[test]
    fn routers_take_the_daemons_transport() {
        let dir = tempfile::tempdir().expect("tempdir");
        let quic = zenoh_tls(false, Some(dir.path()), Default::default());
        let r = router_endpoints(
            &["10.0.0.1:7448".into(), "[fd00::1]:7448".into()],
            quic.as_ref(),
        )
        .expect("valid");
        assert_eq!(r, ["quic/10.0.0.1:7448", "quic/[fd00::1]:7448"]);
        let tls = zenoh_tls(false, Some(dir.path()), adora_daemon::SecureTransport::Tls);
        assert_eq!(
            router_endpoints(&["gw:7448".into()], tls.as_ref()).expect("valid"),
            ["tls/gw:7448"]
        );
        assert_eq!(
            router_endpoints(&["gw:7448".into()], None).expect("valid"),
            ["tcp/gw:7448"]
        );
        assert!(router_endpoints(&["gw".into()], quic.as_ref()).is_err());
        assert!(router_endpoints(&["gw:0".into()], quic.as_ref()).is_err());
    }

    #[test]
    fn zenoh_tls_comes_from_the_identity_dir_unless_insecure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let quic = adora_daemon::SecureTransport::Quic;
        assert!(zenoh_tls(false, None, quic).is_none());
        let tls = zenoh_tls(false, Some(dir.path()), quic).expect("tls");
        assert_eq!(tls.key, dir.path().join("daemon.key"));
        assert_eq!(tls.transport, quic);
        assert!(zenoh_tls(true, Some(dir.path()), quic).is_none());
    }
}
