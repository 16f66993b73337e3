//! A daemon's enrolled identity: the cluster CA it trusts, its certificate and its key, in
//! `<daemon state dir>/identity/` (key 0600). Written once at enrollment, used for every later
//! connection (control, artifacts, Zenoh).

use std::path::{Path, PathBuf};

use rcgen::KeyPair;

use crate::{
    certs_from_pem,
    files::{read_private, read_public, write_private},
    fingerprint, PkiError,
};

/// The identity's directory inside a daemon's state directory.
pub const IDENTITY_DIR: &str = "identity";
const CA_FILE: &str = "ca.pem";
const CERT_FILE: &str = "daemon.pem";
const KEY_FILE: &str = "daemon.key";
const MACHINE_FILE: &str = "machine-id";

/// A daemon's identity.
#[derive(Clone)]
pub struct Identity {
    /// The machine id the certificate was issued for.
    pub machine_id: String,
    /// The cluster CA, PEM.
    pub ca_pem: String,
    /// The daemon's certificate, PEM.
    pub cert_pem: String,
    /// The daemon's private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("machine_id", &self.machine_id)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A fresh key pair for an enrollment: `(its private key PEM, its public key as DER
/// SubjectPublicKeyInfo)`. Only the public half is sent to the coordinator.
pub fn new_key() -> Result<(String, Vec<u8>), PkiError> {
    let key = KeyPair::generate()?;
    Ok((
        key.serialize_pem(),
        rcgen::PublicKeyData::subject_public_key_info(&key),
    ))
}

impl Identity {
    /// The identity in `dir`, `None` when there is none (no certificate file).
    pub fn load(dir: &Path) -> Result<Option<Self>, PkiError> {
        if !dir.join(CERT_FILE).exists() {
            return Ok(None);
        }
        let identity = Self {
            machine_id: read_public(&dir.join(MACHINE_FILE))?.trim().to_owned(),
            ca_pem: read_public(&dir.join(CA_FILE))?,
            cert_pem: read_public(&dir.join(CERT_FILE))?,
            key_pem: read_private(&dir.join(KEY_FILE))?,
        };
        certs_from_pem(&dir.join(CA_FILE).display().to_string(), &identity.ca_pem)?;
        certs_from_pem(
            &dir.join(CERT_FILE).display().to_string(),
            &identity.cert_pem,
        )?;
        Ok(Some(identity))
    }

    /// Saves the identity in `dir` (every file 0600; the key last is not enough: the
    /// certificate is what [`Identity::load`] looks for, so it is written last).
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        write_private(&dir.join(MACHINE_FILE), &format!("{}\n", self.machine_id))?;
        write_private(&dir.join(CA_FILE), &self.ca_pem)?;
        write_private(&dir.join(KEY_FILE), &self.key_pem)?;
        write_private(&dir.join(CERT_FILE), &self.cert_pem)
    }

    /// The files of an identity saved in `dir`: `(CA, certificate, key)` (what Zenoh's TLS
    /// transport is configured with).
    pub fn files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        (dir.join(CA_FILE), dir.join(CERT_FILE), dir.join(KEY_FILE))
    }

    /// The SHA-256 of the CA this identity trusts.
    pub fn ca_hash(&self) -> Result<String, PkiError> {
        let ca = certs_from_pem("the identity's CA", &self.ca_pem)?;
        Ok(fingerprint(&ca[0]))
    }

    /// The fingerprint of this daemon's certificate.
    pub fn cert_fingerprint(&self) -> Result<String, PkiError> {
        let cert = certs_from_pem("the identity's certificate", &self.cert_pem)?;
        Ok(fingerprint(&cert[0]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterCa;

    #[test]
    fn saved_identity_loads_back_with_its_fingerprints() {
        let ca = ClusterCa::generate().expect("ca");
        let (key_pem, spki) = new_key().expect("key");
        let issued = ca.issue_daemon("robot-1", &spki).expect("issue");
        let identity = Identity {
            machine_id: "robot-1".into(),
            ca_pem: ca.cert_pem().to_owned(),
            cert_pem: issued.cert_pem,
            key_pem,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(Identity::load(dir.path()).expect("empty dir").is_none());
        identity.save(dir.path()).expect("save");
        let back = Identity::load(dir.path()).expect("load").expect("present");
        assert_eq!(back.machine_id, "robot-1");
        assert_eq!(back.ca_hash().expect("ca"), ca.hash());
        assert_eq!(back.cert_fingerprint().expect("cert"), issued.fingerprint);
        assert!(!format!("{back:?}").contains("PRIVATE"));
    }
}
