//! The rustls settings of every side of the coordinator's port.

use std::sync::Arc;

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    server::WebPkiClientVerifier,
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
};

use crate::{certs_from_pem, PkiError};

/// The crypto provider (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, PkiError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem("the cluster CA", ca_pem)? {
        roots.add(cert)?;
    }
    Ok(Arc::new(roots))
}

fn key(what: &str, key_pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| PkiError::invalid(what, e))
}

/// The coordinator's server settings: its certificate chain and key; a client certificate is
/// optional (the CLI authenticates with the token) but verified against the CA when presented.
pub fn server_config(
    chain_pem: &str,
    key_pem: &str,
    ca_pem: &str,
) -> Result<Arc<ServerConfig>, PkiError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::invalid("the client certificate verifier", e))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs_from_pem("the server certificate", chain_pem)?,
            key("the server key", key_pem)?,
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client's settings: trust the cluster CA only; present `identity` (certificate chain PEM,
/// key PEM) when given.
pub fn client_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Arc<ClientConfig>, PkiError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?);
    let mut config = match identity {
        Some((cert_pem, key_pem)) => builder.with_client_auth_cert(
            certs_from_pem("the client certificate", cert_pem)?,
            key("the client key", key_pem)?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Settings that accept any server certificate: **only** for fetching the CA at enrollment,
/// whose hash is then compared with the join code's before anything is trusted or sent.
pub fn unverified_client_config() -> Arc<ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(AnyServer(provider.clone()));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The name a client checks the coordinator's certificate against: `host` of `host:port`.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, PkiError> {
    let host = match addr.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned())
        .map_err(|e| PkiError::invalid(format!("coordinator address `{addr}`"), e))
}

#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterCa;

    #[test]
    fn configs_build_from_issued_certificates() {
        let ca = ClusterCa::generate().expect("ca");
        let (chain, key) = ca
            .issue_server(&["127.0.0.1".into(), "localhost".into()])
            .expect("server");
        server_config(&chain, &key, ca.cert_pem()).expect("server config");
        client_config(ca.cert_pem(), None).expect("client config");
        let (daemon_key, spki) = crate::identity::new_key().expect("key");
        let issued = ca.issue_daemon("m1", &spki).expect("daemon");
        client_config(ca.cert_pem(), Some((&issued.cert_pem, &daemon_key))).expect("mtls");
        assert!(client_config(ca.cert_pem(), Some((&issued.cert_pem, &key))).is_err());
    }

    #[test]
    fn server_names_from_addresses() {
        assert_eq!(
            server_name("127.0.0.1:6013").expect("ip"),
            ServerName::try_from("127.0.0.1").expect("ip")
        );
        assert!(server_name("coord.local:6013").is_ok());
        assert!(server_name("[::1]:6013").is_ok());
    }
}
