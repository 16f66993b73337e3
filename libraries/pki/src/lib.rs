//! `adora-pki`: the cluster's trust, in one place.
//!
//! - [`ClusterCa`] — the certificate authority the coordinator creates on first start (in its state
//!   directory, keys 0600) and the certificates it issues: its own server certificate, and one
//!   client certificate per daemon, for the daemon's machine id, signed over a public key the
//!   daemon generated (the daemon's private key never leaves its machine).
//! - [`JoinCode`] — `ADORA1.<ca-hash>.<id>.<secret>`: what a new daemon needs to enroll. The CA
//!   hash lets it check the coordinator before it trusts it (fetch the CA untrusted, compare the
//!   hash, then connect verified).
//! - [`Identity`] — a daemon's enrolled identity on disk (CA, certificate, key).
//! - [`tls`] — the rustls settings every side uses: the coordinator's server (client certificates
//!   optional, verified when presented), clients trusting the cluster CA (with or without a client
//!   certificate), and the one unverified client that fetches the CA during enrollment.
//!
//! rustls with the `ring` provider throughout (the provider Zenoh's TLS transport uses too).

mod ca;
mod files;
mod identity;
mod join_code;
pub mod tls;

pub use ca::{ClusterCa, IssuedDaemon, CA_CERT_FILE, CA_KEY_FILE};
pub use files::{read_private, write_private};
pub use identity::{new_key, Identity, IDENTITY_DIR};
pub use join_code::{hash_secret, secret_hash_matches, JoinCode, JoinCodeError, JOIN_CODE_PREFIX};
pub use rustls::pki_types::CertificateDer;

use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of a certificate's DER: how a certificate is named (join codes carry the
/// CA's; the coordinator keeps the issued daemon certificates' to recognize and revoke them).
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why something about certificates or keys failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file or value is not what it should be.
    #[error("{what}: {reason}")]
    Invalid {
        /// What was being read.
        what: String,
        /// Why it is refused.
        reason: String,
    },
    /// Creating or signing a certificate failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused a configuration (a key that does not match its certificate, ...).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

impl PkiError {
    pub(crate) fn invalid(what: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        PkiError::Invalid {
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// The certificates in a PEM text (in order).
pub fn certs_from_pem(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::invalid(what, e))?;
    if certs.is_empty() {
        return Err(PkiError::invalid(what, "no certificate in it"));
    }
    Ok(certs)
}
