//! `adora router`: a site's Zenoh router. Daemons of a site connect to their router; routers
//! connect to each other and carry the data between sites, so only routers need to reach each
//! other. Same transport as the daemons: mutual TLS with a certificate of the cluster CA, or
//! plain TCP with `--insecure-zenoh`.

use adora_message::data_links::ROUTER_TOKEN_PREFIX;
use tokio_util::sync::CancellationToken;

use crate::{
    config::ZenohTls,
    remote::{listen_endpoint, session_config, RemoteError},
};

/// What a router listens on and connects to.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// `tcp/<ip>:<port>` (the transport follows `tls`, whatever scheme is written).
    pub listen: String,
    /// The other sites' routers, as `HOST:PORT`.
    pub connect: Vec<String>,
    /// Mutual TLS with these files; `None`: plain TCP.
    pub tls: Option<ZenohTls>,
    /// The site it routes: announced to every daemon (a liveliness token), so that daemons
    /// report whether each other site is reachable.
    pub site: Option<String>,
}

/// The Zenoh endpoints of `HOST:PORT` addresses with the transport of `tls`.
pub fn router_endpoints(addrs: &[String], tls: Option<&ZenohTls>) -> Vec<String> {
    let scheme = session_config::scheme(tls);
    addrs.iter().map(|a| format!("{scheme}/{a}")).collect()
}

/// The Zenoh configuration of a router: the daemons' settings (transport, TLS, no scouting)
/// in router mode.
pub(crate) fn router_config(config: &RouterConfig) -> Result<zenoh::Config, RemoteError> {
    let tls = config.tls.as_ref();
    let listen = listen_endpoint(&config.listen, None, tls)?;
    let connect = router_endpoints(&config.connect, tls);
    let mut zenoh_config = session_config::session_config(&listen, &connect, tls)?;
    zenoh_config
        .insert_json5("mode", "\"router\"")
        .map_err(|e| RemoteError::Zenoh(e.to_string()))?;
    Ok(zenoh_config)
}

/// Runs the router until `shutdown` is cancelled; returns where it listened.
pub async fn run_router(
    config: RouterConfig,
    shutdown: CancellationToken,
) -> Result<Vec<String>, RemoteError> {
    let zenoh_config = router_config(&config)?;
    let session = zenoh::open(zenoh_config)
        .await
        .map_err(|e| RemoteError::Zenoh(e.to_string()))?;
    let locators = crate::remote::locators(&session).await;
    tracing::info!(
        "router listening on {locators:?}, connecting to {:?}",
        config.connect
    );
    eprintln!("adora router listening on {}", locators.join(", "));
    let _token = match &config.site {
        Some(site) => {
            let key = format!("{ROUTER_TOKEN_PREFIX}/{site}");
            let token = session.liveliness().declare_token(key).await;
            Some(token.map_err(|e| RemoteError::Zenoh(e.to_string()))?)
        }
        None => None,
    };
    shutdown.cancelled().await;
    let _ = session.close().await;
    Ok(locators)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_router_is_a_daemon_session_in_router_mode() {
        let config = RouterConfig {
            listen: "tcp/0.0.0.0:7448".into(),
            connect: vec!["10.0.0.2:7448".into()],
            tls: None,
            site: None,
        };
        let zenoh = router_config(&config).expect("valid");
        assert_eq!(zenoh.get_json("mode").expect("mode"), "\"router\"");
        assert!(zenoh
            .get_json("connect/endpoints")
            .expect("connect")
            .contains("tcp/10.0.0.2:7448"));
        let bad = RouterConfig {
            listen: "nonsense".into(),
            ..config
        };
        assert!(router_config(&bad).is_err());
    }
}
