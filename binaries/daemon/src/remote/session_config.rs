//! The Zenoh configuration of a daemon's session: peer mode, no scouting, explicit endpoints,
//! and — with a cluster identity ([`ZenohTls`]) — Zenoh's encrypted transports with client
//! authentication (mTLS) against the cluster CA.
//!
//! With an identity, the session speaks nothing but QUIC and TLS (`transport/link/protocols`):
//! it listens on `quic/<ip>:<port>` (UDP) and `tls/<ip>:<port>` (TCP, the same port number),
//! accepts only peers presenting a certificate of the cluster CA, and presents its own
//! certificate when it connects. It connects with QUIC unless told otherwise
//! ([`SecureTransport`]); a peer that offers only the other transport (an older daemon offers
//! only TLS) is reached with that one. Daemon certificates name no host (they are issued for a
//! machine id), so the connecting side verifies the chain to the cluster CA but not a host name
//! (`verify_name_on_connect: false`).
//!
//! Why QUIC first: Zenoh 1.10's TLS link reads and writes one TLS stream from two tasks at once
//! (upstream issue eclipse-zenoh/zenoh#2557), so a write now and then fails and the link
//! resets, losing what is in flight; its QUIC link sends and receives on separate streams.

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

/// The locator scheme of plain TCP (`--insecure-zenoh`).
pub(crate) const TCP_SCHEME: &str = "tcp";

/// The scheme a daemon's session connects with.
pub(crate) fn scheme(tls: Option<&ZenohTls>) -> &'static str {
    tls.map_or(TCP_SCHEME, |tls| tls.transport.scheme())
}

/// The schemes a daemon's session listens with: both encrypted transports with an identity.
fn listen_schemes(tls: Option<&ZenohTls>) -> Vec<&'static str> {
    match tls {
        Some(tls) => tls.transport.preference().map(|t| t.scheme()).to_vec(),
        None => vec![TCP_SCHEME],
    }
}

/// The endpoints of one peer (a daemon's advertised locators, a router's address) this session
/// connects to: those of its preferred transport, else those of the other encrypted one. Plain
/// TCP and the encrypted transports cannot talk (one daemon with `--insecure-zenoh`, one
/// without): that is logged rather than retried forever.
pub(crate) fn usable_peers(peers: &[String], tls: Option<&ZenohTls>) -> Vec<String> {
    let with = |scheme: &str| -> Vec<String> {
        let prefix = format!("{scheme}/");
        peers
            .iter()
            .filter(|p| p.starts_with(&prefix))
            .cloned()
            .collect()
    };
    let usable = match tls {
        None => with(TCP_SCHEME),
        Some(tls) => tls
            .transport
            .preference()
            .into_iter()
            .map(|t| with(t.scheme()))
            .find(|usable| !usable.is_empty())
            .unwrap_or_default(),
    };
    if usable.is_empty() && !peers.is_empty() {
        tracing::warn!(
            "not connecting to {peers:?}: this daemon's Zenoh uses {}; daemons with and without \
             --insecure-zenoh cannot exchange data",
            listen_schemes(tls).join(" or ")
        );
    }
    usable
}

/// The configuration of a session listening on the address of `listen` and connecting to
/// `peers` (over QUIC and TLS with `tls`, else plain TCP).
pub fn session_config(
    listen: &str,
    peers: &[String],
    tls: Option<&ZenohTls>,
) -> Result<zenoh::Config, RemoteError> {
    let json = |v: &[String]| serde_json::to_string(v).expect("a list of strings serializes");
    // `listen` names the address; the session listens there with each of its transports.
    let addr = listen.split_once('/').map_or(listen, |(_, addr)| addr);
    let schemes: Vec<String> = listen_schemes(tls).into_iter().map(str::to_owned).collect();
    let listen: Vec<String> = schemes.iter().map(|s| format!("{s}/{addr}")).collect();
    let mut entries = vec![
        ("mode", "\"peer\"".to_owned()),
        ("listen/endpoints", json(&listen)),
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
            ("transport/link/protocols", json(&schemes)),
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
