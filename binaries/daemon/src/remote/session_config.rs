//! The Zenoh configuration of a daemon's session: peer mode, no scouting, explicit endpoints,
//! and — with a cluster identity ([`ZenohTls`]) — Zenoh's TLS transport with client
//! authentication (mTLS) against the cluster CA.
//!
//! With TLS, the session speaks nothing but TLS (`transport/link/protocols: ["tls"]`): it listens
//! on `tls/<ip>:<port>`, accepts only peers presenting a certificate of the cluster CA, and
//! presents its own certificate when it connects. Daemon certificates name no host (they are
//! issued for a machine id), so the connecting side verifies the chain to the cluster CA but not
//! a host name (`verify_name_on_connect: false`).

use zenoh::qos::{CongestionControl, Reliability};

use crate::config::ZenohTls;

use super::{zenoh_err, RemoteError};

/// Every output is published reliably: messages between two connected daemons arrive complete
/// and in order.
pub const RELIABILITY: Reliability = Reliability::Reliable;
/// A congested link blocks the publishing task (which then stops taking from its queue; the
/// daemon drops and counts what does not fit there) instead of Zenoh dropping silently.
pub const CONGESTION: CongestionControl = CongestionControl::Block;

/// Whether publications skip Zenoh's batching (sent at once, each in its own batch). Measured
/// with plain Zenoh on loopback here, paced 10 ms: p50 at 8 B 213–224 µs with, 235–304 µs
/// without (within the noise), but back-to-back 8 B messages 24–50 k/s with against
/// 0.9–1.1 M/s without: off.
pub const EXPRESS: bool = false;

/// The locator scheme of Zenoh's TLS transport.
pub(crate) const TLS_SCHEME: &str = "tls";
/// The locator scheme of plain TCP (`--insecure-zenoh`).
pub(crate) const TCP_SCHEME: &str = "tcp";

/// The scheme a daemon's session listens and connects with.
pub(crate) fn scheme(tls: Option<&ZenohTls>) -> &'static str {
    if tls.is_some() {
        TLS_SCHEME
    } else {
        TCP_SCHEME
    }
}

/// The peers this session can reach: those speaking its scheme. Another scheme means the
/// other daemon runs with the other Zenoh setting (one with `--insecure-zenoh`, one without):
/// they cannot talk, which is logged rather than retried forever.
pub(crate) fn usable_peers(peers: &[String], tls: Option<&ZenohTls>) -> Vec<String> {
    let prefix = format!("{}/", scheme(tls));
    let (usable, other): (Vec<String>, Vec<String>) =
        peers.iter().cloned().partition(|p| p.starts_with(&prefix));
    for peer in other {
        tracing::warn!(
            "not connecting to the daemon at {peer}: this daemon's Zenoh uses {}; \
             daemons with and without --insecure-zenoh cannot exchange data",
            scheme(tls)
        );
    }
    usable
}

/// The configuration of a session listening on `listen` and connecting to `peers` (over mutual
/// TLS with `tls`, else plain TCP).
pub fn session_config(
    listen: &str,
    peers: &[String],
    tls: Option<&ZenohTls>,
) -> Result<zenoh::Config, RemoteError> {
    let json = |v: &[String]| serde_json::to_string(v).expect("a list of strings serializes");
    let mut entries = vec![
        ("mode", "\"peer\"".to_owned()),
        ("listen/endpoints", json(&[listen.to_owned()])),
        ("connect/endpoints", json(peers)),
        ("scouting/multicast/enabled", "false".to_owned()),
        // No links to daemons learnt from others: links are those the coordinator asks for.
        ("scouting/gossip/enabled", "false".to_owned()),
        // Keep retrying peers forever: a cut link must come back by itself.
        ("connect/exit_on_failure", "false".to_owned()),
        ("connect/timeout_ms", "-1".to_owned()),
    ];
    if let Some(tls) = tls {
        let file = |p: &std::path::Path| {
            serde_json::to_string(&p.display().to_string()).expect("a string serializes")
        };
        entries.extend([
            ("transport/link/protocols", json(&[TLS_SCHEME.to_owned()])),
            ("transport/link/tls/root_ca_certificate", file(&tls.ca)),
            ("transport/link/tls/listen_certificate", file(&tls.cert)),
            ("transport/link/tls/listen_private_key", file(&tls.key)),
            ("transport/link/tls/connect_certificate", file(&tls.cert)),
            ("transport/link/tls/connect_private_key", file(&tls.key)),
            ("transport/link/tls/enable_mtls", "true".to_owned()),
            (
                "transport/link/tls/verify_name_on_connect",
                "false".to_owned(),
            ),
        ]);
    }
    let mut config = zenoh::Config::default();
    for (key, value) in entries {
        config.insert_json5(key, &value).map_err(zenoh_err)?;
    }
    Ok(config)
}
