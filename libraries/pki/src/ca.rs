//! The cluster CA: created once in the coordinator's state directory, then used to issue the
//! coordinator's server certificate (at every start, for the names it is reached by) and one
//! client certificate per enrolled daemon.

use std::{path::Path, time::Duration};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SubjectPublicKeyInfo,
};
use rustls::pki_types::CertificateDer;

use crate::{
    files::{read_private, read_public, write_private},
    fingerprint, PkiError,
};

/// The CA certificate's file in the coordinator's state directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key's file (mode 0600).
pub const CA_KEY_FILE: &str = "ca.key";

/// How long the CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long the coordinator's server certificate is valid (it is issued again at every start).
const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a daemon's certificate is valid (revocation is the way to end it sooner).
const DAEMON_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start being valid this long before they are issued (clocks of machines differ).
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// The cluster's certificate authority.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("hash", &self.hash())
            .finish_non_exhaustive()
    }
}

/// A certificate issued to a daemon.
#[derive(Debug, Clone)]
pub struct IssuedDaemon {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its [`fingerprint`].
    pub fingerprint: String,
}

fn validity(params: &mut CertificateParams, valid_for: Duration) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + valid_for;
}

impl ClusterCa {
    /// A new CA, in memory.
    pub fn generate() -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "Adora cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA of `dir` ([`CA_CERT_FILE`], [`CA_KEY_FILE`]), or creates and saves one when
    /// neither file exists. Returns whether it was created. One file without the other is an
    /// error (never silently replaced: every daemon trusts the CA that is there).
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), PkiError> {
        let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Ok((Self::load(&cert_path, &key_path)?, false)),
            (false, false) => {
                let ca = Self::generate()?;
                write_private(&key_path, &ca.issuer.key().serialize_pem())?;
                write_private(&cert_path, &ca.cert_pem)?;
                Ok((ca, true))
            }
            (true, false) => Err(PkiError::invalid(
                key_path.display(),
                "the CA certificate exists but its key is missing; restore it from a backup \
                 (a new CA would lock out every enrolled daemon)",
            )),
            (false, true) => Err(PkiError::invalid(
                cert_path.display(),
                "the CA key exists but its certificate is missing; restore it from a backup",
            )),
        }
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        let cert_pem = read_public(cert_path)?;
        let key = KeyPair::from_pem(&read_private(key_path)?)
            .map_err(|e| PkiError::invalid(key_path.display(), e))?;
        let cert_der =
            crate::certs_from_pem(&cert_path.display().to_string(), &cert_pem)?.remove(0);
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| PkiError::invalid(cert_path.display(), e))?;
        Ok(Self {
            cert_pem,
            cert_der,
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The SHA-256 of the CA certificate (what join codes carry).
    pub fn hash(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// A server certificate for `names` (IP addresses or DNS names), with its new key:
    /// `(chain PEM (certificate, then the CA), key PEM)`.
    pub fn issue_server(&self, names: &[String]) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "Adora coordinator");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, SERVER_VALIDITY);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((
            format!("{}{}", cert.pem(), self.cert_pem),
            key.serialize_pem(),
        ))
    }

    /// A certificate for the daemon of `machine_id`, for the public key `spki_der` (a DER
    /// SubjectPublicKeyInfo the daemon generated). It authenticates the daemon as a client
    /// (coordinator, Zenoh links it opens) and as a Zenoh listener; it names no host, so it can
    /// never pass for the coordinator.
    pub fn issue_daemon(
        &self,
        machine_id: &str,
        spki_der: &[u8],
    ) -> Result<IssuedDaemon, PkiError> {
        let public = SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(|e| PkiError::invalid("the daemon's public key", e))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, machine_id);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "adora daemon");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, DAEMON_VALIDITY);
        let cert = params.signed_by(&public, &self.issuer)?;
        Ok(IssuedDaemon {
            cert_pem: cert.pem(),
            fingerprint: fingerprint(cert.der()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_then_loaded_with_a_private_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, created) = ClusterCa::load_or_create(dir.path()).expect("create");
        assert!(created);
        let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, created) = ClusterCa::load_or_create(dir.path()).expect("load");
        assert!(!created);
        assert_eq!(again.hash(), ca.hash());
        std::fs::remove_file(dir.path().join(CA_KEY_FILE)).expect("rm");
        let err = ClusterCa::load_or_create(dir.path()).expect_err("half a CA");
        assert!(err.to_string().contains("key is missing"), "{err}");
    }
}
