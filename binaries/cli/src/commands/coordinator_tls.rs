//! The coordinator's TLS: the cluster CA in its state directory (created on first start), and a
//! server certificate issued at every start for the names clients reach it by.

use std::{net::IpAddr, path::Path, sync::Arc};

use adora_pki::ClusterCa;
use anyhow::Context;

/// Files the server certificate and key are written to (for inspection; issued again at every
/// start).
const SERVER_CERT_FILE: &str = "server.pem";
const SERVER_KEY_FILE: &str = "server.key";

/// Loads or creates the CA of `state_dir` and issues the server certificate for `addr` (the
/// listen address) plus `extra` names.
pub fn setup(
    state_dir: &Path,
    addr: &str,
    extra: &[String],
) -> anyhow::Result<(Arc<ClusterCa>, Arc<rustls::ServerConfig>)> {
    let (ca, created) = ClusterCa::load_or_create(state_dir).context("the cluster CA")?;
    if created {
        eprintln!(
            "created the cluster CA in {} (sha256 {})",
            state_dir.join(adora_pki::CA_CERT_FILE).display(),
            ca.hash()
        );
    }
    let names = server_names(addr, extra);
    let (chain, key) = ca
        .issue_server(&names)
        .context("issuing the server certificate")?;
    adora_pki::write_private(&state_dir.join(SERVER_CERT_FILE), &chain)?;
    adora_pki::write_private(&state_dir.join(SERVER_KEY_FILE), &key)?;
    tracing::info!("server certificate for {}", names.join(", "));
    let tls = adora_pki::tls::server_config(&chain, &key, ca.cert_pem())?;
    Ok((Arc::new(ca), tls))
}

/// Every name the coordinator may be reached by: loopback, its host name, the listen address
/// (every interface address when it listens on all of them), and `extra`.
fn server_names(addr: &str, extra: &[String]) -> Vec<String> {
    let mut names = vec!["127.0.0.1".to_owned(), "::1".into(), "localhost".into()];
    if let Ok(host) = nix::unistd::gethostname() {
        names.push(host.to_string_lossy().into_owned());
    }
    match addr.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => names.extend(interface_addresses()),
        _ => names.push(addr.to_owned()),
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    names
}

/// The IPv4/IPv6 addresses of this machine's interfaces.
fn interface_addresses() -> Vec<String> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .map(|ip| ip.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_loopback_the_address_and_extras_once() {
        let names = server_names("10.1.2.3", &["coord.example".into(), "127.0.0.1".into()]);
        for n in ["127.0.0.1", "::1", "localhost", "10.1.2.3", "coord.example"] {
            assert_eq!(
                names.iter().filter(|x| *x == n).count(),
                1,
                "{n}: {names:?}"
            );
        }
        let all = server_names("0.0.0.0", &[]);
        assert!(!all.contains(&"0.0.0.0".to_owned()), "{all:?}");
    }
}
