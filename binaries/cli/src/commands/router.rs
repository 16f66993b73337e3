//! `adora router`: run a site's Zenoh router in the foreground (see `cluster.yml` `sites:`).

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;

/// Default listen endpoint of a router.
const DEFAULT_LISTEN: &str = "tcp/0.0.0.0:7448";

/// Run a site's Zenoh router: daemons of the site connect to it, and it carries their data to
/// and from the routers of other sites.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  adora router --machine-id gateway\n  \
adora router --machine-id gateway --listen tcp/0.0.0.0:7448 --connect cloud-gw.example.org:7448\n\n\
Links are QUIC or TLS, both with mutual authentication by the machine's cluster identity (<state dir>/identity/<machine id>/, \
the one its daemon enrolled; a machine running only the router enrolls with a join code like a \
daemon). Only routers need to reach each other: open the router port between sites (UDP for \
QUIC, TCP for TLS). \
`cluster up` starts the routers of cluster.yml's sites.")]
pub struct Args {
    /// The machine id whose identity the router uses (that of the machine's daemon).
    #[arg(long)]
    machine_id: Option<String>,
    /// Where to listen (`tcp/<ip>:<port>`; QUIC and TLS unless --insecure-zenoh).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: String,
    /// The site it routes (`cluster.yml` `sites:`): daemons of other sites report whether they
    /// reach it.
    #[arg(long, value_name = "NAME")]
    site: Option<String>,
    /// Another site's router to connect to, as HOST:PORT; repeat for several.
    #[arg(long, value_name = "HOST:PORT")]
    connect: Vec<String>,
    /// Coordinator host (only to enroll with a join code).
    #[arg(long, default_value = "127.0.0.1")]
    coordinator_addr: String,
    /// Coordinator port (only to enroll with a join code).
    #[arg(long, default_value_t = adora_client::DEFAULT_PORT)]
    coordinator_port: u16,
    /// File holding a join code, for a machine with no identity yet.
    #[arg(long, value_name = "FILE")]
    join_code_file: Option<PathBuf>,
    /// The encrypted transport it connects to other routers with: `quic` or `tls` (like
    /// `adora daemon --zenoh-transport`). It listens on both, on the same port number.
    #[arg(long, value_name = "quic|tls", default_value = "quic", value_parser = adora_daemon::SecureTransport::parse)]
    zenoh_transport: adora_daemon::SecureTransport,
    /// Plain TCP instead of mutual TLS (like `adora daemon --insecure-zenoh`).
    #[arg(long, hide = true)]
    insecure_zenoh: bool,
}

/// Checks `HOST:PORT` values (a non-empty host, a port from 1 to 65535).
pub fn check_host_ports(flag: &str, values: &[String]) -> anyhow::Result<()> {
    for v in values {
        let valid = v.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        anyhow::ensure!(
            valid,
            "{flag} `{v}`: expected HOST:PORT, e.g. 10.0.0.1:7448"
        );
    }
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    adora_daemon::validate_zenoh_listen(&args.listen)
        .map_err(|e| anyhow::anyhow!("--listen: {e}"))?;
    check_host_ports("--connect", &args.connect)?;
    let tls = if args.insecure_zenoh {
        None
    } else {
        let coordinator_addr = format!("{}:{}", args.coordinator_addr, args.coordinator_port);
        let labels = Default::default();
        let trust = super::daemon_identity::Trust {
            coordinator_addr: &coordinator_addr,
            machine_id: args.machine_id.as_deref(),
            labels: &labels,
            join_code: None,
            join_code_file: args.join_code_file.as_deref(),
            token_file: None,
            ca_file: None,
        };
        let trusted = super::daemon_identity::establish(trust).await?;
        let dir = trusted.identity_dir.context(
            "the router needs the machine's cluster identity (start its daemon first, or give \
             --join-code-file), or --insecure-zenoh",
        )?;
        super::daemon::zenoh_tls(false, Some(&dir), args.zenoh_transport)
    };
    let config = adora_daemon::RouterConfig {
        listen: args.listen,
        connect: args.connect,
        tls,
        site: args.site,
    };
    let shutdown = super::common::shutdown_on_signal();
    adora_daemon::run_router(config, shutdown)
        .await
        .context("the router failed")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_are_checked() {
        assert!(check_host_ports("--connect", &["gw:7448".into(), "[fd00::1]:1".into()]).is_ok());
        for bad in ["gw", ":7448", "gw:0", "gw:99999"] {
            assert!(
                check_host_ports("--connect", &[bad.into()]).is_err(),
                "{bad}"
            );
        }
    }
}
